#!/usr/bin/env python3
"""Gradient updates per second of the offline algorithms, against plain PyTorch and the hardware.

For each algorithm this measures, in one process and with warm-up (and compilation) excluded:

* project: the scripts' own path: the algorithm object that ``examples/offline/<script>.py``
  builds, data from the scripts' loader, and Tianshou's ``algorithm.update(buffer, batch_size)``,
  exactly what the offline trainer calls once per gradient step;
* fast: the same algorithm object updated by ``fast_update.py`` (``--compile``, the default
  in the scripts where it exists);
* plain: a minimal eager PyTorch implementation of the same maths (nn.Sequential networks,
  torch.optim.Adam, the dataset as tensors on the device);
* the device's matrix-multiply throughput (float32, as training runs; measured again before each
  row, since a shared machine's varies), and each update's FLOPs
  (counted by torch.utils.flop_counter on the plain update), so ``% limit`` = FLOPs per update x
  updates per second / throughput, for the fastest of the paths.

Rows "tiny" use hidden 32 and batch 32: there the arithmetic is negligible and the numbers
measure per-update overhead.

    python benchmarks/bench_updates.py --device cpu --seconds 5
    python benchmarks/bench_updates.py --device cuda --markdown results.md
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import json
import platform
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent

CONTINUOUS = ("bc", "bcq", "cql", "td3_bc")
ATARI = ("atari_il", "atari_bcq", "atari_cql", "atari_crr")
OBS_DIM, ACT_DIM = 17, 6  # HalfCheetah
NUM_ACTIONS = 6  # Pong


# ----------------------------------------------------------------------------------------------
# Timing helpers
# ----------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def updates_per_second(
    step: Callable[[], object], device: torch.device, seconds: float, warmup: int = 5
) -> float:
    """Calls per second of ``step`` over about ``seconds`` (after ``warmup`` calls)."""
    for _ in range(warmup):
        step()
    sync(device)
    # a short probe sizes the timed run, so that the clock is read only at its ends
    started = time.perf_counter()
    probe = 0
    while time.perf_counter() - started < min(0.5, seconds / 4):
        step()
        probe += 1
    sync(device)
    rate = probe / (time.perf_counter() - started)
    count = max(3, int(rate * seconds))
    started = time.perf_counter()
    for _ in range(count):
        step()
    sync(device)
    return count / (time.perf_counter() - started)


def matmul_flops_per_second(device: torch.device, seconds: float = 2.0) -> float:
    """float32 throughput of a large square matrix multiply (the arithmetic limit)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)
    rate = updates_per_second(lambda: torch.mm(a, b, out=out), device, seconds, warmup=3)
    return rate * 2 * n**3


def count_flops(step: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


# ----------------------------------------------------------------------------------------------
# Data: synthetic files in the scripts' formats, read by the scripts' loaders
# ----------------------------------------------------------------------------------------------


def write_d4rl_file(path: Path, transitions: int, seed: int = 0) -> None:
    """A D4RL-schema HDF5 file (1000-step episodes ending by time-out, as MuJoCo's)."""
    import h5py

    rng = np.random.default_rng(seed)
    rows = transitions + transitions // 1000 + 1  # the loader drops each episode's last row
    timeouts = np.zeros(rows, dtype=bool)
    timeouts[999::1000] = True
    with h5py.File(path, "w") as file:
        file["observations"] = rng.standard_normal((rows, OBS_DIM), dtype=np.float32)
        file["actions"] = rng.uniform(-1, 1, (rows, ACT_DIM)).astype(np.float32)
        file["rewards"] = rng.standard_normal(rows, dtype=np.float32)
        file["terminals"] = np.zeros(rows, dtype=bool)
        file["timeouts"] = timeouts


def atari_buffer(transitions: int, seed: int = 0):
    """A frame-stacking buffer built by the Atari loader's own constructor."""
    from tianshou_offline.data.atari_buffer import buffer_from_columns

    rng = np.random.default_rng(seed)
    terminated = np.zeros(transitions, dtype=bool)
    terminated[999::1000] = True
    columns = {
        "frames": rng.integers(0, 256, (transitions, 84, 84), dtype=np.uint8),
        "act": rng.integers(0, NUM_ACTIONS, transitions),
        "rew": rng.choice([-1.0, 0.0, 1.0], transitions).astype(np.float32),
        "terminated": terminated,
        "truncated": np.zeros(transitions, dtype=bool),
    }
    return buffer_from_columns(columns)


# ----------------------------------------------------------------------------------------------
# The project path: the scripts' algorithm objects
# ----------------------------------------------------------------------------------------------

SCRIPTS = {"bc": "d4rl_il", "bcq": "d4rl_bcq", "cql": "d4rl_cql", "td3_bc": "d4rl_td3_bc"}


def load_script(name: str) -> types.ModuleType:
    """``examples/offline/<name>.py`` as a module (its ``__main__`` block does not run)."""
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "examples" / "offline" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_algorithm(script: str, argv: list[str]):
    """What ``<script>.main(argv)`` trains, built as it builds it: (algorithm, args, env spec)."""
    from tianshou_offline.run.d4rl import make_env_spec
    from tianshou_offline.run.evaluation import seed_everything

    module = load_script(script)
    args = module.get_args(argv)
    seed_everything(args.seed)
    spec = make_env_spec(args.task)
    return module.build_algorithm(args, spec), args, spec


def atari_algorithm(name: str, argv: list[str]):
    import gymnasium as gym

    from tianshou_offline.atari.networks import NatureCNN

    module = load_script(name)
    args = module.get_args(argv)
    algorithm = module.build_algorithm(args, NatureCNN(), gym.spaces.Discrete(NUM_ACTIONS))
    return algorithm.to(args.device), args


def project_step(algorithm, buffer, batch_size: int) -> Callable[[], object]:
    from tianshou.algorithm.algorithm_base import policy_within_training_step

    buffer = algorithm.process_buffer(buffer)

    def step():
        with policy_within_training_step(algorithm.policy):
            return algorithm.update(buffer=buffer, sample_size=batch_size)

    return step


# ----------------------------------------------------------------------------------------------
# Plain eager references: the same maths, minimal PyTorch
# ----------------------------------------------------------------------------------------------


def mlp(inp: int, hidden: list[int], out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(inp, h), nn.ReLU()]
        inp = h
    return nn.Sequential(*layers, nn.Linear(inp, out))


def polyak(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        t, s = list(target.parameters()), list(source.parameters())
        torch._foreach_mul_(t, 1 - tau)
        torch._foreach_add_(t, s, alpha=tau)


class TensorData:
    def __init__(self, buffer, device: torch.device) -> None:
        n = len(buffer)
        self.n, self.device = n, device
        self.t = {
            k: torch.as_tensor(np.asarray(getattr(buffer, k)[:n]), device=device).float()
            for k in ("obs", "act", "rew", "done", "terminated", "obs_next")
        }

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(self.n, (batch_size,), device=self.device)
        return {k: v[idx] for k, v in self.t.items()}


def plain_bc(data: TensorData, hidden: list[int], batch_size: int):
    actor = mlp(OBS_DIM, hidden, ACT_DIM).to(data.device)
    opt = torch.optim.Adam(actor.parameters(), lr=1e-4)

    def step():
        b = data.sample(batch_size)
        loss = F.mse_loss(torch.tanh(actor(b["obs"])), b["act"])
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def plain_td3_bc(data: TensorData, hidden: list[int], batch_size: int):
    dev = data.device
    actor = mlp(OBS_DIM, hidden, ACT_DIM).to(dev)
    critics = [mlp(OBS_DIM + ACT_DIM, hidden, 1).to(dev) for _ in range(2)]
    actor_t, critics_t = copy.deepcopy(actor), copy.deepcopy(critics)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=3e-4)
    critic_opts = [torch.optim.Adam(c.parameters(), lr=3e-4) for c in critics]
    it = [0]

    def step():
        b = data.sample(batch_size)
        obs, act = b["obs"], b["act"]
        with torch.no_grad():
            noise = (torch.randn_like(act) * 0.2).clamp(-0.5, 0.5)
            a2 = torch.tanh(actor_t(b["obs_next"])) + noise
            x2 = torch.cat([b["obs_next"], a2], 1)
            q2 = torch.min(critics_t[0](x2), critics_t[1](x2)).flatten()
            y = b["rew"] + 0.99 * (1 - b["terminated"]) * q2
        x = torch.cat([obs, act], 1)
        for critic, opt in zip(critics, critic_opts):
            loss = (critic(x).flatten() - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if it[0] % 2 == 0:
            a = torch.tanh(actor(obs))
            q = critics[0](torch.cat([obs, a], 1))
            loss = -(2.5 / q.abs().mean().detach()) * q.mean() + F.mse_loss(a, act)
            actor_opt.zero_grad()
            loss.backward()
            actor_opt.step()
            for t, s in zip([actor_t, *critics_t], [actor, *critics]):
                polyak(t, s, 0.005)
        it[0] += 1

    return step


def plain_cql(data: TensorData, hidden: list[int], batch_size: int, repeats: int = 10):
    dev = data.device
    actor = mlp(OBS_DIM, hidden, 2 * ACT_DIM).to(dev)  # mean and log-std heads in one layer
    critics = [mlp(OBS_DIM + ACT_DIM, hidden, 1).to(dev) for _ in range(2)]
    critics_t = copy.deepcopy(critics)
    log_alpha = torch.zeros((), device=dev, requires_grad=True)
    cql_log_alpha = torch.zeros((), device=dev, requires_grad=True)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=1e-4)
    critic_opts = [torch.optim.Adam(c.parameters(), lr=3e-4) for c in critics]
    alpha_opt = torch.optim.Adam([log_alpha], lr=1e-4)
    cql_opt = torch.optim.Adam([cql_log_alpha], lr=3e-4)

    def sample(obs):
        mu, log_std = actor(obs).chunk(2, -1)
        std = log_std.clamp(-20, 2).exp()
        x = mu + torch.randn_like(mu) * std
        logp = (-((x - mu) ** 2) / (2 * std**2) - std.log() - 0.9189385).sum(-1, keepdim=True)
        a = torch.tanh(x)
        return a, logp - torch.log(1 - a.pow(2) + 1.1920929e-07).sum(-1, keepdim=True)

    def q(critic, obs, act):
        return critic(torch.cat([obs, act], 1))

    def step():
        b = data.sample(batch_size)
        obs, act, obs_next = b["obs"], b["act"], b["obs_next"]
        alpha = log_alpha.detach().exp()
        a, logp = sample(obs)
        actor_loss = (alpha * logp - torch.min(q(critics[0], obs, a), q(critics[1], obs, a))).mean()
        actor_opt.zero_grad()
        actor_loss.backward()
        actor_opt.step()
        alpha_loss = -(log_alpha * (-ACT_DIM + logp.detach())).mean()
        alpha_opt.zero_grad()
        alpha_loss.backward()
        alpha_opt.step()
        alpha = log_alpha.detach().exp()
        with torch.no_grad():
            a2, logp2 = sample(obs_next)
            q2 = torch.min(q(critics_t[0], obs_next, a2), q(critics_t[1], obs_next, a2))
            y = b["rew"] + (1 - b["done"]) * 0.99 * (q2 - alpha * logp2).flatten()
            rand = torch.empty(batch_size * repeats, ACT_DIM, device=dev).uniform_(1.0, 1.0)
            obs_r = obs.repeat_interleave(repeats, 0)
            a_cur, lp_cur = sample(obs_r)
            a_nxt, lp_nxt = sample(obs_next.repeat_interleave(repeats, 0))
            scale = cql_log_alpha.exp().clamp(0, 1e6).detach()
        gaps, losses = [], []
        for critic in critics:
            qd = q(critic, obs, act).flatten()
            cat = torch.cat(
                [
                    q(critic, obs_r, rand) - ACT_DIM * np.log(0.5),
                    q(critic, obs_r, a_cur) - lp_cur,
                    q(critic, obs_r, a_nxt) - lp_nxt,
                ],
                1,
            )
            gap = torch.logsumexp(cat, 1).mean() - qd.mean() - 10.0
            gaps.append(gap.detach())
            losses.append(F.mse_loss(qd, y) + scale * gap)
        cql_loss = -(cql_log_alpha.exp().clamp(0, 1e6) * (gaps[0] + gaps[1])) * 0.5
        cql_opt.zero_grad()
        cql_loss.backward()
        cql_opt.step()
        for critic, opt, loss in zip(critics, critic_opts, losses):
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(critic.parameters(), 1.0)
            opt.step()
        for t, s in zip(critics_t, critics):
            polyak(t, s, 0.005)

    return step


def plain_bcq(data: TensorData, hidden: list[int], vae_hidden: list[int], batch_size: int):
    dev, latent, repeats = data.device, 2 * ACT_DIM, 10
    actor = mlp(OBS_DIM + ACT_DIM, hidden, ACT_DIM).to(dev)
    critics = [mlp(OBS_DIM + ACT_DIM, hidden, 1).to(dev) for _ in range(2)]
    encoder = mlp(OBS_DIM + ACT_DIM, vae_hidden[:-1], vae_hidden[-1]).to(dev)
    heads = nn.Linear(vae_hidden[-1], 2 * latent).to(dev)
    decoder = mlp(OBS_DIM + latent, vae_hidden, ACT_DIM).to(dev)
    actor_t, critics_t = copy.deepcopy(actor), copy.deepcopy(critics)
    vae_params = [*encoder.parameters(), *heads.parameters(), *decoder.parameters()]
    vae_opt = torch.optim.Adam(vae_params, lr=1e-3)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=1e-3)
    critic_opts = [torch.optim.Adam(c.parameters(), lr=1e-3) for c in critics]

    def decode(obs, z=None):
        if z is None:
            z = torch.randn(obs.shape[0], latent, device=dev).clamp(-0.5, 0.5)
        return torch.tanh(decoder(torch.cat([obs, z], 1)))

    def perturb(net, obs, act):
        return (act + 0.05 * torch.tanh(net(torch.cat([obs, act], 1)))).clamp(-1, 1)

    def step():
        b = data.sample(batch_size)
        obs, act = b["obs"], b["act"]
        mean, log_std = heads(F.relu(encoder(torch.cat([obs, act], 1)))).chunk(2, -1)
        std = log_std.clamp(-4, 15).exp()
        recon = decode(obs, mean + std * torch.randn_like(std))
        kl = (-torch.log(std) + (std.pow(2) + mean.pow(2) - 1) / 2).mean()
        vae_loss = F.mse_loss(act, recon) + kl / 2
        vae_opt.zero_grad()
        vae_loss.backward()
        vae_opt.step()
        with torch.no_grad():
            obs2 = b["obs_next"].repeat_interleave(repeats, 0)
            a2 = decode(obs2)
            x2 = torch.cat([obs2, a2], 1)
            q1, q2 = critics_t[0](x2), critics_t[1](x2)
            qt = 0.75 * torch.min(q1, q2) + 0.25 * torch.max(q1, q2)
            qt = qt.reshape(batch_size, -1).max(1)[0].reshape(-1, 1)
            y = b["rew"].reshape(-1, 1) + (1 - b["done"]).reshape(-1, 1) * 0.99 * qt
        x = torch.cat([obs, act], 1)
        for critic, opt in zip(critics, critic_opts):
            loss = F.mse_loss(critic(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        a = perturb(actor, obs, decode(obs))
        actor_loss = -critics[0](torch.cat([obs, a], 1)).mean()
        actor_opt.zero_grad()
        actor_loss.backward()
        actor_opt.step()
        for t, s in zip([actor_t, *critics_t], [actor, *critics]):
            polyak(t, s, 0.005)

    return step


def nature_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(4, 32, 8, stride=4),
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
    )


class FrameData:
    """Stacked frames of an Atari buffer gathered on the device (uint8 until the network)."""

    def __init__(self, buffer, device: torch.device) -> None:
        n = len(buffer)
        self.n, self.device = n, device
        self.frames = torch.as_tensor(buffer.obs[:n], device=device)  # (n, 84, 84)
        self.act = torch.as_tensor(buffer.act[:n], device=device).long()
        self.rew = torch.as_tensor(buffer.rew[:n], device=device).float()
        self.done = torch.as_tensor(buffer.done[:n], device=device).float()
        self.offsets = torch.arange(-3, 1, device=device)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(3, self.n - 1, (batch_size,), device=self.device)
        stack = idx[:, None] + self.offsets  # episode boundaries ignored: timing only
        return {
            "obs": self.frames[stack].float() / 255,
            "obs_next": self.frames[stack + 1].float() / 255,
            "act": self.act[idx],
            "rew": self.rew[idx],
            "done": self.done[idx],
        }


def plain_atari(name: str, data: FrameData, batch_size: int, num_quantiles: int = 200):
    dev, A = data.device, NUM_ACTIONS
    cnn = nature_cnn().to(dev)
    heads: dict[str, nn.Module] = {}
    if name == "atari_cql":
        heads["q"] = mlp(3136, [512], A * num_quantiles)
    else:
        heads["q"] = mlp(3136, [512], A)
    if name in ("atari_bcq", "atari_crr"):
        heads["pi"] = mlp(3136, [512], A)
    if name == "atari_il":
        heads = {"pi": mlp(3136, [512], A)}
    model = nn.ModuleDict({"cnn": cnn, **heads}).to(dev)
    target = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    tau_hat = ((torch.arange(num_quantiles, device=dev) + 0.5) / num_quantiles).view(1, -1)
    rows = torch.arange(batch_size, device=dev)

    def step():
        b = data.sample(batch_size)
        act = b["act"]
        feats = model["cnn"](b["obs"])
        if name == "atari_il":
            loss = F.cross_entropy(model["pi"](feats), act)
        elif name == "atari_cql":
            with torch.no_grad():
                next_online = model["q"](model["cnn"](b["obs_next"])).view(-1, A, num_quantiles)
                next_act = next_online.mean(2).argmax(1)
                next_dist = target["q"](target["cnn"](b["obs_next"])).view(-1, A, num_quantiles)
                y = b["rew"][:, None] + 0.99 * (1 - b["done"])[:, None] * next_dist[rows, next_act]
            dist = model["q"](feats).view(-1, A, num_quantiles)
            cur = dist[rows, act].unsqueeze(2)
            diff = F.smooth_l1_loss(y.unsqueeze(1), cur, reduction="none")
            qr = diff * (tau_hat - (y.unsqueeze(1) - cur).detach().le(0).float()).abs()
            qv = dist.mean(2)
            loss = qr.sum(-1).mean(1).mean() + 10.0 * (
                qv.logsumexp(1).mean() - qv.gather(1, act[:, None]).mean()
            )
        elif name == "atari_bcq":
            with torch.no_grad():
                f2 = model["cnn"](b["obs_next"])
                q2, i2 = model["q"](f2), model["pi"](f2)
                ratio = i2.softmax(1)
                mask = (ratio / ratio.max(1, keepdim=True)[0]) < 0.3
                next_act = (q2 - 1e8 * mask.float()).argmax(1)
                qt = target["q"](target["cnn"](b["obs_next"]))[rows, next_act]
                y = b["rew"] + 0.99 * (1 - b["done"]) * qt
            q, logits = model["q"](feats), model["pi"](feats)
            loss = (
                F.smooth_l1_loss(q[rows, act], y)
                + F.cross_entropy(logits, act)
                + 0.01 * logits.pow(2).mean()
            )
        else:  # atari_crr
            with torch.no_grad():
                f2 = target["cnn"](b["obs_next"])
                probs = target["pi"](f2).softmax(1)
                y = b["rew"][:, None] + 0.99 * (1 - b["done"])[:, None] * (
                    target["q"](f2) * probs
                ).sum(1, keepdim=True)
            q, logits = model["q"](feats), model["pi"](feats)
            qa = q.gather(1, act[:, None])
            adv = qa - (q * logits.softmax(1)).sum(1, keepdim=True)
            weight = (adv.detach()).exp().clamp(0, 20)
            loss = (
                0.5 * F.mse_loss(qa, y)
                - (F.log_softmax(logits, 1).gather(1, act[:, None]) * weight).mean()
            )
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


# ----------------------------------------------------------------------------------------------
# The rows
# ----------------------------------------------------------------------------------------------


def fast_step(
    row: dict, key: str, algorithm, buffer, device, batch_size: int, args, **options
) -> Callable[[], object] | None:
    """The fast path's update of ``algorithm`` (compiled, every variant), its compile seconds
    in ``row[key + "_compile_s"]``; None where the algorithm has none or it failed."""
    from tianshou_offline.updates.select import make_fast_update

    buffer = algorithm.process_buffer(buffer)
    fast = make_fast_update(algorithm, buffer, device, compile=not args.no_compile, **options)
    if fast is None:
        return None
    started = time.perf_counter()
    try:
        # every variant compiled: TD3's delayed actor step and the hard target updates of the
        # discrete algorithms (at their first update) have two
        for _ in range(4):
            fast.run_step(batch_size)
        sync(device)
    except Exception:  # report and go on: the other paths still measure
        traceback.print_exc()
        return None
    row[key + "_compile_s"] = time.perf_counter() - started
    return lambda: fast.run_step(batch_size)


# extra paths: the fast path with one lever switched off, timed in the same rounds as the others
LEVER_PATHS = {
    "fast_twin_ensemble": ("fast, twin critics as one ensemble", {"twin_ensemble": True}),
    "fast_guards_checked": ("fast, Dynamo guards checked", {"skip_guards": False}),
    "fast_python_wrapper": ("fast, Inductor's Python wrapper", {"cpp_wrapper": False}),
}


def lever_paths(name: str, device: torch.device, args) -> dict[str, dict]:
    """The lever-off variants of the fast path that ``args`` asks for and that apply here."""
    wanted = {}
    if args.twin_ensemble and name in ("td3_bc", "cql"):
        wanted["fast_twin_ensemble"] = LEVER_PATHS["fast_twin_ensemble"][1]
    if args.levers:
        wanted["fast_guards_checked"] = LEVER_PATHS["fast_guards_checked"][1]
        if device.type == "cpu":  # the C++ wrapper is used on the CPU only
            wanted["fast_python_wrapper"] = LEVER_PATHS["fast_python_wrapper"][1]
    return wanted


def measure_paths(row: dict, paths: dict, device, args, warmup: int = 5) -> None:
    """Updates/s of each path into ``row``: ``args.rounds`` rounds, the paths (and the matmul
    throughput) interleaved within a round, the best round of each kept. On a shared machine
    the other jobs' load comes and goes; the best of interleaved rounds compares the paths
    under the same (least) disturbance."""
    row["matmul_flops"] = 0.0  # the arithmetic limit, measured with the paths
    for name in paths:
        row[name] = 0.0
    for _ in range(args.rounds):
        row["matmul_flops"] = max(row["matmul_flops"], matmul_flops_per_second(device, 1.0))
        for name, step in paths.items():
            rate = updates_per_second(step, device, args.seconds, warmup=warmup)
            row[name] = max(row[name], rate)


def time_paths(
    row: dict,
    algorithm,
    rebuild: Callable[[], object],
    plain,
    buffer,
    device,
    batch_size,
    args,
    warmup: int = 5,
) -> None:
    """Time a row's paths together (measure_paths): Tianshou's update of ``algorithm``, the fast
    path and the lever variants ``args`` asks for, each on a fresh algorithm from ``rebuild()``
    (Tianshou's CQL cannot be deep-copied on CUDA), and the plain eager step ``plain``."""
    # a script compiles one algorithm per process; here many share one, and Dynamo's limit of
    # recompilations per code object (the step's variants of every algorithm) would be reached
    torch._dynamo.reset()
    paths = {"project": project_step(algorithm, buffer, batch_size)}
    paths["fast"] = fast_step(row, "fast", rebuild(), buffer, device, batch_size, args)
    for key, options in lever_paths(row["algorithm"], device, args).items():
        paths[key] = fast_step(row, key, rebuild(), buffer, device, batch_size, args, **options)
    row["flops"] = count_flops(plain)
    paths["plain"] = plain
    measure_paths(row, {k: v for k, v in paths.items() if v is not None}, device, args, warmup)


def continuous_row(name, size, buffer, device, args) -> dict:
    hidden = [32, 32] if size == "tiny" else None
    batch_size = 32 if size == "tiny" else 256
    argv = ["--device", str(device), "--batch-size", str(batch_size)]
    if hidden:
        argv += ["--hidden-sizes", *map(str, hidden)]
        if name == "bcq":
            argv += ["--vae-hidden-sizes", "32", "32"]
    algorithm, script_args, _ = script_algorithm(SCRIPTS[name], argv)
    hidden = script_args.hidden_sizes
    row = {"algorithm": name, "size": size, "hidden": hidden, "batch": batch_size}
    torch.manual_seed(0)
    data = TensorData(buffer, device)
    plain = {
        "bc": lambda: plain_bc(data, hidden, batch_size),
        "td3_bc": lambda: plain_td3_bc(data, hidden, batch_size),
        "cql": lambda: plain_cql(data, hidden, batch_size),
        "bcq": lambda: plain_bcq(data, hidden, script_args.vae_hidden_sizes, batch_size),
    }[name]()

    def rebuild():
        return script_algorithm(SCRIPTS[name], argv)[0]

    time_paths(row, algorithm, rebuild, plain, buffer, device, batch_size, args)
    return row


def atari_row(name, buffer, device, args) -> dict:
    batch_size = 32
    argv = ["--device", str(device), "--batch-size", str(batch_size)]
    row = {"algorithm": name, "size": "nature-cnn", "hidden": [512], "batch": batch_size}
    plain = plain_atari(name, FrameData(buffer, device), batch_size)

    def rebuild():
        return atari_algorithm(name, argv)[0]

    time_paths(row, rebuild(), rebuild, plain, buffer, device, batch_size, args, warmup=3)
    return row


def data_load_row(device: torch.device, transitions: int, tmp: Path) -> dict:
    """Seconds from a D4RL-format file to the fast path's tensors on the training device."""
    from tianshou_offline.data import d4rl as d4rl_data
    from tianshou_offline.updates.core import DeviceDataset

    path = tmp / "bench.hdf5"
    write_d4rl_file(path, transitions)
    sync(device)
    started = time.perf_counter()
    buffer = d4rl_data.load_d4rl_buffer(str(path))
    loaded = time.perf_counter()
    buffer, _ = d4rl_data.normalize_obs(buffer)
    normalized = time.perf_counter()
    DeviceDataset(buffer, device)
    sync(device)
    done = time.perf_counter()
    return {
        "transitions": len(buffer),
        "read_s": loaded - started,
        "normalize_s": normalized - loaded,
        "to_device_s": done - normalized,
        "total_s": done - started,
        "buffer": buffer,
    }


def format_table(rows: list[dict], meta: dict) -> str:
    extra = [key for key in LEVER_PATHS if any(key in r for r in rows)]
    head = (
        "| algorithm | size | device | threads | torch | project upd/s | fast upd/s | plain upd/s "
        "| project/plain | fast/plain | MFLOP/upd | % limit (best path) |"
    )
    for key in extra:
        head += f" {LEVER_PATHS[key][0]} upd/s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        best = max(r["project"], r.get("fast", 0.0), *(r.get(key, 0.0) for key in extra))
        # against the best matmul throughput of this row's rounds (shared machines vary)
        share = 100 * r["flops"] * best / r.get("matmul_flops", meta["matmul_flops"])
        fast = r.get("fast")
        fast_cell = f"{fast:.0f}" if fast else "-"
        fast_ratio = f"{fast / r['plain']:.2f}x" if fast else "-"
        line = (
            f"| {r['algorithm']} | {r['size']} | {meta['device']} | {meta['threads']} "
            f"| {meta['torch']} | {r['project']:.0f} | {fast_cell} "
            f"| {r['plain']:.0f} | {r['project'] / r['plain']:.2f}x "
            f"| {fast_ratio} | {r['flops'] / 1e6:.1f} "
            f"| {share:.1f}% |"
        )
        for key in extra:
            line += f" {r[key]:.0f} |" if r.get(key) else " - |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per path")
    parser.add_argument("--algos", nargs="*", default=[*CONTINUOUS, *ATARI])
    parser.add_argument("--sizes", nargs="*", default=["full", "tiny"], choices=["full", "tiny"])
    parser.add_argument("--transitions", type=int, default=1_000_000, help="D4RL file size")
    parser.add_argument("--atari-transitions", type=int, default=20_000)
    parser.add_argument("--no-compile", action="store_true", help="fast path without compile")
    parser.add_argument(
        "--levers",
        action="store_true",
        help="also time the fast path with Dynamo's guards checked at every call, and (CPU) "
        "with Inductor's Python wrapper instead of the C++ one: each lever alone",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds per row; the best is kept"
    )
    parser.add_argument(
        "--twin-ensemble",
        action="store_true",
        help="also time TD3+BC's and CQL's fast path with the twin critics as one vmapped "
        "network (the default evaluates them as two)",
    )
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--markdown", default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__.split("+")[0],
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
    }
    meta["matmul_flops"] = matmul_flops_per_second(device)
    print(f"{meta['device']}: float32 matmul {meta['matmul_flops'] / 1e9:.1f} GFLOP/s", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        load = data_load_row(device, args.transitions, Path(tmp))
        buffer = load.pop("buffer")
        meta["data_load"] = load
        print(
            f"data: {load['transitions']} transitions, file -> buffer {load['read_s']:.2f}s, "
            f"normalize {load['normalize_s']:.2f}s, -> {device} {load['to_device_s']:.2f}s",
            flush=True,
        )
        for size in args.sizes:
            for name in [a for a in args.algos if a in CONTINUOUS]:
                rows.append(continuous_row(name, size, buffer, device, args))
                print(json.dumps({k: v for k, v in rows[-1].items()}), flush=True)
        atari = [a for a in args.algos if a in ATARI]
        if atari and "full" in args.sizes:
            frames = atari_buffer(args.atari_transitions)
            for name in atari:
                rows.append(atari_row(name, frames, device, args))
                print(json.dumps(rows[-1]), flush=True)
    table = format_table(rows, meta)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
