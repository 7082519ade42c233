"""The fast path (fast_update.py) for the offline Atari scripts: stacked frames on the device and
the discrete algorithms' updates (imitation learning, discrete BCQ, discrete CQL, discrete CRR).

The Atari buffer (examples/atari/atari_buffer.py) stores each 84x84 frame once and stacks four
of them when a batch is sampled, walking back with ``ReplayBuffer.prev`` (which stops at an
episode's first frame and repeats it). ``FrameStackDataset`` keeps the frames as one uint8 tensor
and does that walk once, on the host, for every transition: two (N, stack_num) index tables give
the frames of each transition's obs and obs_next, so sampling a batch on the device is two
gathers. The networks get the uint8 stacks Tianshou gives them (NatureCNN scales to [0, 1]).

The steps follow Tianshou 2.0.1's ``_preprocess_batch`` + ``_update_with_batch`` of each
algorithm for 1-step returns (the scripts' default; ``--n-step`` > 1 keeps Tianshou's update),
including the order of the hard target-network updates counted by the algorithm's own
``_iter``. test/test_fast_path_atari.py compares them with Tianshou's update.

Online QR-DQN (examples/atari/atari_qrdqn.py) has a step too (``QRDQNStep``, n-step returns):
its growing replay buffer is sampled on the host by Tianshou, ``nstep_transitions`` adds the
n-step bookkeeping, and ``StagedBatches`` hands each batch to the compiled step
(``updates.select.OnlineUpdate``); test/test_qrdqn_step.py compares it with Tianshou's QRDQN.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tianshou.algorithm import QRDQN, DiscreteBCQ, DiscreteCQL, DiscreteCRR
from tianshou.algorithm.algorithm_base import Algorithm, TrainingStats
from tianshou.algorithm.imitation.discrete_bcq import INF, DiscreteBCQTrainingStats
from tianshou.algorithm.imitation.discrete_cql import DiscreteCQLTrainingStats
from tianshou.algorithm.imitation.discrete_crr import DiscreteCRRTrainingStats
from tianshou.algorithm.imitation.imitation_base import (
    ImitationTrainingStats,
    OfflineImitationLearning,
)
from tianshou.algorithm.modelfree.reinforce import SimpleLossTrainingStats
from tianshou.data import Batch as TianshouBatch
from tianshou.data import PrioritizedReplayBuffer, ReplayBuffer
from tianshou.utils.net.discrete import DiscreteActor, DiscreteCritic
from torch import Tensor
from torch.func import functional_call, grad_and_value

from tianshou_offline import tianshou_adapter
from tianshou_offline.updates.core import (
    Batch,
    FunctionalAdam,
    FunctionalStep,
    LaggedParams,
    Params,
    sub_params,
    tianshou_maths,
)

# ----------------------------------------------------------------------------------------------
# Stacked frames on the device
# ----------------------------------------------------------------------------------------------


class FrameStackDataset:
    """A frame-stacking ReplayBuffer (``stack_num`` > 1 or ``ignore_obs_next``) on the device.

    ``gather(indices)`` gives what ``buffer[indices]`` gives (obs and obs_next stacked exactly as
    ``ReplayBuffer.get`` stacks them), as tensors; ``sample`` draws uniformly with replacement,
    like ``ReplayBuffer.sample`` of a buffer without ``sample_avail``.
    """

    def __init__(self, buffer: ReplayBuffer, device: str | torch.device) -> None:
        if tianshou_adapter.stores_obs_next(buffer):
            raise NotImplementedError("fast path: stacked buffers store no obs_next")
        size = len(buffer)
        self.size = size
        self.device = torch.device(device)
        self.stack_num = buffer.stack_num
        # ReplayBuffer.get: [prev^(k-1)(i), ..., prev(i), i], oldest first; prev stays at an
        # episode's first row, so the first frame repeats. obs_next is the stack of next(i),
        # which stays at i on a done row (obs_next == obs there).
        rows = np.arange(size)
        columns = [rows]
        for _ in range(self.stack_num - 1):
            columns.insert(0, buffer.prev(columns[0]))
        obs_index = np.stack(columns, axis=1)
        obs_next_index = obs_index[buffer.next(rows)]
        self.obs_index = torch.as_tensor(obs_index, dtype=torch.int64, device=self.device)
        self.obs_next_index = torch.as_tensor(obs_next_index, dtype=torch.int64, device=self.device)
        # the frames: no copy on the CPU (the tensor shares the buffer's array), one to a GPU
        self.frames = torch.as_tensor(np.asarray(buffer.obs)[:size]).to(self.device)
        self.tensors: Batch = {}
        for key in ("act", "rew", "terminated", "done"):
            array = np.asarray(getattr(buffer, key)[:size])
            dtype = torch.float32 if array.dtype.kind in "fb" else None
            self.tensors[key] = torch.as_tensor(array, device=self.device, dtype=dtype)

    def sample(self, batch_size: int) -> Batch:
        indices = torch.randint(self.size, (batch_size,), device=self.device)
        return self.gather(indices)

    def _stack(self, table: Tensor, indices: Tensor) -> Tensor:
        stacked = self.frames[table[indices]]  # (B, stack_num, *frame shape)
        return stacked if self.stack_num > 1 else stacked.squeeze(1)

    def gather(self, indices: Tensor) -> Batch:
        batch = {key: tensor[indices] for key, tensor in self.tensors.items()}
        batch["obs"] = self._stack(self.obs_index, indices)
        batch["obs_next"] = self._stack(self.obs_next_index, indices)
        return batch


# ----------------------------------------------------------------------------------------------
# Shared parts of the discrete steps
# ----------------------------------------------------------------------------------------------


def _one_step_return(rew: Tensor, terminated: Tensor, q_next: Tensor, gamma: float) -> Tensor:
    """Algorithm.compute_nstep_return for n = 1: rew + gamma * Q(s') * (not terminated).

    Tianshou computes it in float64 (numpy) and casts to float32; so does this, so both paths
    get the same bits.
    """
    shape = (-1,) + (1,) * (q_next.dim() - 1)
    q_next = q_next * (1.0 - terminated).reshape(shape)
    return (q_next.double() * gamma + rew.double().reshape(shape)).float()


def _head_parts(module: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(feature net, head) of a DiscreteActor (logits) or DiscreteCritic (Q-values)."""
    if isinstance(module, DiscreteActor) and not module.softmax_output:
        return module.preprocess, module.last
    if isinstance(module, DiscreteCritic):
        return module.preprocess, module.last
    raise NotImplementedError(
        f"fast path supports DiscreteActor/DiscreteCritic heads, not {module}"
    )


def _heads(modules: list[torch.nn.Module], params: list[Params], obs: Tensor) -> list[Tensor]:
    """The outputs of heads that share one feature net, the feature net run once.

    Tianshou runs the shared feature net once per head (e.g. BCQ's Q and imitation heads); the
    features are the same, so running it once gives the same values and the same gradients (up to
    float summation order) for half the convolutions.
    """
    features: dict[int, Tensor] = {}
    outputs = []
    for module, module_params in zip(modules, params, strict=True):
        torso, head = _head_parts(module)
        if id(torso) not in features:
            torso_params = sub_params(module_params, "preprocess")
            features[id(torso)] = functional_call(torso, torso_params, (obs,))[0]
        outputs.append(
            functional_call(head, sub_params(module_params, "last"), (features[id(torso)],))
        )
    return outputs


class _DiscreteStep(FunctionalStep):
    """One Adam over all online networks (Tianshou's single optimizer of these algorithms), its
    parameters as one dict named like the optimized module, and the target networks.

    Networks share their feature net, so a network's parameters are a view of that dict
    (``params_of``): gradients of shared tensors add up across heads, as with autograd.
    """

    def __init__(self, algorithm: Algorithm, optim: Algorithm.Optimizer) -> None:
        self.algo = algorithm
        named = list(tianshou_adapter.optimized_module(optim).named_parameters())
        optimized = tianshou_adapter.torch_optimizer(optim).param_groups[0]["params"]
        if [id(p) for _, p in named] != [id(p) for p in optimized]:
            raise NotImplementedError("fast path: optimizer parameters differ from its module's")
        self.optim = FunctionalAdam.of_wrapper(optim)
        self.params: Params = {name: p.detach() for name, p in named}
        self._name_of = {id(p): name for name, p in named}
        self.lagged = LaggedParams(algorithm)
        self.device = named[0][1].device

    def params_of(self, params: Params, module: torch.nn.Module) -> Params:
        """``module``'s parameters, by its own names, taken from ``params`` (the whole dict)."""
        return {name: params[self._name_of[id(p)]] for name, p in module.named_parameters()}

    def _adam(self, grads: Params) -> None:
        self.optim.step(list(grads.values()))


def _check_one_step(algorithm: Algorithm, n_step: int) -> None:
    if n_step != 1:
        raise NotImplementedError(f"fast {type(algorithm).__name__} supports 1-step returns only")


# ----------------------------------------------------------------------------------------------
# The steps
# ----------------------------------------------------------------------------------------------


class DiscreteImitationStep(_DiscreteStep):
    """Discrete behaviour cloning as Tianshou's _imitation_update: NLL of log-softmax logits."""

    stat_names = ("loss",)

    def __init__(self, algorithm: OfflineImitationLearning) -> None:
        super().__init__(algorithm, algorithm.optim)
        self.actor = algorithm.policy.actor

    def __call__(self, batch: Batch, variant: object) -> Tensor:
        def loss_fn(params: Params) -> Tensor:
            logits = functional_call(
                self.actor, self.params_of(params, self.actor), (batch["obs"],)
            )
            return F.nll_loss(F.log_softmax(logits[0], dim=-1), batch["act"])

        grads, loss = grad_and_value(loss_fn)(self.params)
        self._adam(grads)
        return loss.detach().reshape(1)

    def to_stats(self, values: list[float]) -> TrainingStats:
        return ImitationTrainingStats(loss=values[0])


class DiscreteBCQStep(_DiscreteStep):
    """DiscreteBCQ: Huber TD loss of the Q head with the target Q_old(s', a') at the greedy
    action a' among the imitation head's likely actions, cross-entropy and an L2 penalty on the
    imitation logits; the target network is copied every ``freq`` updates."""

    stat_names = ("loss", "q_loss", "i_loss", "reg_loss")

    def __init__(self, algorithm: DiscreteBCQ) -> None:
        _check_one_step(algorithm, algorithm.n_step)
        super().__init__(algorithm, algorithm.optim)
        policy = algorithm.policy
        self.model, self.imitator = policy.model, policy.imitator
        self.log_tau = tianshou_adapter.discrete_bcq_log_threshold(policy)
        self.imitation_penalty = tianshou_adapter.discrete_bcq_imitation_penalty(algorithm)

    def variant(self) -> bool:  # copy the target network at this update?
        return tianshou_adapter.target_copy_update_count(self.algo) % self.algo.freq == 0

    def advance(self) -> None:
        tianshou_adapter.advance_target_copy_update_count(self.algo)

    def _q_and_logits(self, params: Params, obs: Tensor) -> list[Tensor]:
        modules = [self.model, self.imitator]
        return _heads(modules, [self.params_of(params, m) for m in modules], obs)

    def __call__(self, batch: Batch, refresh_target: object) -> Tensor:
        algo = self.algo
        obs, act = batch["obs"], batch["act"]

        # _preprocess_batch (before the update's target copy): Q_old at the likely greedy action
        with torch.no_grad():
            obs_next = batch["obs_next"]
            q_next, logits_next = self._q_and_logits(self.params, obs_next)
            ratio = logits_next - logits_next.max(dim=-1, keepdim=True).values
            mask = (ratio < self.log_tau).float()
            act_next = (q_next - INF * mask).argmax(dim=-1)
            q_old = functional_call(self.model, self.lagged.of(self.model), (obs_next,))[0]
            q_old = q_old.gather(1, act_next[:, None]).squeeze(1)
            returns = _one_step_return(batch["rew"], batch["terminated"], q_old, algo.gamma)
        if refresh_target:
            self.lagged.copy_sources()

        def loss_fn(params: Params) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
            q, logits = self._q_and_logits(params, obs)
            q_loss = F.smooth_l1_loss(q.gather(1, act[:, None]).squeeze(1), returns)
            i_loss = F.nll_loss(F.log_softmax(logits, dim=-1), act)
            reg_loss = logits.pow(2).mean()
            loss = q_loss + i_loss + self.imitation_penalty * reg_loss
            return loss, (q_loss, i_loss, reg_loss)

        grads, (loss, (q_loss, i_loss, reg_loss)) = grad_and_value(loss_fn, has_aux=True)(
            self.params
        )
        self._adam(grads)
        return torch.stack([loss, q_loss, i_loss, reg_loss]).detach()

    def to_stats(self, values: list[float]) -> TrainingStats:
        return DiscreteBCQTrainingStats(**dict(zip(self.stat_names, values, strict=True)))


class _QuantileStep(_DiscreteStep):
    """What QR-DQN and discrete CQL (QR-DQN + CQL penalty) share: the quantile network, its
    target (Tianshou's ``QRDQN._target_q``), the quantile Huber loss and the target copy every
    ``target_update_freq`` updates (counted by the algorithm's ``_iter``)."""

    def __init__(self, algorithm: QRDQN) -> None:
        super().__init__(algorithm, algorithm.optim)
        self.net = algorithm.policy.model
        self.tau_hat = algorithm.tau_hat.detach()  # (1, num_quantiles, 1)

    def variant(self) -> bool:
        algo = self.algo
        count = tianshou_adapter.target_copy_update_count(algo)
        return algo.use_target_network and count % algo.target_update_freq == 0

    def advance(self) -> None:
        tianshou_adapter.advance_target_copy_update_count(self.algo)

    def _quantiles(self, params: Params, obs: Tensor) -> Tensor:
        return functional_call(self.net, params, (obs,))[0]  # (B, num_actions, num_quantiles)

    def _at_action(self, dist: Tensor, action: Tensor) -> Tensor:  # dist[arange(B), action, :]
        num_quantiles = self.tau_hat.shape[1]
        return dist.gather(1, action[:, None, None].expand(-1, 1, num_quantiles)).squeeze(1)

    def _next_quantiles(self, obs_next: Tensor) -> Tensor:
        """Z(s', a*) of the target network (the online one without), a* the online network's
        greedy action; from before this update's target copy. (B, num_quantiles)"""
        next_dist = self._quantiles(self.params_of(self.params, self.net), obs_next)
        act_next = next_dist.mean(2).argmax(dim=1)
        if self.algo.use_target_network:
            next_dist = self._quantiles(self.lagged.of(self.net), obs_next)
        return self._at_action(next_dist, act_next)

    def _quantile_huber_loss(self, curr_dist: Tensor, returns: Tensor) -> Tensor:
        """Each sample's quantile Huber loss (kappa = 1) of its quantiles (B, N) at the taken
        action against the target quantiles (B, N). (B,)"""
        curr_dist, target_dist = curr_dist.unsqueeze(2), returns.unsqueeze(1)
        dist_diff = F.smooth_l1_loss(target_dist, curr_dist, reduction="none")
        below = (target_dist - curr_dist).detach().le(0.0).float()
        return (dist_diff * (self.tau_hat - below).abs()).sum(-1).mean(1)


class DiscreteCQLStep(_QuantileStep):
    """DiscreteCQL (QR-DQN + CQL penalty): quantile Huber loss against the target network's
    quantiles at the online network's greedy next action, plus min_q_weight * (logsumexp Q -
    Q(s, a)); the target network is copied every ``target_update_freq`` updates."""

    stat_names = ("loss", "qr_loss", "cql_loss")

    def __init__(self, algorithm: DiscreteCQL) -> None:
        _check_one_step(algorithm, algorithm.n_step)
        super().__init__(algorithm)

    def __call__(self, batch: Batch, refresh_target: object) -> Tensor:
        algo = self.algo
        obs, act = batch["obs"], batch["act"]
        with torch.no_grad():
            target = self._next_quantiles(batch["obs_next"])
            returns = _one_step_return(batch["rew"], batch["terminated"], target, algo.gamma)
        if refresh_target:
            self.lagged.copy_sources()

        def loss_fn(params: Params) -> tuple[Tensor, tuple[Tensor, Tensor]]:
            all_dist = self._quantiles(self.params_of(params, self.net), obs)
            # no priority weights in offline data
            qr_loss = self._quantile_huber_loss(self._at_action(all_dist, act), returns).mean()
            q = all_dist.mean(2)
            min_q_loss = q.logsumexp(1).mean() - q.gather(1, act[:, None]).mean()
            return qr_loss + min_q_loss * algo.min_q_weight, (qr_loss, min_q_loss)

        grads, (loss, (qr_loss, cql_loss)) = grad_and_value(loss_fn, has_aux=True)(self.params)
        self._adam(grads)
        return torch.stack([loss, qr_loss, cql_loss]).detach()

    def to_stats(self, values: list[float]) -> TrainingStats:
        return DiscreteCQLTrainingStats(**dict(zip(self.stat_names, values, strict=True)))


def crr_actor_loss(log_prob: Tensor, weight: Tensor | float, *, corrected: bool) -> Tensor:
    """CRR's actor loss from each sample's log pi(a|s) (B,) and f(advantage) (B, 1).

    Corrected: -sum_i f(A_i) log pi(a_i|s_i) / B with f a constant (detached). Tianshou 2.0.1:
    (B,) * (B, 1) broadcasts to (B, B), i.e. -mean(log pi) * mean(f), f not detached.
    """
    if not corrected:
        return (-log_prob * weight).mean()
    if isinstance(weight, Tensor):
        weight = weight.reshape(log_prob.shape).detach()
    return (-log_prob * weight).mean()


def _categorical(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(normalized logits, probs) as torch.distributions.Categorical(logits=...) computes them."""
    normalized = logits - logits.logsumexp(dim=-1, keepdim=True)
    return normalized, F.softmax(normalized, dim=-1)


class DiscreteCRRStep(_DiscreteStep):
    """Critic regularized regression (Wang et al., 2020), optionally with a CQL term.

    Corrected (the default of tianshou_offline.algorithms.DiscreteCRR), as the paper's eq. 3:
    each sample's log-probability is weighted by its own f(advantage), a constant of the actor
    loss (detached: no critic gradient from it); the target masks with ``terminated``. With
    ``tianshou_maths`` exactly as Tianshou 2.0.1 computes it: the weight is not detached (the
    actor loss also trains the critic); ``-log_prob`` (B,) times the weight (B, 1) broadcasts
    to (B, B), so the actor loss is mean(-log_prob) * mean(weight); the target masks with
    ``done``. Either way the target networks are copied *before* the target is computed
    (every ``target_update_freq`` updates).
    """

    stat_names = ("loss", "actor_loss", "critic_loss", "cql_loss")

    def __init__(self, algorithm: DiscreteCRR) -> None:
        super().__init__(algorithm, algorithm.optim)
        self.actor, self.critic = algorithm.policy.actor, algorithm.critic
        self.settings = tianshou_adapter.crr_settings(algorithm)
        if self.settings.policy_improvement_mode not in ("exp", "binary", "all"):
            raise NotImplementedError(self.settings.policy_improvement_mode)
        self.corrected = not tianshou_maths(algorithm)

    def variant(self) -> bool:
        count = tianshou_adapter.target_copy_update_count(self.algo)
        return self.settings.target_networks and count % self.settings.target_update_freq == 0

    def advance(self) -> None:
        tianshou_adapter.advance_target_copy_update_count(self.algo)

    def __call__(self, batch: Batch, refresh_target: object) -> Tensor:
        algo, settings = self.algo, self.settings
        obs, act = batch["obs"], batch["act"]
        modules = [self.actor, self.critic]
        if refresh_target:
            self.lagged.copy_sources()

        with torch.no_grad():
            # The target copies of actor and critic each hold a copy of the shared feature net;
            # both are copied from the same source at the same time, so they are equal and run
            # once here (through the actor's copy).
            if settings.target_networks:
                target_params = [self.lagged.of(m) for m in modules]
            else:  # no target networks: the online ones
                target_params = [self.params_of(self.params, m) for m in modules]
            target_logits, q_next = _heads(modules, target_params, batch["obs_next"])
            _, target_probs = _categorical(target_logits)
            expected_target_q = (q_next * target_probs).sum(-1, keepdim=True)
            terminal = batch["terminated"] if self.corrected else batch["done"]
            expected_target_q = torch.where(terminal[:, None] > 0, 0.0, expected_target_q)
            gamma = algo.discounted_return_computation.gamma
            target = batch["rew"][:, None] + gamma * expected_target_q

        def loss_fn(params: Params) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
            logits, q = _heads(modules, [self.params_of(params, m) for m in modules], obs)
            qa = q.gather(1, act[:, None])
            critic_loss = 0.5 * F.mse_loss(qa, target)
            log_pmf, probs = _categorical(logits)
            advantage = qa - (q * probs).sum(-1, keepdim=True)
            mode = settings.policy_improvement_mode
            if mode == "binary":
                coef: Tensor | float = (advantage > 0).float()
            elif mode == "exp":
                ratio = (advantage / settings.beta).exp()
                coef = ratio.clamp(0, settings.ratio_upper_bound)  # sic
            else:
                coef = 1.0
            log_prob = log_pmf.gather(-1, act[:, None]).squeeze(-1)  # (B,)
            actor_loss = crr_actor_loss(log_prob, coef, corrected=self.corrected)
            if self.corrected:
                min_q_loss = (q.logsumexp(1) - qa.squeeze(1)).mean()
            else:
                min_q_loss = (q.logsumexp(1) - qa).mean()  # (B,) - (B, 1) -> (B, B)
            loss = actor_loss + critic_loss + settings.min_q_weight * min_q_loss
            return loss, (actor_loss, critic_loss, min_q_loss)

        grads, (loss, aux) = grad_and_value(loss_fn, has_aux=True)(self.params)
        self._adam(grads)
        return torch.stack([loss, *aux]).detach()

    def to_stats(self, values: list[float]) -> TrainingStats:
        return DiscreteCRRTrainingStats(**dict(zip(self.stat_names, values, strict=True)))


# ----------------------------------------------------------------------------------------------
# Online QR-DQN (examples/atari/atari_qrdqn.py): n-step targets, the buffer sampled on the host
# ----------------------------------------------------------------------------------------------


def nstep_transitions(
    batch: TianshouBatch, buffer: ReplayBuffer, indices: np.ndarray, gamma: float, n_step: int
) -> TianshouBatch:
    """The host-side part of Tianshou's ``compute_nstep_return`` (no network): each sampled
    transition as an n-step one, for ``QRDQNStep``.

    ``obs`` and ``act`` are the batch's; ``obs_next`` is s_{t+k}, the observation after the
    last of the (up to) n steps, which the target networks evaluate; ``nstep_return`` is
    sum_{i<k} gamma^i r_{t+i}; ``nstep_discount`` is gamma^k, or 0 where step t+k-1 terminated
    the episode. k < n where the episode ended (terminated, truncated, or not yet finished in
    the buffer) within the n steps; the return is then
    ``nstep_return + nstep_discount * Z_target(s_{t+k})``, as Tianshou 2.0.1 computes it
    (``Algorithm.compute_nstep_return`` and ``_nstep_return``, float64 here as there).
    """
    if isinstance(buffer, PrioritizedReplayBuffer):
        raise NotImplementedError("the QR-DQN step has no priority weights")
    steps = [indices]
    for _ in range(n_step - 1):
        steps.append(buffer.next(steps[-1]))
    after = steps[-1]  # the n-th transition (earlier where the episode ended)
    ended = buffer.done.copy()
    ended[buffer.unfinished_index()] = True
    discounts = np.cumprod(np.concatenate([[1.0], np.full(n_step, gamma)]))  # as Tianshou's
    taken = np.full(len(indices), n_step)
    rewards = np.zeros(len(indices))
    for n in range(n_step - 1, -1, -1):
        now = steps[n]
        stop = ended[now] > 0
        taken[stop] = n + 1
        rewards[stop] = 0.0
        rewards = buffer.rew[now] + gamma * rewards
    bootstrap = ~buffer.terminated[after]  # Algorithm.value_mask
    return TianshouBatch(
        obs=batch.obs,
        act=batch.act,
        obs_next=buffer[after].obs_next,
        nstep_return=rewards,
        nstep_discount=discounts[taken] * bootstrap,
    )


class QRDQNStep(_QuantileStep):
    """QR-DQN (Dabney et al., 2018) as Tianshou 2.0.1's ``QRDQN``: quantile Huber loss
    (kappa = 1) of the online quantiles at the taken action against the n-step target
    ``nstep_return + nstep_discount * Z_target(s_{t+n}, a*)``, a* the online network's greedy
    action at s_{t+n} (target network: the online one without); the target network is computed
    from before this update's copy, copied every ``target_update_freq`` updates (counted by the
    algorithm's ``_iter``); one Adam step. The batch comes from ``nstep_transitions``."""

    stat_names = ("loss",)

    def __call__(self, batch: Batch, refresh_target: object) -> Tensor:
        obs, act = batch["obs"], batch["act"]
        # QRDQN._target_q and compute_nstep_return (before the update's target copy)
        with torch.no_grad():
            target = self._next_quantiles(batch["obs_next"])  # (B, num_quantiles)
            discount = batch["nstep_discount"].double()[:, None]
            returns = (target.double() * discount + batch["nstep_return"].double()[:, None]).float()
        if refresh_target:
            self.lagged.copy_sources()

        def loss_fn(params: Params) -> Tensor:
            curr_dist = self._at_action(self._quantiles(self.params_of(params, self.net), obs), act)
            return self._quantile_huber_loss(curr_dist, returns).mean()  # no priority weights

        grads, loss = grad_and_value(loss_fn)(self.params)
        self._adam(grads)
        return loss.detach().reshape(1)

    def to_stats(self, values: list[float]) -> TrainingStats:
        return SimpleLossTrainingStats(loss=values[0])


class StagedBatches:
    """The batches of an online replay buffer for a compiled step (a ``SampledDataset``):
    Tianshou's buffer samples on the host, with its own checkpointed RNG, and ``stage`` copies
    each batch into the same tensors on the device, which the compiled step (or its CUDA graph)
    reads; ``sample`` hands them over."""

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.tensors: Batch = {}

    def stage(self, tensors: Batch) -> None:
        if tensors.keys() != self.tensors.keys() or any(
            t.shape != self.tensors[k].shape for k, t in tensors.items()
        ):
            self.tensors = {k: t.to(self.device, copy=True) for k, t in tensors.items()}
            return
        for key, tensor in tensors.items():
            self.tensors[key].copy_(tensor, non_blocking=True)

    def sample(self, batch_size: int) -> Batch:
        return self.tensors
