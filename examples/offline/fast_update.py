"""A fast path for the offline scripts' gradient updates (``--compile``, default on CUDA).

Tianshou runs one update as many small eager steps: sample a numpy batch, compute targets in
numpy, call each network through ``Batch`` objects, step three optimizers, soft-update the
targets, and read every loss back with ``.item()``. For 256x256 networks at batch 256 most of that
time is Python and kernel-launch overhead, not arithmetic. This module runs the *same maths* on
the *same parameters* as one compiled function:

* the dataset lives as tensors on the training device and batches are sampled there
  (``DeviceDataset``), so no host-to-device copy per update;
* the whole update (target, both critics, actor, temperature, target networks) is written
  functionally with ``torch.func`` and Adam in plain tensor ops, and compiled as ONE graph with
  ``torch.compile``; on CUDA the compiled step is also captured in a CUDA graph, so one update is
  one graph launch;
* nothing inside reads values back to the host: losses are summed on the device and handed to the
  trainer's logger every ``stats_interval`` updates (as the mean over those updates).

The parameters, Adam moments and target networks the step updates are the Tianshou algorithm's
own tensors (updated in place), so ``algorithm.state_dict()``, checkpoints, resume, evaluation and
the trainer's epochs work unchanged. ``make_fast_update`` returns None for algorithms without a
fast step; the scripts then use Tianshou's update. If compilation fails, the step falls back to
Tianshou's own update (with one line saying why).

Supported: TD3+BC, CQL (incl. Lagrange multiplier and Cal-QL), BCQ and continuous behaviour
cloning; for the Atari scripts (fast_update_atari.py, with stacked frames on the device) discrete
imitation learning, discrete BCQ, discrete CQL and discrete CRR (1-step returns).
test/test_fast_path.py checks losses and parameters against Tianshou's update from the same seed
and batch. What Tianshou itself would need for this upstream is listed in benchmarks/README.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tianshou.algorithm import BCQ, CQL, TD3BC
from tianshou.algorithm.algorithm_base import Algorithm, TrainingStats
from tianshou.algorithm.imitation.bcq import BCQTrainingStats
from tianshou.algorithm.imitation.cql import CQLTrainingStats
from tianshou.algorithm.imitation.imitation_base import (
    ImitationTrainingStats,
    OfflineImitationLearning,
)
from tianshou.algorithm.modelfree.td3 import TD3TrainingStats
from tianshou.data import ReplayBuffer
from torch import Tensor
from torch.func import functional_call, grad_and_value, vmap

if TYPE_CHECKING:
    from fast_update_atari import FrameStackDataset

Params = dict[str, Tensor]
Batch = dict[str, Tensor]

# log(1 - tanh(x)^2 + eps): the epsilon Tianshou's SAC uses in its tanh correction
_TANH_EPS = float(np.finfo(np.float32).eps)
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


# ----------------------------------------------------------------------------------------------
# Data on the device
# ----------------------------------------------------------------------------------------------


class DeviceDataset:
    """The transitions of a full ReplayBuffer as tensors on the training device.

    ``sample`` draws indices uniformly with replacement (like ``ReplayBuffer.sample``) from the
    device's default torch generator, which the run's checkpoints save and restore.
    """

    FIELDS = ("obs", "act", "rew", "terminated", "done", "obs_next")

    def __init__(self, buffer: ReplayBuffer, device: str | torch.device) -> None:
        size = len(buffer)
        self.size = size
        self.device = torch.device(device)
        self.tensors: Batch = {}
        for key in self.FIELDS:
            array = np.asarray(getattr(buffer, key)[:size])
            dtype = torch.float32 if array.dtype.kind in "fb" else None
            self.tensors[key] = torch.as_tensor(array, device=self.device, dtype=dtype)
        # Cal-QL: CQL.process_buffer adds each transition's Monte-Carlo return
        returns = getattr(buffer, "calibration_returns", None)
        if returns is not None:
            self.tensors["calibration_returns"] = torch.as_tensor(
                np.asarray(returns)[:size], device=self.device, dtype=torch.float32
            )

    def sample(self, batch_size: int) -> Batch:
        indices = torch.randint(self.size, (batch_size,), device=self.device)
        return self.gather(indices)

    def gather(self, indices: Tensor) -> Batch:
        return {key: tensor[indices] for key, tensor in self.tensors.items()}


class ReplayTensors:
    """An online replay buffer as preallocated tensors on the training device (FIFO once full).

    ``sample`` draws uniformly with replacement from the device's default torch generator; the
    number of stored rows is a device tensor, so a compiled step that samples here is traced
    once, not once per size.
    """

    FIELDS = ("obs", "act", "rew", "terminated", "obs_next")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: str | torch.device):
        self.capacity = capacity
        self.device = torch.device(device)
        widths = {"obs": obs_dim, "act": act_dim, "obs_next": obs_dim}
        self.tensors: Batch = {
            key: torch.zeros((capacity, widths[key]) if key in widths else (capacity,),
                             device=self.device)
            for key in self.FIELDS
        }  # fmt: skip
        self.count = 0  # rows added so far (host side)
        self.size = torch.zeros((), dtype=torch.int64, device=self.device)  # rows stored

    def add(self, obs, act, rew: float, terminated: bool, obs_next) -> None:
        row = self.count % self.capacity
        values = {"obs": obs, "act": act, "rew": rew, "terminated": float(terminated),
                  "obs_next": obs_next}  # fmt: skip
        for key, value in values.items():
            self.tensors[key][row] = torch.as_tensor(value, dtype=torch.float32)
        self.count += 1
        self.size.fill_(min(self.count, self.capacity))

    def extend(self, obs, act, rew, terminated, obs_next) -> None:
        """Rows in order, as ``add`` one by one would store them (arrays of equal length)."""
        columns = {"obs": obs, "act": act, "rew": rew, "terminated": terminated,
                   "obs_next": obs_next}  # fmt: skip
        n = len(rew)
        keep = min(n, self.capacity)  # only the last ``capacity`` rows survive a wrap-around
        rows = torch.arange(self.count + n - keep, self.count + n) % self.capacity
        for key, column in columns.items():
            values = torch.as_tensor(np.asarray(column[n - keep :]), dtype=torch.float32)
            self.tensors[key][rows.to(self.device)] = values.to(self.device)
        self.count += n
        self.size.fill_(min(self.count, self.capacity))

    def sample(self, batch_size: int) -> Batch:
        # a 62-bit draw modulo the size: uniform to within 2^-40 for any buffer that fits
        draws = torch.randint(2**62, (batch_size,), device=self.device)
        return {key: tensor[draws % self.size] for key, tensor in self.tensors.items()}


# ----------------------------------------------------------------------------------------------
# Adam and soft target updates on the algorithm's own tensors
# ----------------------------------------------------------------------------------------------


def _param_aliases(module: torch.nn.Module) -> Params:
    """The module's parameters as plain tensors sharing their storage (in-place updates reach
    the module, and through it ``state_dict``)."""
    return {name: p.detach() for name, p in module.named_parameters()}


@dataclass
class FunctionalAdam:
    """``torch.optim.Adam`` (no weight decay, no amsgrad) as tensor ops on its own state.

    The moment estimates and step counters are the tensors in the wrapped optimizer's
    ``state``, so ``optimizer.state_dict()`` (and thus checkpoints) sees every update, and a
    checkpoint written by the plain path continues here and vice versa.
    """

    params: list[Tensor]
    exp_avg: list[Tensor]
    exp_avg_sq: list[Tensor]
    steps: list[Tensor]
    lr: float
    beta1: float
    beta2: float
    eps: float
    max_grad_norm: float | None = None

    @classmethod
    def of(
        cls, optimizer: torch.optim.Optimizer, max_grad_norm: float | None = None
    ) -> FunctionalAdam:
        if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
            raise NotImplementedError(f"fast path supports one-group Adam, not {optimizer}")
        group = optimizer.param_groups[0]
        if group["weight_decay"] or group["amsgrad"] or group["maximize"]:
            raise NotImplementedError("fast path supports Adam without weight decay/amsgrad")
        params = [p for p in group["params"]]
        for p in params:
            state = optimizer.state[p]
            if not state:  # the plain optimizer creates these lazily at its first step
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            # a device step counter: no host sync, and capturable in a CUDA graph
            state["step"] = state["step"].to(p.device, torch.float32)
        states = [optimizer.state[p] for p in params]
        beta1, beta2 = group["betas"]
        return cls(
            params=[p.detach() for p in params],
            exp_avg=[s["exp_avg"] for s in states],
            exp_avg_sq=[s["exp_avg_sq"] for s in states],
            steps=[s["step"] for s in states],
            lr=float(group["lr"]),
            beta1=float(beta1),
            beta2=float(beta2),
            eps=float(group["eps"]),
            max_grad_norm=max_grad_norm,
        )

    @classmethod
    def of_wrapper(cls, wrapped: Algorithm.Optimizer) -> FunctionalAdam:
        """From Tianshou's optimizer wrapper, with its gradient-norm clipping."""
        return cls.of(wrapped._optim, max_grad_norm=wrapped._max_grad_norm)

    def step(self, grads: list[Tensor]) -> None:
        if self.max_grad_norm is not None:  # as torch.nn.utils.clip_grad_norm_
            norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])
            total = torch.linalg.vector_norm(norms)
            scale = torch.clamp(self.max_grad_norm / (total + 1e-6), max=1.0)
            grads = [g * scale for g in grads]
        with torch.no_grad():
            for p, g, m, v, step in zip(
                self.params, grads, self.exp_avg, self.exp_avg_sq, self.steps, strict=True
            ):
                step.add_(1)
                m.lerp_(g, 1 - self.beta1)
                v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
                bias_correction1 = 1 - self.beta1**step
                bias_correction2_sqrt = (1 - self.beta2**step).sqrt()
                denom = (v.sqrt() / bias_correction2_sqrt).add_(self.eps)
                p.sub_(self.lr * m / (bias_correction1 * denom))


def _polyak(targets: list[Tensor], sources: list[Tensor], tau: float) -> None:
    """target <- tau * source + (1 - tau) * target, as Tianshou's soft update."""
    with torch.no_grad():
        torch._foreach_mul_(targets, 1 - tau)
        torch._foreach_add_(targets, sources, alpha=tau)


class LaggedParams:
    """The target networks of an algorithm, as parameter dicts named like their sources."""

    def __init__(self, algorithm: Algorithm) -> None:
        self.by_source: dict[int, Params] = {}
        self.targets: list[Tensor] = []
        self.sources: list[Tensor] = []
        lagged = getattr(algorithm, "_lagged_networks", None)  # None: no target networks
        for pair in lagged._lagged_network_pairs if lagged is not None else []:
            names = [name for name, _ in pair.source.named_parameters()]
            targets = [p.detach() for p in pair.target.parameters()]
            self.by_source[id(pair.source)] = dict(zip(names, targets, strict=True))
            self.targets += targets
            self.sources += [p.detach() for p in pair.source.parameters()]

    def of(self, source: torch.nn.Module) -> Params:
        return self.by_source[id(source)]

    def soft_update(self, tau: float) -> None:
        _polyak(self.targets, self.sources, tau)

    def copy_sources(self) -> None:
        """target <- source, as Tianshou's full_parameter_update (the DQN-style hard update)."""
        with torch.no_grad():
            torch._foreach_copy_(self.targets, self.sources)


# ----------------------------------------------------------------------------------------------
# The update steps: the maths of Tianshou's _preprocess_batch + _update_with_batch
# ----------------------------------------------------------------------------------------------


class FunctionalStep:
    """One algorithm's update as a function of a batch; mutates the algorithm's tensors.

    ``__call__(batch, variant)`` returns a 1-d tensor of the step's statistics, in the order of
    ``stat_names``; ``variant`` is a Python value that selects a branch at trace time (e.g.
    whether TD3's delayed actor update happens at this step).
    """

    stat_names: tuple[str, ...]

    def variant(self) -> object:
        """The branch of the next step (host-side state only, no device sync)."""
        return None

    def advance(self) -> None:
        """Host-side bookkeeping after a step."""

    def __call__(self, batch: Batch, variant: object) -> Tensor:
        raise NotImplementedError

    def to_stats(self, values: list[float]) -> TrainingStats:
        raise NotImplementedError


def _critic(module: torch.nn.Module, params: Params, obs: Tensor, act: Tensor) -> Tensor:
    return functional_call(module, params, (obs, act))


def _actor(module: torch.nn.Module, params: Params, obs: Tensor) -> Tensor:
    return functional_call(module, params, (obs,))[0]


def _stack(params1: Params, params2: Params) -> Params:
    return {name: torch.stack([params1[name], params2[name]]) for name in params1}


def tanh_gaussian_sample(
    actor: torch.nn.Module, params: Params, obs: Tensor
) -> tuple[Tensor, Tensor]:
    """SACPolicy in training: tanh of a reparameterised Gaussian sample and its log-prob."""
    (loc, scale), _ = functional_call(actor, params, (obs,))
    pre_tanh = loc + torch.randn(loc.shape, device=loc.device) * scale
    # Independent(Normal(loc, scale), 1).log_prob, as torch.distributions computes it
    log_density = -((pre_tanh - loc) ** 2) / (2 * scale**2) - scale.log() - _LOG_SQRT_2PI
    log_prob = log_density.sum(-1, keepdim=True)
    act = torch.tanh(pre_tanh)
    log_prob = log_prob - torch.log(1 - act.pow(2) + _TANH_EPS).sum(-1, keepdim=True)
    return act, log_prob


class _ActorTwinCriticStep(FunctionalStep):
    """Set-up shared by the actor + twin-critic algorithms: parameter aliases of the actor and
    both critics, their target copies, and functional Adam over the optimizers' own state.

    ``ensemble=True`` evaluates the twin critics as one batched network (``vmap`` over their
    stacked parameters: one batched matmul per layer instead of two), for the targets, the
    critic losses and the actor's Q; the maths is the same (test_fast_path.py checks both).
    """

    def __init__(self, algorithm: TD3BC | CQL, ensemble: bool = False) -> None:
        self.algo = algorithm
        self.ensemble = ensemble
        self.actor = algorithm.policy.actor
        self.actor_params = _param_aliases(self.actor)
        self.critic1_params = _param_aliases(algorithm.critic)
        self.critic2_params = _param_aliases(algorithm.critic2)
        self.lagged = LaggedParams(algorithm)
        self.actor_optim = FunctionalAdam.of_wrapper(algorithm.policy_optim)
        self.critic1_optim = FunctionalAdam.of_wrapper(algorithm.critic_optim)
        self.critic2_optim = FunctionalAdam.of_wrapper(algorithm.critic2_optim)
        self.device = next(self.actor.parameters()).device

    def min_q(self, obs: Tensor, act: Tensor, *, target: bool) -> Tensor:
        """min(Q1, Q2)(obs, act) of the target critics, or of the current ones (as constants:
        gradients reach ``act`` only)."""
        critic1, critic2 = self.algo.critic, self.algo.critic2
        if target:
            params1, params2 = self.lagged.of(critic1), self.lagged.of(critic2)
        else:
            params1, params2 = self.critic1_params, self.critic2_params
        if not self.ensemble:
            return torch.min(
                _critic(critic1, params1, obs, act), _critic(critic2, params2, obs, act)
            )
        both = vmap(lambda params: _critic(critic1, params, obs, act))(_stack(params1, params2))
        return both.min(0).values

    def critic_grads(
        self, loss_fn: Callable[..., Tensor | tuple[Tensor, Tensor]], *, has_aux: bool = False
    ) -> tuple[tuple[Params, Params], tuple[object, object]]:
        """Gradients and values of ``loss_fn(params, module)`` for each critic: (grads1,
        grads2), (value1, value2), where a value is ``(loss, aux)`` with ``has_aux``."""
        critic1, critic2 = self.algo.critic, self.algo.critic2
        grad_fn = grad_and_value(loss_fn, has_aux=has_aux)
        if not self.ensemble:
            grads1, value1 = grad_fn(self.critic1_params, critic1)
            grads2, value2 = grad_fn(self.critic2_params, critic2)
            return (grads1, grads2), (value1, value2)
        # both critics have the same architecture: critic1's module runs either's parameters
        stacked = _stack(self.critic1_params, self.critic2_params)
        grads, values = vmap(lambda params: grad_fn(params, critic1))(stacked)
        split = [{name: g[i] for name, g in grads.items()} for i in (0, 1)]
        unstacked = [torch.utils._pytree.tree_map(lambda v, i=i: v[i], values) for i in (0, 1)]
        return (split[0], split[1]), (unstacked[0], unstacked[1])


class TD3BCStep(_ActorTwinCriticStep):
    """TD3+BC as Tianshou computes it (TD3BC._update_with_batch and TD3's target)."""

    stat_names = ("actor_loss", "critic1_loss", "critic2_loss")

    def __init__(self, algorithm: TD3BC, ensemble: bool = False) -> None:
        super().__init__(algorithm, ensemble)
        if algorithm.n_step_return_horizon != 1:
            raise NotImplementedError("fast TD3+BC supports 1-step returns only")
        # the actor loss of the last delayed update, reported in between (as Tianshou does)
        self.last_actor_loss = torch.zeros((), device=self.device)

    def variant(self) -> bool:
        return self.algo._cnt % self.algo.update_actor_freq == 0

    def advance(self) -> None:
        self.algo._cnt += 1

    def __call__(self, batch: Batch, update_actor: object) -> Tensor:
        algo = self.algo
        obs, act, obs_next = batch["obs"], batch["act"], batch["obs_next"]

        # target: smoothed target-policy action, min of the target critics, 1-step return
        with torch.no_grad():
            act_next = _actor(self.actor, self.lagged.of(self.actor), obs_next)
            noise = torch.randn(act_next.shape, device=act_next.device) * algo.policy_noise
            if algo.noise_clip > 0.0:
                noise = noise.clamp(-algo.noise_clip, algo.noise_clip)
            act_next = act_next + noise
            q_next = self.min_q(obs_next, act_next, target=True)
            not_terminal = 1.0 - batch["terminated"]
            returns = batch["rew"] + algo.gamma * not_terminal * q_next.flatten()

        def critic_loss(params: Params, module: torch.nn.Module) -> Tensor:
            return (_critic(module, params, obs, act).flatten() - returns).pow(2).mean()

        (grads1, grads2), (critic1_loss, critic2_loss) = self.critic_grads(critic_loss)
        self.critic1_optim.step(list(grads1.values()))
        self.critic2_optim.step(list(grads2.values()))

        if update_actor:  # delayed policy update with the just-updated first critic

            def actor_loss(params: Params) -> Tensor:
                act_pred = _actor(self.actor, params, obs)
                q = _critic(algo.critic, self.critic1_params, obs, act_pred)
                lmbda = algo.alpha / q.abs().mean().detach()
                return -lmbda * q.mean() + F.mse_loss(act_pred, act)

            grads, loss = grad_and_value(actor_loss)(self.actor_params)
            self.actor_optim.step(list(grads.values()))
            self.lagged.soft_update(algo.tau)
            self.last_actor_loss.copy_(loss.detach())
        return torch.stack([self.last_actor_loss, critic1_loss, critic2_loss]).detach()

    def to_stats(self, values: list[float]) -> TrainingStats:
        return TD3TrainingStats(**dict(zip(self.stat_names, values, strict=True)))


class SACStep(_ActorTwinCriticStep):
    """Online SAC (Haarnoja et al., 2018, with the automatic temperature of their follow-up),
    in the order of Tianshou's SAC._update_with_batch: both critics on the soft 1-step target,
    the actor on the updated critics, the temperature, then the soft target update.

    The target masks with ``terminated`` (a time-out is not an end: it bootstraps), as the
    paper does. Used by make_d4rl_dataset.py train, whose buffer is a ``ReplayTensors``.
    """

    stat_names = ("actor_loss", "critic1_loss", "critic2_loss", "alpha", "alpha_loss")

    def __init__(self, algorithm: Algorithm, ensemble: bool = False) -> None:
        super().__init__(algorithm, ensemble)  # type: ignore[arg-type]
        alpha = algorithm.alpha
        if not hasattr(alpha, "_log_alpha"):
            raise NotImplementedError("the SAC step supports the automatic temperature only")
        self.log_alpha = alpha._log_alpha.detach()
        self.alpha_optim = FunctionalAdam.of(alpha._optim)
        self.target_entropy = float(alpha._target_entropy)

    def __call__(self, batch: Batch, variant: object) -> Tensor:
        algo = self.algo
        obs, act = batch["obs"], batch["act"]
        alpha = self.log_alpha.exp()

        with torch.no_grad():  # soft value of the next state under the current actor
            act_next, log_pi_next = tanh_gaussian_sample(
                self.actor, self.actor_params, batch["obs_next"]
            )
            q_next = self.min_q(batch["obs_next"], act_next, target=True) - alpha * log_pi_next
            not_terminal = 1.0 - batch["terminated"]
            returns = batch["rew"] + algo.gamma * not_terminal * q_next.flatten()

        def critic_loss(params: Params, module: torch.nn.Module) -> Tensor:
            return (_critic(module, params, obs, act).flatten() - returns).pow(2).mean()

        (grads1, grads2), (critic1_loss, critic2_loss) = self.critic_grads(critic_loss)
        self.critic1_optim.step(list(grads1.values()))
        self.critic2_optim.step(list(grads2.values()))

        def actor_loss(params: Params) -> tuple[Tensor, Tensor]:
            act_pred, log_prob = tanh_gaussian_sample(self.actor, params, obs)
            q = self.min_q(obs, act_pred, target=False)
            return (alpha * log_prob.flatten() - q.flatten()).mean(), log_prob

        grads, (loss_actor, log_pi) = grad_and_value(actor_loss, has_aux=True)(self.actor_params)
        self.actor_optim.step(list(grads.values()))

        entropy_deficit = self.target_entropy + log_pi.detach()  # target - entropy

        def alpha_loss(log_alpha: Tensor) -> Tensor:
            return -(log_alpha * entropy_deficit).mean()

        grad, loss_alpha = grad_and_value(alpha_loss)(self.log_alpha)
        self.alpha_optim.step([grad])
        self.lagged.soft_update(algo.tau)
        stats = [loss_actor, critic1_loss, critic2_loss, alpha, loss_alpha]
        return torch.stack([s.reshape(()) for s in stats]).detach()

    def to_stats(self, values: list[float]) -> TrainingStats:
        from tianshou.algorithm.modelfree.sac import SACTrainingStats

        return SACTrainingStats(**dict(zip(self.stat_names, values, strict=True)))


def _repeat_rows(x: Tensor, repeats: int) -> Tensor:
    """Each row ``repeats`` times in a row (a static-shape repeat_interleave)."""
    return x.unsqueeze(1).expand(x.shape[0], repeats, *x.shape[1:]).reshape(-1, *x.shape[1:])


class CQLStep(_ActorTwinCriticStep):
    """CQL as Tianshou's CQL._update_with_batch computes it, quirks included.

    Kept from Tianshou on purpose (the fast path must not change the maths; see
    benchmarks/README.md for the upstream notes): the "random" actions are drawn from
    U(-min_action, max_action), i.e. constant when min_action == -max_action; the log-sum-exp runs
    over the three kinds of sampled values per repeated state, not over the repeats; the target
    uses ``done`` (time-outs included) as the terminal mask.
    """

    stat_names = (
        "actor_loss",
        "critic1_loss",
        "critic2_loss",
        "alpha",
        "alpha_loss",
        "cql_alpha_loss",
        "cql_alpha",
    )

    def __init__(self, algorithm: CQL, ensemble: bool = False) -> None:
        super().__init__(algorithm, ensemble)
        alpha = algorithm.alpha
        self.auto_alpha = hasattr(alpha, "_log_alpha")
        if self.auto_alpha:
            self.log_alpha = alpha._log_alpha.detach()
            self.alpha_optim = FunctionalAdam.of(alpha._optim)
            self.target_entropy = float(alpha._target_entropy)
        else:
            self.log_alpha = torch.tensor(math.log(alpha.value), device=self.device)
        # The Lagrange multiplier: Tianshou keeps it outside state_dict (and on CUDA optimises a
        # CPU copy that the loss never reads); here it is optimised on the device, as on CPU.
        self.cql_log_alpha = algorithm.cql_log_alpha.detach()
        self.cql_alpha_optim = FunctionalAdam.of(algorithm.cql_alpha_optim)
        self.cql_alpha_optim.params = [self.cql_log_alpha]
        for name in ("exp_avg", "exp_avg_sq", "steps"):
            tensors = getattr(self.cql_alpha_optim, name)
            setattr(self.cql_alpha_optim, name, [t.to(self.device) for t in tensors])

    def _sample(self, obs: Tensor, params: Params | None = None) -> tuple[Tensor, Tensor]:
        return tanh_gaussian_sample(self.actor, self.actor_params if params is None else params, obs)

    def __call__(self, batch: Batch, variant: object) -> Tensor:
        algo = self.algo
        obs, act, obs_next = batch["obs"], batch["act"], batch["obs_next"]
        batch_size, act_dim = act.shape
        repeats = algo.num_repeat_actions
        alpha = self.log_alpha.exp()

        # actor: E[alpha * log pi - min Q] with the critics before their update
        def actor_loss(params: Params) -> tuple[Tensor, Tensor]:
            act_pred, log_prob = self._sample(obs, params)
            q = self.min_q(obs, act_pred, target=False)
            return (alpha * log_prob - q).mean(), log_prob

        grads, (loss_actor, log_pi) = grad_and_value(actor_loss, has_aux=True)(self.actor_params)
        self.actor_optim.step(list(grads.values()))

        # temperature
        if self.auto_alpha:
            entropy_deficit = self.target_entropy + log_pi.detach()  # target - entropy

            def alpha_loss(log_alpha: Tensor) -> Tensor:
                return -(log_alpha * entropy_deficit).mean()

            grad, loss_alpha = grad_and_value(alpha_loss)(self.log_alpha)
            self.alpha_optim.step([grad])
            alpha = self.log_alpha.exp()
        else:
            loss_alpha = torch.zeros((), device=self.device)

        with torch.no_grad():
            # target: soft value of the next state under the updated actor
            act_next, log_pi_next = self._sample(obs_next)
            q_next = self.min_q(obs_next, act_next, target=True)
            q_next = q_next - alpha * log_pi_next
            returns = batch["rew"] + (1.0 - batch["done"]) * algo.gamma * q_next.flatten()

            # the penalty's sampled actions, shared by both critics
            low, high = -algo.min_action, algo.max_action  # sic: Tianshou's bounds
            random_act = low + (high - low) * torch.rand(
                batch_size * repeats, act_dim, device=self.device
            )
            repeated_obs = _repeat_rows(obs, repeats)
            repeated_obs_next = _repeat_rows(obs_next, repeats)
            act_cur, log_pi_cur = self._sample(repeated_obs)
            act_nxt, log_pi_nxt = self._sample(repeated_obs_next)
            random_log_prob = math.log(0.5**act_dim)
            if algo.calibrated:
                mc_returns = _repeat_rows(batch["calibration_returns"][:, None], repeats)

        def conservative_gap(params: Params, module: torch.nn.Module) -> tuple[Tensor, Tensor]:
            """(TD loss, unweighted penalty before the Lagrange scaling) of one critic."""
            q = _critic(module, params, obs, act).flatten()
            td_loss = F.mse_loss(q, returns)
            random_q = _critic(module, params, repeated_obs, random_act) - random_log_prob
            current_q = _critic(module, params, repeated_obs, act_cur) - log_pi_cur
            next_q = _critic(module, params, repeated_obs, act_nxt) - log_pi_nxt
            if algo.calibrated:
                random_q, current_q, next_q = (
                    torch.max(v, mc_returns) for v in (random_q, current_q, next_q)
                )
            sampled = torch.cat([random_q, current_q, next_q], 1) / algo.temperature
            penalty = (
                torch.logsumexp(sampled, dim=1).mean() * algo.cql_weight * algo.temperature
                - q.mean() * algo.cql_weight
            )
            return td_loss, penalty

        with torch.no_grad():  # the Lagrange scale as it was before this step's update
            if algo.with_lagrange:
                cql_alpha = torch.clamp(
                    self.cql_log_alpha.exp(), algo.alpha_min, algo.alpha_max
                ).reshape(())
            else:
                cql_alpha = torch.ones((), device=self.device)

        def critic_loss(params: Params, module: torch.nn.Module) -> tuple[Tensor, Tensor]:
            td_loss, penalty = conservative_gap(params, module)
            if algo.with_lagrange:
                penalty = penalty - algo.lagrange_threshold
                return td_loss + cql_alpha * penalty, penalty.detach()
            return td_loss + penalty, penalty.detach()

        (grads1, grads2), ((loss_c1, gap1), (loss_c2, gap2)) = self.critic_grads(
            critic_loss, has_aux=True
        )

        if algo.with_lagrange:  # dual ascent on the multiplier, with the same penalties

            def multiplier_loss(log_alpha: Tensor) -> Tensor:
                scale = torch.clamp(log_alpha.exp(), algo.alpha_min, algo.alpha_max)
                return (-(scale * gap1 + scale * gap2) * 0.5).sum()

            grad, loss_cql_alpha = grad_and_value(multiplier_loss)(self.cql_log_alpha)
            self.cql_alpha_optim.step([grad])
        else:
            loss_cql_alpha = torch.zeros((), device=self.device)

        self.critic1_optim.step(list(grads1.values()))
        self.critic2_optim.step(list(grads2.values()))
        self.lagged.soft_update(algo.tau)
        stats = [loss_actor, loss_c1, loss_c2, alpha, loss_alpha, loss_cql_alpha, cql_alpha]
        return torch.stack([s.reshape(()) for s in stats]).detach()

    def to_stats(self, values: list[float]) -> TrainingStats:
        stats = dict(zip(self.stat_names, values, strict=True))
        if not self.auto_alpha:
            stats["alpha_loss"] = None
        if not self.algo.with_lagrange:
            stats["cql_alpha_loss"] = stats["cql_alpha"] = None
        return CQLTrainingStats(**stats)


def _sub_params(params: Params, prefix: str) -> Params:
    """The entries of a module's parameter dict that belong to its submodule ``prefix``."""
    start = prefix + "."
    return {name[len(start) :]: p for name, p in params.items() if name.startswith(start)}


class BCQStep(FunctionalStep):
    """BCQ as Tianshou's BCQ._update_with_batch computes it: VAE, twin critics with the
    clipped double-Q target over VAE-sampled next actions, perturbation actor, targets."""

    stat_names = ("actor_loss", "critic1_loss", "critic2_loss", "vae_loss")

    def __init__(self, algorithm: BCQ) -> None:
        self.algo = algorithm
        policy = algorithm.policy
        self.vae, self.perturbation = policy.vae, policy.actor_perturbation
        self.vae_params = _param_aliases(self.vae)
        self.decoder_params = _sub_params(self.vae_params, "decoder")  # the same tensors
        self.perturbation_params = _param_aliases(self.perturbation)
        self.critic1_params = _param_aliases(policy.critic)
        self.critic2_params = _param_aliases(algorithm.critic2)
        self.lagged = LaggedParams(algorithm)
        self.vae_optim = FunctionalAdam.of_wrapper(algorithm.vae_optim)
        self.perturbation_optim = FunctionalAdam.of_wrapper(algorithm.actor_perturbation_optim)
        self.critic1_optim = FunctionalAdam.of_wrapper(algorithm.critic_optim)
        self.critic2_optim = FunctionalAdam.of_wrapper(algorithm.critic2_optim)
        self.device = next(self.vae.parameters()).device

    def _decode(self, obs: Tensor) -> Tensor:
        """VAE.decode(obs): a latent from N(0, 1) clipped to [-0.5, 0.5], decoded (no grad)."""
        latent = torch.randn(obs.shape[0], self.vae.latent_dim, device=obs.device)
        hidden = functional_call(
            self.vae.decoder, self.decoder_params, (torch.cat([obs, latent.clamp(-0.5, 0.5)], -1),)
        )
        return self.vae.max_action * torch.tanh(hidden)

    def __call__(self, batch: Batch, variant: object) -> Tensor:
        algo, policy = self.algo, self.algo.policy
        obs, act = batch["obs"], batch["act"]
        batch_size = obs.shape[0]

        # VAE: reconstruction + KL(N(mean, std) || N(0, 1)) / 2
        def vae_loss(params: Params) -> Tensor:
            recon, mean, std = functional_call(self.vae, params, (obs, act))
            kl = (-torch.log(std) + (std.pow(2) + mean.pow(2) - 1) / 2).mean()
            return F.mse_loss(act, recon) + kl / 2

        grads, loss_vae = grad_and_value(vae_loss)(self.vae_params)
        self.vae_optim.step(list(grads.values()))

        # target: the best of num_sampled_action VAE actions per next state, each scored by
        # lmbda * min + (1 - lmbda) * max of the target critics (the updated VAE samples them)
        with torch.no_grad():
            obs_next = _repeat_rows(batch["obs_next"], algo.num_sampled_action)
            act_next = self._decode(obs_next)
            q1 = _critic(policy.critic, self.lagged.of(policy.critic), obs_next, act_next)
            q2 = _critic(algo.critic2, self.lagged.of(algo.critic2), obs_next, act_next)
            q_next = algo.lmbda * torch.min(q1, q2) + (1 - algo.lmbda) * torch.max(q1, q2)
            q_next = q_next.reshape(batch_size, -1).max(dim=1)[0].reshape(-1, 1)
            not_done = (1.0 - batch["done"]).reshape(-1, 1)  # sic: Tianshou masks with done
            returns = batch["rew"].reshape(-1, 1) + not_done * algo.gamma * q_next

        def critic_loss(params: Params, module: torch.nn.Module) -> Tensor:
            return F.mse_loss(_critic(module, params, obs, act), returns)

        grads, loss_c1 = grad_and_value(critic_loss)(self.critic1_params, policy.critic)
        self.critic1_optim.step(list(grads.values()))
        grads, loss_c2 = grad_and_value(critic_loss)(self.critic2_params, algo.critic2)
        self.critic2_optim.step(list(grads.values()))

        # perturbation actor: maximise the (updated) first critic at perturbed VAE actions
        with torch.no_grad():
            sampled_act = self._decode(obs)

        def actor_loss(params: Params) -> Tensor:
            perturbed = functional_call(self.perturbation, params, (obs, sampled_act))
            return -_critic(policy.critic, self.critic1_params, obs, perturbed).mean()

        grads, loss_actor = grad_and_value(actor_loss)(self.perturbation_params)
        self.perturbation_optim.step(list(grads.values()))
        self.lagged.soft_update(algo.tau)
        return torch.stack([loss_actor, loss_c1, loss_c2, loss_vae]).detach()

    def to_stats(self, values: list[float]) -> TrainingStats:
        return BCQTrainingStats(**dict(zip(self.stat_names, values, strict=True)))


class BehaviourCloningStep(FunctionalStep):
    """Continuous behaviour cloning: MSE between the actor's and the dataset's actions."""

    stat_names = ("loss",)

    def __init__(self, algorithm: OfflineImitationLearning) -> None:
        if algorithm.policy.action_type != "continuous":
            raise NotImplementedError("fast behaviour cloning supports continuous actions")
        self.actor = algorithm.policy.actor
        self.actor_params = _param_aliases(self.actor)
        self.optim = FunctionalAdam.of_wrapper(algorithm.optim)

    def __call__(self, batch: Batch, variant: object) -> Tensor:
        def loss_fn(params: Params) -> Tensor:
            return F.mse_loss(_actor(self.actor, params, batch["obs"]), batch["act"])

        grads, loss = grad_and_value(loss_fn)(self.actor_params)
        self.optim.step(list(grads.values()))
        return loss.detach().reshape(1)

    def to_stats(self, values: list[float]) -> TrainingStats:
        return ImitationTrainingStats(loss=values[0])


def functional_step(algorithm: Algorithm, twin_ensemble: bool = False) -> FunctionalStep | None:
    """The fast step of ``algorithm``, or None where there is none. ``twin_ensemble``: TD3+BC's
    and CQL's twin critics as one batched network (``_ActorTwinCriticStep``; off by default: on
    the CPU it did not pay, benchmarks/README.md; not yet timed on a GPU)."""
    # imported here: fast_update_atari builds on this module's parts
    from fast_update_atari import discrete_step

    step = discrete_step(algorithm)
    if step is not None:
        return step
    if isinstance(algorithm, TD3BC):
        return TD3BCStep(algorithm, twin_ensemble)
    if isinstance(algorithm, CQL):
        return CQLStep(algorithm, twin_ensemble)
    if isinstance(algorithm, BCQ):
        return BCQStep(algorithm)
    if isinstance(algorithm, OfflineImitationLearning):
        return BehaviourCloningStep(algorithm)
    return None


# ----------------------------------------------------------------------------------------------
# Compilation, CUDA graphs, and the trainer-facing update
# ----------------------------------------------------------------------------------------------


class _CudaGraphed:
    """A step function captured as a CUDA graph: each call replays it (sampling included).

    The first two calls run on a side stream (they compile and warm up; they are real updates),
    the third captures the graph and replays it once, so no update is lost or repeated.
    """

    WARMUP_CALLS = 2

    def __init__(self, fn: Callable[[], Tensor]) -> None:
        self.fn = fn
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: Tensor | None = None

    def __call__(self) -> Tensor:
        self.calls += 1
        if self.calls <= self.WARMUP_CALLS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                output = self.fn()
            torch.cuda.current_stream().wait_stream(side)
            return output
        if self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.output = self.fn()
        self.graph.replay()
        assert self.output is not None
        return self.output


class FastUpdate:
    """Drop-in for ``algorithm.update(buffer, sample_size)`` with the fast step.

    Returns Tianshou ``TrainingStats`` as the trainer expects; to avoid a device-to-host sync per
    update, the losses are averaged on the device over ``stats_interval`` updates and the same
    averages are reported until the next interval ends (Tianshou's logger writes every 100).

    ``cuda_graph`` (default: on CUDA), ``cpp_wrapper`` (default: on CPU) and ``skip_guards``
    switch single levers off, for benchmarks/bench_updates.py to measure each one alone.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        step: FunctionalStep,
        dataset: DeviceDataset | FrameStackDataset,
        *,
        compile: bool = True,
        cuda_graph: bool | None = None,
        cpp_wrapper: bool | None = None,
        skip_guards: bool = True,
        stats_interval: int = 100,
    ) -> None:
        self.algorithm = algorithm
        self.step = step
        self.dataset = dataset
        self.compile = compile
        self.cuda_graph = dataset.device.type == "cuda" if cuda_graph is None else cuda_graph
        self.cpp_wrapper = dataset.device.type == "cpu" if cpp_wrapper is None else cpp_wrapper
        self.skip_guards = skip_guards
        self.stats_interval = stats_interval
        self._runners: dict[object, Callable[[], Tensor]] = {}
        self._stat_sum: Tensor | None = None
        self._stat_count = 0
        self._stats: TrainingStats | None = None
        self.failed: str | None = None  # why compilation failed, if it did
        if compile:
            # random ops as in eager mode: same numbers from the same generator state, and safe
            # to capture in CUDA graphs
            import torch._inductor.config

            torch._inductor.config.fallback_random = True
            # Dynamo checks ~100 guards (every parameter, moment and data tensor) before each
            # call, which costs more than a small update itself. Once a runner is compiled its
            # inputs cannot change: they are this object's own tensors, updated in place, and
            # the runners of different variants and batch sizes differ in closure values, which
            # Dynamo still checks ("differentiating guards"). Built once: building one of these
            # costs ~150 us, entering it ~8 us.
            self._skip_guards = torch.compiler.set_stance(skip_guard_eval_unsafe=True)
            self._skip_guards.__exit__(None, None, None)  # building it set it; only inside `with`

    def _run_fn(self, batch_size: int, variant: object) -> Callable[[], Tensor]:
        def sample_and_step() -> Tensor:
            return self.step(self.dataset.sample(batch_size), variant)

        fn: Callable[[], Tensor] = sample_and_step
        if self.compile:
            # on the CPU, Inductor's C++ wrapper calls the kernels without a Python line per
            # kernel (no effect worth having on CUDA, where the graph is replayed whole)
            options = {"cpp_wrapper": self.cpp_wrapper}
            fn = torch.compile(fn, fullgraph=True, dynamic=False, options=options)
        if self.cuda_graph:
            fn = _CudaGraphed(fn)
        return fn

    def _compile_and_run(self, batch_size: int, variant: object) -> tuple[Callable, Tensor]:
        """Build the runner of a variant and make its first call (which compiles).

        torch 2.11's Inductor crashed on the full-size CQL graph in its loop-reordering pass
        (benchmarks/README.md): after a failure the compile is tried once more with that pass
        off, before giving up. Compilation fails before the step runs, so a retry repeats
        nothing.
        """
        import torch._inductor.config as inductor_config

        try:
            runner = self._run_fn(batch_size, variant)
            return runner, runner()
        except Exception as err:
            if not self.compile:
                raise
            error: Exception = err
        if inductor_config.loop_ordering_after_fusion:
            inductor_config.loop_ordering_after_fusion = False
            print(f"--compile: {_first_line(error)}; retrying without Inductor's loop reordering")
            try:
                runner = self._run_fn(batch_size, variant)
                return runner, runner()
            except Exception as err:
                error = err
        raise CompilationFailed(_first_line(error)) from error

    def run_step(self, batch_size: int) -> Tensor:
        """One update; returns the step's statistics tensor (on the device, no sync)."""
        variant = self.step.variant()
        key = (batch_size, variant)
        runner = self._runners.get(key)
        if runner is None:  # first call of this variant: it compiles (mutates nothing if it fails)
            first = self.compile and not self._runners
            if first:  # the progress bar stands still meanwhile: say why
                print("--compile: compiling the fast update step (a minute or more on a CPU)")
            started = time.time()
            runner, values = self._compile_and_run(batch_size, variant)
            self._runners[key] = runner
            if first:
                print(f"--compile: compiled in {time.time() - started:.0f} s")
        elif self.compile and self.skip_guards:
            try:
                with self._skip_guards:
                    values = runner()
            except RuntimeError as err:  # raised before the step runs: nothing was updated
                if "skip_guard_eval_unsafe" not in str(err):
                    raise
                values = runner()  # Dynamo's caches were reset since: compile again
        else:
            values = runner()
        self.step.advance()
        return values

    def update(self, buffer: ReplayBuffer, sample_size: int) -> TrainingStats:
        """Same signature and result type as Tianshou's ``OfflineAlgorithm.update``."""
        if self.failed is not None:
            return self.algorithm.update(buffer=buffer, sample_size=sample_size)
        started = time.time()
        try:
            values = self.run_step(sample_size)
        except CompilationFailed as err:  # no compiler, or unsupported: Tianshou's update
            self.failed = str(err)
            print(f"--compile: compilation failed ({err}); using Tianshou's update instead")
            return self.algorithm.update(buffer=buffer, sample_size=sample_size)
        self._stat_sum = values.clone() if self._stat_sum is None else self._stat_sum + values
        self._stat_count += 1
        if self._stats is None or self._stat_count >= self.stats_interval:
            means = (self._stat_sum / self._stat_count).tolist()  # the one sync per interval
            self._stats = self.step.to_stats(means)
            self._stat_sum, self._stat_count = None, 0
        stats = self._stats
        stats.train_time = time.time() - started
        return stats


class CompilationFailed(RuntimeError):
    pass


def _first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


def make_fast_update(
    algorithm: Algorithm,
    buffer: ReplayBuffer,
    device: str | torch.device,
    *,
    compile: bool = True,
    cuda_graph: bool | None = None,
    twin_ensemble: bool = False,
    **options: bool,
) -> FastUpdate | None:
    """The fast update of ``algorithm`` over ``buffer`` (already ``process_buffer``-ed), or None
    where this algorithm or configuration has none (the caller keeps Tianshou's update).
    ``options``: FastUpdate's lever switches (``cpp_wrapper``, ``skip_guards``)."""
    try:
        step = functional_step(algorithm, twin_ensemble)
        if step is None:
            return None
        dataset = device_dataset(buffer, device)
    except NotImplementedError as err:
        print(f"--compile: {err}; using Tianshou's update")
        return None
    return FastUpdate(algorithm, step, dataset, compile=compile, cuda_graph=cuda_graph, **options)


def device_dataset(
    buffer: ReplayBuffer, device: str | torch.device
) -> DeviceDataset | FrameStackDataset:
    """The buffer's transitions on the device; frame-stacking buffers (Atari) as frames plus
    index tables (fast_update_atari.FrameStackDataset), so each frame is stored once."""
    from fast_update_atari import FrameStackDataset

    if buffer.stack_num > 1 or not buffer._save_obs_next:
        return FrameStackDataset(buffer, device)
    return DeviceDataset(buffer, device)
