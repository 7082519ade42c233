"""Discrete-control (Atari) algorithms: Tianshou 2.0.1's classes with the functional update.

As in ``algorithms.continuous``: Tianshou's constructor arguments plus ``tianshou_maths``; the
maths lives in ``tianshou_offline.updates.discrete``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tianshou.algorithm import QRDQN as TianshouQRDQN
from tianshou.algorithm import DiscreteBCQ as TianshouDiscreteBCQ
from tianshou.algorithm import DiscreteCQL as TianshouDiscreteCQL
from tianshou.algorithm import DiscreteCRR as TianshouDiscreteCRR
from tianshou.data import ReplayBuffer

from tianshou_offline import tianshou_adapter
from tianshou_offline.algorithms.base import FunctionalUpdate, batch_tensors
from tianshou_offline.updates.core import Batch, FunctionalStep
from tianshou_offline.updates.discrete import (
    DiscreteBCQStep,
    DiscreteCQLStep,
    DiscreteCRRStep,
    QRDQNStep,
    nstep_transitions,
)


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


class QRDQN(FunctionalUpdate, TianshouQRDQN):
    """Online QR-DQN (Dabney et al., 2018), Tianshou 2.0.1's maths (it has nothing to correct;
    ``tianshou_maths`` changes nothing). The host computes the n-step bookkeeping of each
    sampled transition (``updates.discrete.nstep_transitions``), the step all network maths
    (``QRDQNStep``: targets, loss, Adam, target copies). Correction to Tianshou 2.0.1: the
    target-copy counter is checkpointed."""

    checkpointed_counters = tianshou_adapter.TARGET_COPY_COUNTERS

    def make_step(self) -> FunctionalStep:
        return QRDQNStep(self)

    def _preprocess_batch(self, batch: Any, buffer: ReplayBuffer, indices: np.ndarray) -> Any:
        if self.functional_step() is None:
            return super()._preprocess_batch(batch, buffer, indices)
        return nstep_transitions(batch, buffer, indices, self.gamma, self.n_step)

    def sample_step_batch(self, buffer: ReplayBuffer, batch_size: int) -> Batch:
        """A batch for the step as ``update`` samples it (``buffer.sample``, then the n-step
        bookkeeping), as tensors on the step's device: what a compiled step is given."""
        step = self.functional_step()
        if step is None:
            raise NotImplementedError(f"{type(self).__name__}: {self._unsupported}")
        batch, indices = buffer.sample(batch_size)
        batch = nstep_transitions(batch, buffer, indices, self.gamma, self.n_step)
        return batch_tensors(batch, step.device)
