"""Discrete-control (Atari) algorithms: Tianshou 2.0.1's classes with the functional update.

As in ``algorithms.continuous``: Tianshou's constructor arguments plus ``tianshou_maths``; the
maths lives in ``tianshou_offline.updates.discrete``.
"""

from __future__ import annotations

from tianshou.algorithm import DiscreteBCQ as TianshouDiscreteBCQ
from tianshou.algorithm import DiscreteCQL as TianshouDiscreteCQL
from tianshou.algorithm import DiscreteCRR as TianshouDiscreteCRR

from tianshou_offline import tianshou_adapter
from tianshou_offline.algorithms.base import FunctionalUpdate
from tianshou_offline.updates.core import FunctionalStep
from tianshou_offline.updates.discrete import DiscreteBCQStep, DiscreteCQLStep, DiscreteCRRStep


class DiscreteBCQ(FunctionalUpdate, TianshouDiscreteBCQ):
    """Discrete BCQ (Fujimoto et al., 2019). Correction to Tianshou 2.0.1: the target-copy
    counter is checkpointed (a resume keeps the copy schedule)."""

    checkpointed_counters = tianshou_adapter.TARGET_COPY_COUNTERS

    def make_step(self) -> FunctionalStep:
        return DiscreteBCQStep(self)


class DiscreteCQL(FunctionalUpdate, TianshouDiscreteCQL):
    """Discrete CQL on QR-DQN (Kumar et al., 2020). Correction to Tianshou 2.0.1: the
    target-copy counter is checkpointed."""

    checkpointed_counters = tianshou_adapter.TARGET_COPY_COUNTERS

    def make_step(self) -> FunctionalStep:
        return DiscreteCQLStep(self)


class DiscreteCRR(FunctionalUpdate, TianshouDiscreteCRR):
    """CRR (Wang et al., 2020), with a CQL term for ``min_q_weight > 0``. Corrections to
    Tianshou 2.0.1 (the paper's eq. 3):

    * each sample's log-probability is weighted by its own f(advantage): Tianshou's (B,) x
      (B, 1) product broadcasts to (B, B), i.e. mean(log-prob) x mean(weight);
    * the weight is a constant of the actor loss (detached: no critic gradient from it);
    * the target masks with ``terminated``, not ``done``;
    * the target-copy counter is checkpointed.
    """

    checkpointed_counters = tianshou_adapter.TARGET_COPY_COUNTERS

    def make_step(self) -> FunctionalStep:
        return DiscreteCRRStep(self)
