#!/usr/bin/env python3
"""Why discrete CQL's return quantiles blow up on Pong at Tianshou's --min-q-weight 10: a probe.

Runs atari_cql.py's own update (eager, one thread) on a recorded buffer and, every --every
updates, reads the return quantiles of 100 fixed buffer states. It prints the QR and CQL losses,
the action gap (max - min over actions of Q = mean of the quantiles) and two widths of the
quantile distribution, averaged over states and actions: all quantiles (max - min) and the
central 90% (quantile 5% to 95%).

The CQL penalty acts on Q, the mean of N quantiles, so it pushes each quantile with weight/N;
the quantile Huber loss pulls a quantile tau that sits far above its targets back with at most
(1 - tau) (far below: tau). At weight 10 and N = 200 that push (up to 0.05) beats the pull of
the top and bottom ~5% of quantiles, which then drift without bound while the central ones stay
put; at weight 1 (the CQL authors' Atari setting) at most the outermost quantile is outpulled.

    python3 reproduce/atari_cql_probe.py \\
        --buffer log/PongNoFrameskip-v4/qrdqn/expert.size_1e5.hdf5 --min-q-weight 10 1 0

With --policies, it reads trained atari_cql.py policies instead: on 2,000 buffer states, the
share of each greedy action (against the buffer's own action shares) and the mean Q per action.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from tianshou_offline import tianshou_adapter
from tianshou_offline.atari.networks import NatureCNN
from tianshou_offline.data.atari_buffer import load_atari_buffer
from tianshou_offline.errors import run_main
from tianshou_offline.run.training import load_policy
from tianshou_offline.updates.select import make_fast_update

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "offline" / "atari_cql.py"


class RawPixelCNN(NatureCNN):
    """The Nature CNN fed 0-255 pixels, as Tianshou's Atari examples do (ours scales to 0-1)."""

    def forward(self, obs: Any, state: Any = None, info: dict | None = None) -> tuple:
        frames = torch.as_tensor(obs, device=next(self.parameters()).device)
        return self.convolutions(frames.float()), state


def get_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buffer", required=True, help="an HDF5 buffer from atari_qrdqn.py")
    parser.add_argument("--min-q-weight", type=float, nargs="+", default=[10.0, 1.0, 0.0])
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--lr", type=float, default=1e-4, help="atari_cql.py's default")
    parser.add_argument("--adam-eps", type=float, default=1e-8, help="Dopamine uses 3.125e-4")
    parser.add_argument("--raw-pixels", action="store_true", help="feed 0-255, as Tianshou")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policies", nargs="+", help="policy_last.pth files of atari_cql.py runs")
    return parser.parse_args()


def load_atari_cql() -> Any:
    """examples/offline/atari_cql.py as a module, so the probe builds exactly its algorithm."""
    spec = importlib.util.spec_from_file_location("atari_cql", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe(args: argparse.Namespace, weight: float, buffer: Any, atari_cql: Any) -> None:
    torch.manual_seed(args.seed)
    script_args = atari_cql.get_args(
        ["--device", "cpu", "--min-q-weight", str(weight), "--lr", str(args.lr)]
    )
    features = RawPixelCNN() if args.raw_pixels else NatureCNN()
    algorithm = atari_cql.build_algorithm(script_args, features, gym.spaces.Discrete(6))
    tianshou_adapter.torch_optimizer(algorithm.optim).param_groups[0]["eps"] = args.adam_eps
    update = make_fast_update(algorithm, algorithm.process_buffer(buffer), "cpu", compile=False)
    num_states = len(buffer)
    rows = torch.arange(0, num_states, max(1, num_states // 100))[:100]
    states = update.dataset.gather(rows)["obs"]  # 100 fixed buffer states
    print(
        f"\n--min-q-weight {weight}: update | QR loss | CQL term | action gap | width, all | "
        "width, central 90%"
    )
    for step in range(1, args.updates + 1):
        _, qr_loss, cql_term = update.run_step(32).tolist()
        if step % args.every == 0:
            with torch.no_grad():
                quantiles = algorithm.policy.model(states)[0].sort(dim=2).values  # (100, A, N)
            num = quantiles.shape[2]
            q = quantiles.mean(2)
            gap = (q.max(1).values - q.min(1).values).mean()
            width = (quantiles[..., -1] - quantiles[..., 0]).mean()
            central = (quantiles[..., num * 95 // 100 - 1] - quantiles[..., num * 5 // 100]).mean()
            print(
                f"  {step:6d} | {qr_loss:8.3f} | {cql_term:6.3f} | {gap:7.3f} | {width:7.2f} | "
                f"{central:7.2f}",
                flush=True,
            )


def greedy_actions(args: argparse.Namespace, buffer: Any, atari_cql: Any) -> None:
    num_actions = 6
    shares = torch.bincount(torch.as_tensor(buffer.act[: len(buffer)]), minlength=num_actions)
    print("buffer's action shares:", (shares / len(buffer)).numpy().round(3))
    algorithm = atari_cql.build_algorithm(
        atari_cql.get_args(["--device", "cpu"]), NatureCNN(), gym.spaces.Discrete(num_actions)
    )
    update = make_fast_update(algorithm, algorithm.process_buffer(buffer), "cpu", compile=False)
    rows = torch.arange(0, len(buffer), max(1, len(buffer) // 2000))[:2000]
    states = update.dataset.gather(rows)["obs"]
    for path in args.policies:
        load_policy(algorithm, path, script="atari_cql.py")
        with torch.no_grad():
            q = algorithm.policy.model(states)[0].mean(2)  # (states, actions)
        greedy = torch.bincount(q.argmax(1), minlength=num_actions) / len(q)
        print(
            f"{path}: greedy action shares {greedy.numpy().round(3)}, "
            f"mean Q per action {q.mean(0).numpy().round(2)}"
        )


def main() -> None:
    args = get_args()
    torch.set_num_threads(1)
    buffer = load_atari_buffer(args.buffer, num_actions=6)
    atari_cql = load_atari_cql()
    if args.policies:
        greedy_actions(args, buffer, atari_cql)
        return
    for weight in args.min_q_weight:
        probe(args, weight, buffer, atari_cql)


if __name__ == "__main__":
    run_main(main)
