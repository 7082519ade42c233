#!/usr/bin/env python3
"""Gradient updates per second of the offline algorithms, against plain PyTorch and the hardware.

For each algorithm this measures, in one process and with warm-up (and compilation) excluded:

* project: the scripts' own path: the algorithm object that ``examples/offline/<script>.py``
  builds by default (``build_algorithm``: the classes of ``tianshou_offline.algorithms`` with
  the paper's maths, i.e. without ``--tianshou-2.0.1-maths``; checked), data from the scripts'
  loader, and Tianshou's ``algorithm.update(buffer, batch_size)``, exactly what the offline
  trainer calls once per gradient step: Tianshou's sampling, then the algorithm's functional
  step (``tianshou_offline.updates``) run eagerly;
* fast: the same step compiled over the dataset on the device
  (``tianshou_offline.updates.select.make_fast_update``, the scripts' ``--compile``);
* plain: the paper's update written independently in minimal eager PyTorch (nn.Sequential
  networks, torch.optim.Adam, batches drawn from the dataset as tensors on the device), after
  the authors' or CORL's reference code (each ``plain_*`` names its source and where it
  departs from it), with the project row's network sizes, batch size and hyperparameters: the
  same arithmetic as the project's step but no code shared with it, so ``project/plain``
  measures speed, not agreement;
* the device's matrix-multiply throughput (float32, as training runs; measured again before each
  row, since a shared machine's varies), and each update's FLOPs (counted by
  torch.utils.flop_counter on the plain update, averaged over two updates since TD3+BC's actor
  learns every second one), so ``% limit`` = FLOPs per update x updates per second /
  throughput, for the fastest of the paths.

Rows "tiny" use hidden 32 and batch 32: there the arithmetic is negligible and the numbers
measure per-update overhead. The Atari rows (one size, the Nature CNN) run with size "full", or
whenever ``--algos`` names them.

    python benchmarks/bench_updates.py --device cpu --seconds 5
    python benchmarks/bench_updates.py --device cuda --markdown results.md
"""

from __future__ import annotations

import argparse
import contextlib
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

CONTINUOUS = ("bc", "bcq", "cql", "td3_bc", "iql", "rebrac")
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


def count_flops(step: Callable[[], object], calls: int = 2) -> float:
    """FLOPs of one call of ``step``, averaged over ``calls`` calls (updates that alternate,
    like TD3+BC's delayed actor, count at their mean)."""
    with FlopCounterMode(display=False) as counter:
        for _ in range(calls):
            step()
    return counter.get_total_flops() / calls


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

SCRIPTS = {
    "bc": "d4rl_il",
    "bcq": "d4rl_bcq",
    "cql": "d4rl_cql",
    "td3_bc": "d4rl_td3_bc",
    "iql": "d4rl_iql",
    "rebrac": "d4rl_rebrac",
}
# full-size rows run at batch 256, except where the script's own default differs
FULL_BATCH = {"rebrac": 1024}


def load_script(name: str) -> types.ModuleType:
    """``examples/offline/<name>.py`` as a module (its ``__main__`` block does not run)."""
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "examples" / "offline" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def paper_maths(algorithm):
    """``algorithm``, checked to be what the scripts train by default: a class of
    ``tianshou_offline.algorithms`` with the paper's maths (its corrections to Tianshou 2.0.1
    on), not Tianshou's own class nor ``--tianshou-2.0.1-maths``."""
    if getattr(algorithm, "tianshou_maths", True):
        raise RuntimeError(f"{type(algorithm).__name__}: not the scripts' default (paper) maths")
    return algorithm


def script_algorithm(script: str, argv: list[str]):
    """What ``<script>.main(argv)`` trains, built as it builds it: (algorithm, args, env spec)."""
    from tianshou_offline.run.d4rl import make_env_spec
    from tianshou_offline.run.evaluation import seed_everything

    module = load_script(script)
    args = module.get_args(argv)
    seed_everything(args.seed)
    spec = make_env_spec(args.task)
    return paper_maths(module.build_algorithm(args, spec)), args, spec


def atari_algorithm(name: str, argv: list[str]):
    """What ``<name>.main(argv)`` trains on Pong-sized frames: (algorithm, args)."""
    import gymnasium as gym

    from tianshou_offline.atari.networks import NatureCNN

    module = load_script(name)
    args = module.get_args(argv)
    algorithm = module.build_algorithm(args, NatureCNN(), gym.spaces.Discrete(NUM_ACTIONS))
    return paper_maths(algorithm.to(args.device)), args


def project_step(algorithm, buffer, batch_size: int) -> Callable[[], object]:
    from tianshou.algorithm.algorithm_base import policy_within_training_step

    buffer = algorithm.process_buffer(buffer)

    def step():
        with policy_within_training_step(algorithm.policy):
            return algorithm.update(buffer=buffer, sample_size=batch_size)

    return step


# ----------------------------------------------------------------------------------------------
# Plain eager references: each paper's update, written independently in plain PyTorch
#
# Written from the papers and their reference code (named in each), not from the project's
# steps: nn.Sequential networks, autograd and torch.optim.Adam, batches drawn uniformly from
# the dataset as tensors on the device. Network sizes, batch size and hyperparameters are the
# project row's (its script's arguments), so both do the same arithmetic. Two habits of the
# reference code that only waste arithmetic are not copied: a loss's gradient is not taken for
# networks it does not train (critics are frozen in the actor's loss, as Spinning Up does;
# targets and sampled actions are computed under no_grad), and nothing is logged (.item()).
# Targets mask with ``terminated`` (a time-out bootstraps), as the reference code's not_done
# (D4RL's terminals) does.
# ----------------------------------------------------------------------------------------------

LOG_2 = float(np.log(2.0))
HALF_LOG_2PI = float(0.5 * np.log(2 * np.pi))


def mlp(inp: int, hidden: list[int], out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(inp, h), nn.ReLU()]
        inp = h
    return nn.Sequential(*layers, nn.Linear(inp, out))


def polyak(targets: list[nn.Module], sources: list[nn.Module], tau: float) -> None:
    """theta' <- tau theta + (1 - tau) theta', every parameter at once (torch._foreach_lerp_,
    as PyTorch's own EMA in torch.optim.swa_utils)."""
    with torch.no_grad():
        t = [p for m in targets for p in m.parameters()]
        s = [p for m in sources for p in m.parameters()]
        torch._foreach_lerp_(t, s, tau)


@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """The parameters of ``modules`` as constants of what is computed inside: the backward pass
    then computes no gradients for them (Spinning Up's freeze of the Q-networks in the policy
    step; the reference code computes them and discards them at the next zero_grad)."""
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def hard_copy(target: nn.Module, source: nn.Module) -> None:
    """The target network's periodic copy (DQN's C-step update)."""
    target.load_state_dict(source.state_dict())


class TensorData:
    """A D4RL-format buffer's transitions as float tensors on the device."""

    def __init__(self, buffer, device: torch.device) -> None:
        n = len(buffer)
        self.n, self.device = n, device
        self.t = {
            k: torch.as_tensor(np.asarray(getattr(buffer, k)[:n]), device=device).float()
            for k in ("obs", "act", "rew", "terminated", "obs_next")
        }

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(self.n, (batch_size,), device=self.device)
        return {k: v[idx] for k, v in self.t.items()}


def plain_bc(data: TensorData, hidden: list[int], batch_size: int, args, max_action: float):
    """Behaviour cloning, as CORL's any_percent_bc.py with all the data: a deterministic
    max_action x tanh actor regressed onto the dataset's actions (mean-squared error)."""
    actor = mlp(OBS_DIM, hidden, ACT_DIM).to(data.device)
    opt = torch.optim.Adam(actor.parameters(), lr=args.lr)

    def step():
        b = data.sample(batch_size)
        loss = F.mse_loss(max_action * torch.tanh(actor(b["obs"])), b["act"])
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def plain_td3_bc(data: TensorData, hidden: list[int], batch_size: int, args, max_action: float):
    """TD3+BC (Fujimoto & Gu, 2021), as their reference TD3_BC.py trains it: target policy
    smoothing with the noisy target action clipped to the action bounds, the twin critics (one
    module, one optimizer) on the clipped double-Q target, and every ``policy_freq``-th update
    the actor on -lambda Q1(s, pi(s)) + (pi(s) - a)^2 with lambda = alpha / mean|Q1|, then the
    soft target updates of critics and actor."""
    dev = data.device
    actor = mlp(OBS_DIM, hidden, ACT_DIM).to(dev)
    critic = nn.ModuleList([mlp(OBS_DIM + ACT_DIM, hidden, 1) for _ in range(2)]).to(dev)
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.critic_lr)
    total_it = [0]

    def pi(net: nn.Module, state: torch.Tensor) -> torch.Tensor:
        return max_action * torch.tanh(net(state))

    def step():
        total_it[0] += 1
        b = data.sample(batch_size)
        state, action, next_state = b["obs"], b["act"], b["obs_next"]
        not_done = 1.0 - b["terminated"][:, None]
        with torch.no_grad():
            noise = (torch.randn_like(action) * args.policy_noise).clamp(
                -args.noise_clip, args.noise_clip
            )
            next_action = (pi(actor_target, next_state) + noise).clamp(-max_action, max_action)
            next_sa = torch.cat([next_state, next_action], 1)
            target_q = torch.min(critic_target[0](next_sa), critic_target[1](next_sa))
            target_q = b["rew"][:, None] + not_done * args.gamma * target_q
        sa = torch.cat([state, action], 1)
        critic_loss = F.mse_loss(critic[0](sa), target_q) + F.mse_loss(critic[1](sa), target_q)
        critic_opt.zero_grad()
        critic_loss.backward()
        critic_opt.step()
        if total_it[0] % args.update_actor_freq == 0:
            new_action = pi(actor, state)
            with frozen(critic):
                q = critic[0](torch.cat([state, new_action], 1))
            lmbda = args.alpha / q.abs().mean().detach()
            actor_loss = -lmbda * q.mean() + F.mse_loss(new_action, action)
            actor_opt.zero_grad()
            actor_loss.backward()
            actor_opt.step()
            polyak([critic_target, actor_target], [critic, actor], args.tau)

    return step


def plain_cql(data: TensorData, hidden: list[int], batch_size: int, args, action_space):
    """CQL(H) (Kumar et al., 2020) with a SAC actor, as CORL's cql.py (ContinuousCQL.train)
    trains it with a fixed penalty weight (cql_lagrange False): every loss from the batch
    first, then the temperature's, the actor's and the critics' steps, then the soft target
    update. Actor: E[alpha log pi(a~|s) - min Q(s, a~)]; critics: the TD error plus
    weight x (log-sum-exp over cql_n_actions uniform actions on the action box and as many
    current- and next-state policy actions, each importance-weighted by its log-density, minus
    Q(s, a_data)). Departure from CORL: the target keeps SAC's entropy term (CORL's
    backup_entropy, off there), as the scripts' CQL does; a handful of elementwise FLOPs."""
    if args.with_lagrange or args.calibrated:
        raise NotImplementedError("plain CQL: fixed penalty weight, no Cal-QL (scripts' default)")
    dev = data.device
    low = torch.as_tensor(action_space.low, dtype=torch.float32, device=dev)
    high = torch.as_tensor(action_space.high, dtype=torch.float32, device=dev)
    max_action = float(action_space.high.max())
    log_uniform = -float(np.log(action_space.high - action_space.low).sum())  # of U(low, high)
    n_actions, temp, target_entropy = args.num_repeat_actions, args.temperature, -ACT_DIM
    actor = mlp(OBS_DIM, hidden, 2 * ACT_DIM).to(dev)  # mean and log-std
    critics = [mlp(OBS_DIM + ACT_DIM, hidden, 1).to(dev) for _ in range(2)]
    target_critics = copy.deepcopy(critics)
    log_alpha = torch.zeros((), device=dev, requires_grad=True)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr)
    critic_opts = [torch.optim.Adam(c.parameters(), lr=args.critic_lr) for c in critics]
    alpha_opt = torch.optim.Adam([log_alpha], lr=args.alpha_lr)

    def policy(obs: torch.Tensor, repeat: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised tanh-Gaussian action and its log-likelihood; (B, repeat, A) and
        (B, repeat) for ``repeat`` actions per state."""
        if repeat:
            obs = obs.unsqueeze(1).repeat_interleave(repeat, 1)
        mean, log_std = actor(obs).chunk(2, -1)
        log_std = log_std.clamp(-20.0, 2.0)
        eps = torch.randn_like(mean)
        pre_tanh = mean + log_std.exp() * eps
        log_prob = (-0.5 * eps.pow(2) - log_std - HALF_LOG_2PI).sum(-1)
        # log |d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), as torch's TanhTransform
        log_prob = log_prob - (2 * (LOG_2 - pre_tanh - F.softplus(-2 * pre_tanh))).sum(-1)
        return max_action * torch.tanh(pre_tanh), log_prob

    def q(critic: nn.Module, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Q(s, a): (B,) for actions (B, A), (B, n) for (B, n, A)."""
        if act.dim() == 3:
            obs = obs.unsqueeze(1).expand(-1, act.shape[1], -1)
        return critic(torch.cat([obs, act], -1)).squeeze(-1)

    def step():
        b = data.sample(batch_size)
        obs, act, obs_next = b["obs"], b["act"], b["obs_next"]
        new_act, log_pi = policy(obs)
        alpha_loss = -(log_alpha * (log_pi + target_entropy).detach()).mean()
        alpha = log_alpha.exp().detach()
        with frozen(*critics):
            q_new = torch.min(q(critics[0], obs, new_act), q(critics[1], obs, new_act))
        policy_loss = (alpha * log_pi - q_new).mean()

        with torch.no_grad():
            next_act, next_log_pi = policy(obs_next)
            target_q = torch.min(
                q(target_critics[0], obs_next, next_act), q(target_critics[1], obs_next, next_act)
            )
            target_q = target_q - alpha * next_log_pi
            td_target = b["rew"] + (1.0 - b["terminated"]) * args.gamma * target_q
            # the penalty's sampled actions: uniform, current-state and next-state policy
            random_act = low + (high - low) * torch.rand(batch_size, n_actions, ACT_DIM, device=dev)
            current_act, current_log_pi = policy(obs, n_actions)
            next_acts, next_log_pis = policy(obs_next, n_actions)
        qf_loss = torch.zeros((), device=dev)
        for critic in critics:
            q_data = q(critic, obs, act)
            sampled = torch.cat(
                [
                    q(critic, obs, random_act) - log_uniform,
                    q(critic, obs, next_acts) - next_log_pis,
                    q(critic, obs, current_act) - current_log_pi,
                ],
                1,
            )
            ood = torch.logsumexp(sampled / temp, 1) * temp
            qf_loss = qf_loss + F.mse_loss(q_data, td_target)
            qf_loss = qf_loss + args.cql_weight * (ood - q_data).mean()

        alpha_opt.zero_grad()
        alpha_loss.backward()
        alpha_opt.step()
        actor_opt.zero_grad()
        policy_loss.backward()
        actor_opt.step()
        for opt in critic_opts:
            opt.zero_grad()
        qf_loss.backward()
        for opt in critic_opts:
            opt.step()
        polyak(target_critics, critics, args.tau)

    return step


def plain_iql(data: TensorData, hidden: list[int], batch_size: int, args, max_action: float):
    """IQL (Kostrikov et al., 2021), as CORL's iql.py (ImplicitQLearning.train) trains it: V on
    the expectile loss |tau - 1(u < 0)| u^2 of u = min Q'(s, a) - V(s) (target twins at the
    dataset's action); the twin critics (one module, one optimizer, the mean of their squared
    errors) on r + gamma (1 - d) V(s') with V before its update; the soft target update; the
    actor on min(exp(beta u), 100) x -log pi(a|s) (a Gaussian with mean max_action tanh(.) and
    a state-independent log-std in [-20, 2]) or x ||pi(s) - a||^2 (deterministic), with
    torch's CosineAnnealingLR stepped after each actor step. The rewards are used as sampled
    (the scripts' reward scale is one multiplication)."""
    dev = data.device
    actor = mlp(OBS_DIM, hidden, ACT_DIM).to(dev)
    log_std = torch.zeros(ACT_DIM, device=dev, requires_grad=True)
    qf = nn.ModuleList([mlp(OBS_DIM + ACT_DIM, hidden, 1) for _ in range(2)]).to(dev)
    q_target = copy.deepcopy(qf).requires_grad_(False)
    vf = mlp(OBS_DIM, hidden, 1).to(dev)
    actor_params = list(actor.parameters())
    if not args.deterministic_actor:
        actor_params.append(log_std)
    actor_opt = torch.optim.Adam(actor_params, lr=args.actor_lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        actor_opt, T_max=args.epoch * args.epoch_num_steps
    )
    q_opt = torch.optim.Adam(qf.parameters(), lr=args.critic_lr)
    v_opt = torch.optim.Adam(vf.parameters(), lr=args.value_lr)

    def step():
        b = data.sample(batch_size)
        obs, act = b["obs"], b["act"]
        sa = torch.cat([obs, act], 1)
        with torch.no_grad():
            next_v = vf(b["obs_next"]).squeeze(-1)
            target_q = torch.min(q_target[0](sa), q_target[1](sa)).squeeze(-1)
        adv = target_q - vf(obs).squeeze(-1)
        v_loss = (torch.abs(args.expectile - (adv < 0).float()) * adv**2).mean()
        v_opt.zero_grad()
        v_loss.backward()
        v_opt.step()

        targets = b["rew"] + (1.0 - b["terminated"]) * args.gamma * next_v
        q_loss = sum(F.mse_loss(q(sa).squeeze(-1), targets) for q in qf) / 2
        q_opt.zero_grad()
        q_loss.backward()
        q_opt.step()
        polyak([q_target], [qf], args.tau)

        exp_adv = torch.exp(args.beta * adv.detach()).clamp(max=args.max_weight)
        mean = max_action * torch.tanh(actor(obs))
        if args.deterministic_actor:
            bc_losses = ((mean - act) ** 2).sum(1)
        else:
            std = log_std.clamp(-20.0, 2.0).exp()
            bc_losses = -torch.distributions.Normal(mean, std).log_prob(act).sum(-1)
        actor_loss = (exp_adv * bc_losses).mean()
        actor_opt.zero_grad()
        actor_loss.backward()
        actor_opt.step()
        schedule.step()

    return step


def ln_mlp(inp: int, hidden: list[int], out: int) -> nn.Sequential:
    """ReBRAC's critic MLP: Linear -> ReLU -> LayerNorm per hidden layer."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(inp, h), nn.ReLU(), nn.LayerNorm(h)]
        inp = h
    return nn.Sequential(*layers, nn.Linear(inp, out))


def plain_rebrac(
    data: TensorData, done, hidden: list[int], batch_size: int, args, max_action: float
):
    """ReBRAC (Tarasov et al., 2023), as CORL's rebrac.py (update_td3) trains it, in PyTorch:
    the twin LayerNorm critics (one module, one optimizer, the sum of their squared errors) on
    r + gamma (1 - d) (min Q'(s', a') - critic_bc_coef ||a' - a'_data||^2), a' the target
    actor's action plus clipped noise, clipped to the bounds, a'_data the dataset's next action
    (the next row's within an episode, the row's own at an episode's end); every
    ``policy_freq``-th update (from the first) the actor on the mean of
    actor_bc_coef ||pi(s) - a||^2 - min Q(s, pi(s)) / mean|min Q|, then the soft target updates
    of actor and critics (CORL's JAX code averages in the actor's parameters from before its
    step; here after it, as TD3+BC)."""
    dev = data.device
    act = data.t["act"]
    continues = torch.as_tensor(~np.asarray(done[: data.n - 1], dtype=bool), device=dev)
    act_next = act.clone()
    act_next[:-1][continues] = act[1:][continues]
    actor = mlp(OBS_DIM, hidden, ACT_DIM).to(dev)
    critic = nn.ModuleList([ln_mlp(OBS_DIM + ACT_DIM, hidden, 1) for _ in range(2)]).to(dev)
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.critic_lr)
    total_it = [0]

    def pi(net: nn.Module, state: torch.Tensor) -> torch.Tensor:
        return max_action * torch.tanh(net(state))

    def min_q(net: nn.ModuleList, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        sa = torch.cat([state, action], 1)
        return torch.min(net[0](sa), net[1](sa)).squeeze(-1)

    def step():
        idx = torch.randint(data.n, (batch_size,), device=dev)
        b = {k: v[idx] for k, v in data.t.items()}
        state, action, next_state = b["obs"], b["act"], b["obs_next"]
        with torch.no_grad():
            noise = (torch.randn_like(action) * args.policy_noise).clamp(
                -args.noise_clip, args.noise_clip
            )
            next_action = (pi(actor_target, next_state) + noise).clamp(-max_action, max_action)
            penalty = ((next_action - act_next[idx]) ** 2).sum(-1)
            next_q = min_q(critic_target, next_state, next_action) - args.critic_bc_coef * penalty
            target_q = b["rew"] + (1.0 - b["terminated"]) * args.gamma * next_q
        sa = torch.cat([state, action], 1)
        critic_loss = sum(((c(sa).squeeze(-1) - target_q) ** 2).mean() for c in critic)
        critic_opt.zero_grad()
        critic_loss.backward()
        critic_opt.step()
        if total_it[0] % args.update_actor_freq == 0:
            new_action = pi(actor, state)
            with frozen(critic):
                q = min_q(critic, state, new_action)
            lmbda = 1.0 / q.abs().mean().detach()
            bc = ((new_action - action) ** 2).sum(-1)
            actor_loss = (args.actor_bc_coef * bc - lmbda * q).mean()
            actor_opt.zero_grad()
            actor_loss.backward()
            actor_opt.step()
            polyak([critic_target, actor_target], [critic, actor], args.tau)
        total_it[0] += 1

    return step


def plain_bcq(data: TensorData, hidden: list[int], batch_size: int, args, max_action: float):
    """BCQ (Fujimoto et al., 2019), as their reference BCQ.py trains it: the VAE on
    reconstruction + KL / 2; the twin critics (one module, one optimizer) on the soft clipped
    double-Q target lmbda min + (1 - lmbda) max of the target critics at 10 VAE-decoded actions
    per next state, each perturbed by the *target* perturbation network (Algorithm 1), best of
    the 10 taken; the perturbation network on -Q1(s, xi(s, a_vae)); soft target updates of
    critics and perturbation network."""
    dev, repeats = data.device, 10
    latent = args.latent_dim or 2 * ACT_DIM
    vae_hidden = args.vae_hidden_sizes
    vae = nn.ModuleDict(
        {
            # e1, e2 (ReLU) then the mean and log-std layers; d1, d2 (ReLU), d3
            "encoder": nn.Sequential(
                mlp(OBS_DIM + ACT_DIM, vae_hidden[:-1], vae_hidden[-1]), nn.ReLU()
            ),
            "mean": nn.Linear(vae_hidden[-1], latent),
            "log_std": nn.Linear(vae_hidden[-1], latent),
            "decoder": mlp(OBS_DIM + latent, vae_hidden, ACT_DIM),
        }
    ).to(dev)
    actor = mlp(OBS_DIM + ACT_DIM, hidden, ACT_DIM).to(dev)  # the perturbation xi(s, a)
    critic = nn.ModuleList([mlp(OBS_DIM + ACT_DIM, hidden, 1) for _ in range(2)]).to(dev)
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    vae_opt = torch.optim.Adam(vae.parameters(), lr=args.vae_lr)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.actor_lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.critic_lr)

    def decode(state: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            z = torch.randn(state.shape[0], latent, device=dev).clamp(-0.5, 0.5)
        return max_action * torch.tanh(vae["decoder"](torch.cat([state, z], 1)))

    def perturb(net: nn.Module, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        a = args.phi * max_action * torch.tanh(net(torch.cat([state, action], 1)))
        return (a + action).clamp(-max_action, max_action)

    def step():
        b = data.sample(batch_size)
        state, action = b["obs"], b["act"]
        not_done = 1.0 - b["terminated"][:, None]
        # variational auto-encoder
        z = vae["encoder"](torch.cat([state, action], 1))
        mean, std = vae["mean"](z), vae["log_std"](z).clamp(-4, 15).exp()
        recon = decode(state, mean + std * torch.randn_like(std))
        kl_loss = -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean()
        vae_loss = F.mse_loss(recon, action) + 0.5 * kl_loss
        vae_opt.zero_grad()
        vae_loss.backward()
        vae_opt.step()
        # critics
        with torch.no_grad():
            next_state = b["obs_next"].repeat_interleave(repeats, 0)
            next_sa = torch.cat(
                [next_state, perturb(actor_target, next_state, decode(next_state))], 1
            )
            target_q1, target_q2 = critic_target[0](next_sa), critic_target[1](next_sa)
            target_q = args.lmbda * torch.min(target_q1, target_q2) + (1.0 - args.lmbda) * (
                torch.max(target_q1, target_q2)
            )
            target_q = target_q.reshape(batch_size, -1).max(1)[0].reshape(-1, 1)
            target_q = b["rew"][:, None] + not_done * args.gamma * target_q
        sa = torch.cat([state, action], 1)
        critic_loss = F.mse_loss(critic[0](sa), target_q) + F.mse_loss(critic[1](sa), target_q)
        critic_opt.zero_grad()
        critic_loss.backward()
        critic_opt.step()
        # perturbation model, through DPG
        with torch.no_grad():
            sampled_actions = decode(state)
        perturbed_actions = perturb(actor, state, sampled_actions)
        with frozen(critic):
            actor_loss = -critic[0](torch.cat([state, perturbed_actions], 1)).mean()
        actor_opt.zero_grad()
        actor_loss.backward()
        actor_opt.step()
        polyak([critic_target, actor_target], [critic, actor], args.tau)

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
    """Stacked frames of an Atari buffer gathered on the device (stored uint8, sampled as
    floats in [0, 1])."""

    def __init__(self, buffer, device: torch.device) -> None:
        n = len(buffer)
        self.n, self.device = n, device
        self.frames = torch.as_tensor(buffer.obs[:n], device=device)  # (n, 84, 84)
        self.act = torch.as_tensor(buffer.act[:n], device=device).long()
        self.rew = torch.as_tensor(buffer.rew[:n], device=device).float()
        self.terminated = torch.as_tensor(buffer.terminated[:n], device=device).float()
        self.offsets = torch.arange(-3, 1, device=device)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(3, self.n - 1, (batch_size,), device=self.device)
        stack = idx[:, None] + self.offsets  # episode boundaries ignored: timing only
        return {
            "obs": self.frames[stack].float() / 255,
            "obs_next": self.frames[stack + 1].float() / 255,
            "act": self.act[idx],
            "rew": self.rew[idx],
            "terminated": self.terminated[idx],
        }


def atari_head(out: int) -> nn.Sequential:
    """Nature-DQN features -> 512 -> ``out`` (the fully connected part of the Nature DQN)."""
    return mlp(3136, [512], out)


def plain_atari_il(data: FrameData, batch_size: int, args):
    """Behaviour cloning on Atari: the Nature CNN classifies the dataset's actions
    (cross-entropy)."""
    model = nn.Sequential(nature_cnn(), atari_head(NUM_ACTIONS)).to(data.device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)

    def step():
        b = data.sample(batch_size)
        loss = F.cross_entropy(model(b["obs"]), b["act"])
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def plain_atari_bcq(data: FrameData, batch_size: int, args):
    """Discrete BCQ (Fujimoto et al., 2019, "Benchmarking Batch Deep RL Algorithms"), as their
    reference discrete_BCQ.py trains it: one network, the Nature CNN with a Q head and an
    imitation head; the next action is the greedy Q among the actions whose imitation
    probability is at least ``threshold`` times the largest, evaluated by the target network's
    Q; Huber TD loss + imitation NLL + 1e-2 x the imitation logits' L2; the target network
    copied every ``target_update_frequency`` updates."""
    net = nn.ModuleDict(
        {"conv": nature_cnn(), "q": atari_head(NUM_ACTIONS), "i": atari_head(NUM_ACTIONS)}
    ).to(data.device)
    target = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    iterations = [0]

    def step():
        b = data.sample(batch_size)
        state, action = b["obs"], b["act"][:, None]
        not_done = 1.0 - b["terminated"][:, None]
        with torch.no_grad():
            c = net["conv"](b["obs_next"])
            q, imt = net["q"](c), F.log_softmax(net["i"](c), dim=1).exp()
            imt = (imt / imt.max(1, keepdim=True)[0] > args.unlikely_action_threshold).float()
            # a large negative number masks the unlikely actions from the argmax
            next_action = (imt * q + (1 - imt) * -1e8).argmax(1, keepdim=True)
            q_target = target["q"](target["conv"](b["obs_next"]))  # only the Q head is read
            target_q = b["rew"][:, None] + not_done * args.gamma * q_target.gather(1, next_action)
        c = net["conv"](state)
        current_q = net["q"](c).gather(1, action)
        i = net["i"](c)
        q_loss = F.smooth_l1_loss(current_q, target_q)
        i_loss = F.nll_loss(F.log_softmax(i, dim=1), action.reshape(-1))
        loss = q_loss + i_loss + args.imitation_logits_penalty * i.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        iterations[0] += 1
        if iterations[0] % args.target_update_freq == 0:
            hard_copy(target, net)

    return step


def plain_atari_cql(data: FrameData, batch_size: int, args):
    """Discrete CQL(H) on QR-DQN (Kumar et al., 2020; their Atari code, batch_rl's
    QuantileAgent): the quantile-regression Huber loss of Dabney et al. (2018, eq. 9-10:
    kappa 1, quantile midpoints, summed over the predicted quantiles and averaged over the
    target ones) plus min_q_weight x (E log-sum-exp_a Q(s, a) - E Q(s, a_data)), Q the mean
    of the quantiles; the target network copied every ``target_update_freq`` updates.
    Departure from that code: a* = argmax of the *online* network's Q at s' (double DQN, as
    the scripts' QR-DQN/Tianshou), evaluated by the target network, where CQL's code takes
    the target network's own argmax; kept so that both paths do the same arithmetic (one
    no-grad CNN forward more per update)."""
    dev, num_atoms, num_actions = data.device, args.num_quantiles, NUM_ACTIONS
    net = nn.Sequential(
        nature_cnn(), atari_head(num_actions * num_atoms), nn.Unflatten(1, (num_actions, num_atoms))
    ).to(dev)
    target = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    tau_hat = (torch.arange(num_atoms, device=dev) + 0.5) / num_atoms  # quantile midpoints
    rows = torch.arange(batch_size, device=dev)
    training_steps = [0]

    def step():
        if training_steps[0] % args.target_update_freq == 0:
            hard_copy(target, net)
        training_steps[0] += 1
        b = data.sample(batch_size)
        action = b["act"]
        with torch.no_grad():  # the target distribution r + gamma Z'(s', a*)
            next_qt_argmax = net(b["obs_next"]).mean(2).argmax(1)
            next_logits = target(b["obs_next"])[rows, next_qt_argmax]  # (B, atoms)
            not_terminal = 1.0 - b["terminated"][:, None]
            target_distribution = b["rew"][:, None] + args.gamma * not_terminal * next_logits
        logits = net(b["obs"])  # (B, actions, atoms)
        chosen_action_logits = logits[rows, action]  # (B, atoms)
        # u[b, i, j] = T theta_j - theta_i
        bellman_errors = target_distribution[:, None, :] - chosen_action_logits[:, :, None]
        abs_errors = bellman_errors.abs()
        huber_loss = torch.where(abs_errors <= 1.0, 0.5 * bellman_errors.pow(2), abs_errors - 0.5)
        quantile_huber_loss = (tau_hat[None, :, None] - (bellman_errors < 0).float()).abs()
        quantile_huber_loss = quantile_huber_loss * huber_loss
        loss = quantile_huber_loss.mean(2).sum(1).mean()
        q_values = logits.mean(2)
        dataset_expec = q_values[rows, action].mean()
        negative_sampling = torch.logsumexp(q_values, 1).mean()
        loss = loss + args.min_q_weight * (negative_sampling - dataset_expec)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def plain_atari_crr(data: FrameData, batch_size: int, args):
    """Discrete CRR (Wang et al., 2020), exp mode: the critic on the TD target
    r + gamma E_{a'~pi'(s')} Q'(s', a') of the target actor and critic; the actor on
    -E[f(s, a) log pi(a|s)] with each sample's weight f = min(exp(A(s, a) / beta), ratio
    bound), A(s, a) = Q(s, a) - E_{a'~pi(s)} Q(s, a') of the current critic, a constant of
    the actor loss (eq. 3); a CQL term on the critic for min_q_weight > 0 ("CRR w/ CQL"). Actor
    and critic heads share the Nature CNN and one optimizer (as the scripts' networks); the
    targets copied every ``target_update_freq`` updates."""
    if args.policy_improvement_mode != "exp":
        raise NotImplementedError("plain CRR: the exp mode (the script's default)")
    net = nn.ModuleDict(
        {"conv": nature_cnn(), "pi": atari_head(NUM_ACTIONS), "q": atari_head(NUM_ACTIONS)}
    ).to(data.device)
    target = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    iterations = [0]

    def step():
        if iterations[0] % args.target_update_freq == 0:
            hard_copy(target, net)
        iterations[0] += 1
        b = data.sample(batch_size)
        action = b["act"][:, None]
        with torch.no_grad():
            c = target["conv"](b["obs_next"])
            next_v = (F.softmax(target["pi"](c), dim=1) * target["q"](c)).sum(1)
            target_q = b["rew"] + args.gamma * (1.0 - b["terminated"]) * next_v
        c = net["conv"](b["obs"])
        q, log_pi = net["q"](c), F.log_softmax(net["pi"](c), dim=1)
        q_data = q.gather(1, action).squeeze(1)
        critic_loss = 0.5 * F.mse_loss(q_data, target_q)
        with torch.no_grad():
            advantage = q_data - (log_pi.exp() * q).sum(1)
            weight = torch.exp(advantage / args.beta).clamp(max=args.ratio_upper_bound)
        actor_loss = -(weight * log_pi.gather(1, action).squeeze(1)).mean()
        loss = actor_loss + critic_loss
        if args.min_q_weight > 0:
            loss = loss + args.min_q_weight * (torch.logsumexp(q, 1) - q_data).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


PLAIN_ATARI = {
    "atari_il": plain_atari_il,
    "atari_bcq": plain_atari_bcq,
    "atari_cql": plain_atari_cql,
    "atari_crr": plain_atari_crr,
}


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
    batch_size = 32 if size == "tiny" else FULL_BATCH.get(name, 256)
    argv = ["--device", str(device), "--batch-size", str(batch_size)]
    if hidden:
        argv += ["--hidden-sizes", *map(str, hidden)]
        if name == "bcq":
            argv += ["--vae-hidden-sizes", "32", "32"]
    algorithm, script_args, spec = script_algorithm(SCRIPTS[name], argv)
    hidden = script_args.hidden_sizes
    row = {"algorithm": name, "size": size, "hidden": hidden, "batch": batch_size}
    torch.manual_seed(0)
    data = TensorData(buffer, device)
    # the paper's update with the script's networks and hyperparameters (its parsed arguments)
    plain = {
        "bc": lambda: plain_bc(data, hidden, batch_size, script_args, spec.max_action),
        "td3_bc": lambda: plain_td3_bc(data, hidden, batch_size, script_args, spec.max_action),
        "cql": lambda: plain_cql(data, hidden, batch_size, script_args, spec.env.action_space),
        "bcq": lambda: plain_bcq(data, hidden, batch_size, script_args, spec.max_action),
        "iql": lambda: plain_iql(data, hidden, batch_size, script_args, spec.max_action),
        "rebrac": lambda: plain_rebrac(
            data, buffer.done, hidden, batch_size, script_args, spec.max_action
        ),
    }[name]()

    def rebuild():
        return script_algorithm(SCRIPTS[name], argv)[0]

    time_paths(row, algorithm, rebuild, plain, buffer, device, batch_size, args)
    return row


def atari_row(name, buffer, device, args) -> dict:
    batch_size = 32
    argv = ["--device", str(device), "--batch-size", str(batch_size)]
    row = {"algorithm": name, "size": "nature-cnn", "hidden": [512], "batch": batch_size}
    algorithm, script_args = atari_algorithm(name, argv)
    torch.manual_seed(0)
    plain = PLAIN_ATARI[name](FrameData(buffer, device), batch_size, script_args)

    def rebuild():
        return atari_algorithm(name, argv)[0]

    time_paths(row, algorithm, rebuild, plain, buffer, device, batch_size, args, warmup=3)
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
    parser.add_argument(
        "--algos",
        nargs="*",
        default=None,
        choices=[*CONTINUOUS, *ATARI],
        help="default: all; the Atari ones named here run whatever --sizes says",
    )
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
    # the Atari rows have one size (the Nature CNN): by default they run with "full"
    atari_anyway = args.algos is not None
    if args.algos is None:
        args.algos = [*CONTINUOUS, *ATARI]
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
        if atari and ("full" in args.sizes or atari_anyway):
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
