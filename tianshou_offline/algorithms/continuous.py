"""Continuous-control algorithms: Tianshou 2.0.1's classes with the functional update.

Each class takes Tianshou's constructor arguments plus ``tianshou_maths`` (default False: the
paper's maths; True: Tianshou 2.0.1's, for comparison). The corrections are listed in each
class and implemented, each behind that one switch, in ``tianshou_offline.updates.continuous``.
"""

from __future__ import annotations

from typing import Any

import torch
from tianshou.algorithm import BCQ as TianshouBCQ
from tianshou.algorithm import CQL as TianshouCQL
from tianshou.algorithm import TD3BC as TianshouTD3BC
from tianshou.algorithm.imitation.imitation_base import OfflineImitationLearning

from tianshou_offline import tianshou_adapter
from tianshou_offline.algorithms.base import FunctionalUpdate
from tianshou_offline.updates.continuous import (
    BCQStep,
    BehaviourCloningStep,
    CQLStep,
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
