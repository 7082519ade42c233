#!/usr/bin/env python3
"""Env steps per second of online SAC: the dataset maker's trainer against plain PyTorch.

One env step = one action from the policy, one MuJoCo step, one replay write and one gradient
update (update-to-data ratio 1, batch 256, 256x256 networks, automatic temperature), as in
``make_d4rl_dataset.py train`` after its random warm-up. Paths, timed in interleaved rounds in
one process (each keeps its best round):

* project eager: ``make_d4rl_dataset.SacRun`` with ``--no-compile`` (the functional SAC step,
  uncompiled);
* project compiled: ``SacRun`` as ``train`` runs it by default (the step under torch.compile);
* plain: a minimal SAC written here in eager PyTorch (nn.Sequential networks, torch.optim.Adam,
  a numpy replay buffer), the usual reference implementation.

    python benchmarks/bench_sac.py --task Hopper-v5 --threads 1 --steps 1500 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tianshou_offline.dataset_maker import cpu_model

ROOT = Path(__file__).resolve().parent.parent

WARMUP_STEPS = 1000  # random actions that fill the buffer before the timed steps


class PlainSAC:
    """SAC in the textbook eager form, for reference."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, batch_size: int) -> None:
        def mlp(n_in: int, n_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                nn.Linear(hidden, n_out),
            )  # fmt: skip

        self.actor = mlp(obs_dim, 2 * act_dim)
        self.critics = [mlp(obs_dim + act_dim, 1) for _ in range(2)]
        self.targets = [mlp(obs_dim + act_dim, 1) for _ in range(2)]
        for target, critic in zip(self.targets, self.critics):
            target.load_state_dict(critic.state_dict())
        self.log_alpha = torch.zeros((), requires_grad=True)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=1e-3)
        self.critic_optim = torch.optim.Adam(
            [p for c in self.critics for p in c.parameters()], lr=1e-3
        )
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=3e-4)
        self.target_entropy = -float(act_dim)
        self.batch_size = batch_size
        capacity = 1_000_000
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.act = np.zeros((capacity, act_dim), np.float32)
        self.rew = np.zeros(capacity, np.float32)
        self.term = np.zeros(capacity, np.float32)
        self.obs_next = np.zeros((capacity, obs_dim), np.float32)
        self.size = 0

    def sample_action(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.actor(obs).chunk(2, -1)
        std = log_std.clamp(-20, 2).exp()
        pre_tanh = mu + std * torch.randn_like(mu)
        act = torch.tanh(pre_tanh)
        log_prob = torch.distributions.Normal(mu, std).log_prob(pre_tanh).sum(-1)
        return act, log_prob - torch.log(1 - act.pow(2) + 1e-6).sum(-1)

    def act_on(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.sample_action(torch.as_tensor(obs, dtype=torch.float32)[None])[0][0].numpy()

    def add(self, obs, act, rew, term, obs_next) -> None:
        i = self.size
        self.obs[i], self.act[i], self.rew[i], self.term[i], self.obs_next[i] = (
            obs, act, rew, term, obs_next
        )  # fmt: skip
        self.size += 1

    def update(self) -> None:
        idx = np.random.randint(self.size, size=self.batch_size)
        obs, act, rew, term, obs_next = (
            torch.as_tensor(a[idx])
            for a in (self.obs, self.act, self.rew, self.term, self.obs_next)
        )
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            act_next, logp_next = self.sample_action(obs_next)
            x_next = torch.cat([obs_next, act_next], -1)
            q_next = torch.min(*(t(x_next).squeeze(-1) for t in self.targets))
            target = rew + 0.99 * (1 - term) * (q_next - alpha * logp_next)
        x = torch.cat([obs, act], -1)
        critic_loss = sum(F.mse_loss(c(x).squeeze(-1), target) for c in self.critics)
        self.critic_optim.zero_grad()
        critic_loss.backward()
        self.critic_optim.step()
        act_pi, logp = self.sample_action(obs)
        x_pi = torch.cat([obs, act_pi], -1)
        q_pi = torch.min(*(c(x_pi).squeeze(-1) for c in self.critics))
        actor_loss = (alpha * logp - q_pi).mean()
        self.actor_optim.zero_grad()
        actor_loss.backward()
        self.actor_optim.step()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_optim.zero_grad()
        alpha_loss.backward()
        self.alpha_optim.step()
        with torch.no_grad():
            for target, critic in zip(self.targets, self.critics):
                for tp, p in zip(target.parameters(), critic.parameters()):
                    tp.lerp_(p, 0.005)


class PlainLoop:
    """The plain SAC's env loop: act, step, store, update."""

    def __init__(self, task: str, hidden: int, batch_size: int) -> None:
        self.env = gym.make(task, max_episode_steps=1000)
        obs_dim = self.env.observation_space.shape[0]
        act_dim = self.env.action_space.shape[0]
        self.sac = PlainSAC(obs_dim, act_dim, hidden, batch_size)
        self.obs, _ = self.env.reset(seed=0)
        rng = np.random.default_rng(0)
        for _ in range(WARMUP_STEPS):
            self._env_step(rng.uniform(-1, 1, act_dim).astype(np.float32))

    def _env_step(self, action: np.ndarray) -> None:
        obs_next, rew, term, trunc, _ = self.env.step(action)
        self.sac.add(self.obs, action, rew, term, obs_next)
        self.obs = obs_next if not (term or trunc) else self.env.reset()[0]

    def step(self) -> None:
        self._env_step(self.sac.act_on(self.obs))
        self.sac.update()


class ProjectLoop:
    """``make_d4rl_dataset.SacRun``, past its warm-up; ``step`` is what ``train`` calls."""

    def __init__(self, task: str, hidden: int, batch_size: int, compile: bool) -> None:
        from tianshou_offline import dataset_maker as make_d4rl_dataset

        self.run_dir = tempfile.TemporaryDirectory()
        args = make_d4rl_dataset.parse_args(
            ["train", "--task", task, "--run-dir", self.run_dir.name,
             "--hidden-sizes", str(hidden), str(hidden), "--batch-size", str(batch_size),
             "--start-steps", str(WARMUP_STEPS), "--steps", "10000000",
             "--compile" if compile else "--no-compile"]
        )  # fmt: skip
        self.run = make_d4rl_dataset.SacRun(args, "cpu")
        while self.run.log.num_steps <= WARMUP_STEPS:  # includes the first update (compiles)
            self.run.step()

    def step(self) -> None:
        self.run.step()


def steps_per_second(loop: PlainLoop | ProjectLoop, steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        loop.step()
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="Hopper-v5")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1500, help="timed env steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    loops = {
        "plain": PlainLoop(args.task, args.hidden, args.batch_size),
        "project eager": ProjectLoop(args.task, args.hidden, args.batch_size, compile=False),
        "project compiled": ProjectLoop(args.task, args.hidden, args.batch_size, compile=True),
    }
    best = {name: 0.0 for name in loops}
    for round_index in range(args.rounds):
        for name, loop in loops.items():
            best[name] = max(best[name], steps_per_second(loop, args.steps))
        print(f"round {round_index + 1}: " + ", ".join(f"{n} {v:.0f}" for n, v in best.items()))
    cpu = cpu_model()
    print(
        f"\n{args.task}, batch {args.batch_size}, {args.hidden}x{args.hidden}, UTD 1, "
        f"{args.threads} thread(s), {cpu}, torch {torch.__version__}, "
        f"{datetime.date.today()}; best of {args.rounds} rounds of {args.steps} env steps\n"
    )
    print("| path | env steps/s | vs plain |")
    print("|---|--:|--:|")
    for name, value in best.items():
        print(f"| {name} | {value:.0f} | {value / best['plain']:.2f}x |")


if __name__ == "__main__":
    main()
