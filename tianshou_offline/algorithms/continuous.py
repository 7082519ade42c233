"""Continuous-control algorithms: Tianshou 2.0.1's classes with the functional update, and IQL
and ReBRAC, which Tianshou 2.0.1 does not have (built on its OfflineAlgorithm and TD3BC).

Each class takes Tianshou's constructor arguments plus ``tianshou_maths`` (default False: the
paper's maths; True: Tianshou 2.0.1's, for comparison). The corrections are listed in each
class and implemented, each behind that one switch, in ``tianshou_offline.updates.continuous``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tianshou.algorithm import BCQ as TianshouBCQ
from tianshou.algorithm import CQL as TianshouCQL
from tianshou.algorithm import TD3BC as TianshouTD3BC
from tianshou.algorithm.algorithm_base import (
    LaggedNetworkPolyakUpdateAlgorithmMixin,
    OfflineAlgorithm,
)
from tianshou.algorithm.imitation.imitation_base import OfflineImitationLearning
from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy
from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
from tianshou.algorithm.optim import OptimizerFactory
from tianshou.data import ReplayBuffer
from torch.distributions import Independent, Normal

from tianshou_offline import tianshou_adapter
from tianshou_offline.algorithms.base import FunctionalUpdate
from tianshou_offline.updates.continuous import (
    BCQStep,
    BehaviourCloningStep,
    CQLStep,
    IQLStep,
    ReBRACStep,
    TD3BCStep,
)
from tianshou_offline.updates.core import FunctionalStep
from tianshou_offline.updates.discrete import DiscreteImitationStep


def _temperature_optimizer(alpha: Any) -> dict[str, torch.optim.Optimizer]:
    """SAC's automatic temperature keeps its optimizer outside Tianshou's list."""
    temperature = tianshou_adapter.automatic_temperature(alpha)
    return {"alpha": temperature.optimizer} if temperature is not None else {}


class ImitationLearning(FunctionalUpdate, OfflineImitationLearning):
    """Behaviour cloning: MSE to the dataset's actions (continuous) or their negative
    log-likelihood (discrete). Nothing to correct; the functional step runs it."""

    def make_step(self) -> FunctionalStep:
        if self.policy.action_type == "discrete":
            return DiscreteImitationStep(self)
        return BehaviourCloningStep(self)


class TD3BC(FunctionalUpdate, TianshouTD3BC):
    """TD3+BC (Fujimoto & Gu, 2021). Corrections to Tianshou 2.0.1:

    * the smoothed target action is clipped to the action bounds (TD3's eq. 15; CORL's
      td3_bc.py clamps ``next_action`` to ``[-max_action, max_action]``);
    * the policy-delay counter is checkpointed (a resume keeps the actor's update phase).
    """

    checkpointed_counters = tianshou_adapter.TD3_COUNTERS

    def make_step(self) -> FunctionalStep:
        return TD3BCStep(self)


class CQL(FunctionalUpdate, TianshouCQL):
    """CQL(H) (Kumar et al., 2020) with a SAC actor; Cal-QL with ``calibrated=True``.
    Corrections to Tianshou 2.0.1 (the paper's appendix F and CORL's cql.py):

    * the penalty's random actions are uniform over the action box (Tianshou draws from
      U(-min_action, max_action): a constant when min_action = -max_action);
    * the log-sum-exp of each state runs over all its sampled actions (random, current and
      next policy, importance-weighted), not over three values per repeated state;
    * the target masks with ``terminated``, not ``done`` (a time-out bootstraps);
    * the Lagrange multiplier is a registered parameter (moved with the algorithm, saved in
      ``state_dict``; Tianshou's optimizer updates a CPU copy on CUDA), and its optimizer and
      the temperature's are checkpointed.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        lr = self.cql_alpha_optim.param_groups[0]["lr"]
        device = self.cql_log_alpha.device
        self.cql_log_alpha = torch.nn.Parameter(torch.zeros(1, device=device))
        self.cql_alpha_optim = torch.optim.Adam([self.cql_log_alpha], lr=lr)

    def make_step(self) -> FunctionalStep:
        return CQLStep(self)

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"cql_alpha": self.cql_alpha_optim, **_temperature_optimizer(self.alpha)}


class BCQ(FunctionalUpdate, TianshouBCQ):
    """BCQ (Fujimoto et al., 2019). Corrections to Tianshou 2.0.1 (the paper's Algorithm 1):

    * the target's VAE-sampled next actions go through the target perturbation network
      (Tianshou creates it, then scores the unperturbed decoded actions);
    * the target masks with ``terminated``, not ``done``.
    """

    def make_step(self) -> FunctionalStep:
        return BCQStep(self)


def independent_normal(loc_scale: tuple[torch.Tensor, torch.Tensor]) -> Independent:
    """The Gaussian actor's distribution over the action vector (a module-level function, so
    that the policy pickles for --eval-in-background)."""
    loc, scale = loc_scale
    return Independent(Normal(loc, scale), 1)


class IQL(FunctionalUpdate, OfflineAlgorithm, LaggedNetworkPolyakUpdateAlgorithmMixin):
    """IQL (Kostrikov et al., 2021): implicit Q-learning with expectile regression of V(s),
    twin Q(s, a) with target copies, and an advantage-weighted actor. Tianshou 2.0.1 has no IQL,
    so ``tianshou_maths`` is refused; the update is ``updates.continuous.IQLStep``.

    The policy is a ``ProbabilisticActorPolicy`` over a Gaussian actor (the paper's) or a
    ``ContinuousDeterministicPolicy`` (CORL's ``iql_deterministic``). ``actor_lr_decay_steps``:
    the actor's learning rate decays to 0 along a cosine over that many updates (None: constant).
    ``normalize_reward``: rewards are scaled by max_episode_steps / (max return - min return)
    over the dataset's episodes (``process_buffer``), as the authors' code does for locomotion.
    The checkpoint holds every counter: the schedule's position is the actor optimizer's step
    count, ``reward_scale`` is saved with the counters.
    """

    checkpointed_counters = ("reward_scale",)

    def __init__(
        self,
        *,
        policy: ProbabilisticActorPolicy | ContinuousDeterministicPolicy,
        policy_optim: OptimizerFactory,
        critic: torch.nn.Module,
        critic_optim: OptimizerFactory,
        critic2: torch.nn.Module,
        critic2_optim: OptimizerFactory,
        value: torch.nn.Module,
        value_optim: OptimizerFactory,
        expectile: float = 0.7,
        beta: float = 3.0,
        max_weight: float = 100.0,
        tau: float = 0.005,
        gamma: float = 0.99,
        actor_lr_decay_steps: int | None = None,
        normalize_reward: bool = False,
        max_episode_steps: int = 1000,
        tianshou_maths: bool = False,
    ) -> None:
        if tianshou_maths:
            raise ValueError("Tianshou 2.0.1 has no IQL: there is no Tianshou maths to use")
        if not 0.0 < expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {expectile}")
        super().__init__(policy=policy)
        LaggedNetworkPolyakUpdateAlgorithmMixin.__init__(self, tau=tau)
        self.gamma = gamma
        self.expectile = expectile
        self.beta = beta
        self.max_weight = max_weight
        self.actor_lr_decay_steps = actor_lr_decay_steps
        self.normalize_reward = normalize_reward
        self.max_episode_steps = max_episode_steps
        self.reward_scale = 1.0
        self.deterministic_actor = isinstance(policy, ContinuousDeterministicPolicy)
        self.policy_optim = self._create_optimizer(policy, policy_optim)
        self.critic = critic
        self.critic_old = self._add_lagged_network(critic)
        self.critic_optim = self._create_optimizer(critic, critic_optim)
        self.critic2 = critic2
        self.critic2_old = self._add_lagged_network(critic2)
        self.critic2_optim = self._create_optimizer(critic2, critic2_optim)
        self.value = value
        self.value_optim = self._create_optimizer(value, value_optim)

    def make_step(self) -> FunctionalStep:
        return IQLStep(self)

    def process_buffer(self, buffer: ReplayBuffer) -> ReplayBuffer:
        """Sets ``reward_scale`` from the dataset (the buffer itself is not changed)."""
        if self.normalize_reward:
            self.reward_scale = locomotion_reward_scale(buffer, self.max_episode_steps)
            print(f"IQL: rewards scaled by {self.reward_scale:.4g} (--normalize-reward)")
        return buffer


def locomotion_reward_scale(buffer: ReplayBuffer, max_episode_steps: int = 1000) -> float:
    """max_episode_steps / (max - min episode return) over the buffer's complete episodes (each
    ends at a ``done`` flag; a trailing unfinished one counts only if no episode is complete):
    the reward normalisation of IQL's authors for D4RL locomotion (and CORL's modify_reward)."""
    size = len(buffer)
    rew = np.asarray(buffer.rew[:size], dtype=np.float64)
    ends = np.flatnonzero(np.asarray(buffer.done[:size]))
    if len(ends) == 0:
        returns = np.array([rew.sum()])
    else:
        returns = np.add.reduceat(rew, np.concatenate([[0], ends[:-1] + 1]))
    spread = float(returns.max() - returns.min())
    if spread <= 0.0:
        return 1.0  # one episode, or all equal: nothing to normalise by
    return max_episode_steps / spread


class ReBRAC(FunctionalUpdate, TianshouTD3BC):
    """ReBRAC (Tarasov et al., 2023): TD3+BC's networks, targets and delayed actor (Tianshou's
    TD3BC class) with ReBRAC's changes, in ``updates.continuous.ReBRACStep``: a behaviour-cloning
    penalty in the actor loss (``actor_bc_coef``) and one in the critics' target
    (``critic_bc_coef``, on the smoothed next action against the dataset's next action), the
    actor's Q the min of both critics normalised by its mean magnitude (``normalize_q``).
    TD3+BC's ``alpha`` is not used. Tianshou 2.0.1 has no ReBRAC, so ``tianshou_maths`` is
    refused. The policy-delay counter is checkpointed.
    """

    checkpointed_counters = tianshou_adapter.TD3_COUNTERS

    def __init__(
        self,
        *,
        actor_bc_coef: float,
        critic_bc_coef: float,
        normalize_q: bool = True,
        tianshou_maths: bool = False,
        **kwargs: Any,
    ) -> None:
        if tianshou_maths:
            raise ValueError("Tianshou 2.0.1 has no ReBRAC: there is no Tianshou maths to use")
        super().__init__(**kwargs)
        self.actor_bc_coef = actor_bc_coef
        self.critic_bc_coef = critic_bc_coef
        self.normalize_q = normalize_q

    def make_step(self) -> FunctionalStep:
        return ReBRACStep(self)

    def process_buffer(self, buffer: ReplayBuffer) -> ReplayBuffer:
        """Adds ``act_next``: the dataset's action at each transition's next state (the next
        row's action within an episode). At an episode's end the next action is not in the
        data (a terminal masks the target anyway; a time-out's next row was dropped), so the
        transition's own action stands in: the penalty there is that of staying close to it."""
        size = len(buffer)
        act = np.asarray(buffer.act)
        act_next = act.copy()
        continues = ~np.asarray(buffer.done[: size - 1], dtype=bool)
        rows = np.flatnonzero(continues)
        act_next[rows] = act[rows + 1]
        tianshou_adapter.set_buffer_column(buffer, "act_next", act_next)
        return buffer
