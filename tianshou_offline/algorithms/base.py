"""What every algorithm of this package adds to its Tianshou class: the update is a functional
step (written once, in ``tianshou_offline.updates``), and the checkpoint holds everything that
update depends on."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tianshou.algorithm.algorithm_base import TrainingStats
from tianshou.data import Batch as TianshouBatch
from tianshou.data import ReplayBuffer

from tianshou_offline import tianshou_adapter
from tianshou_offline.updates.core import Batch, FunctionalStep

# the transition fields a step reads, when the batch has them
STEP_FIELDS = (
    "obs",
    "act",
    "rew",
    "terminated",
    "done",
    "obs_next",
    "calibration_returns",
    "act_next",
    "nstep_return",  # QR-DQN: updates.discrete.nstep_transitions
    "nstep_discount",
)


def batch_tensors(batch: TianshouBatch, device: torch.device) -> Batch:
    """A sampled Tianshou batch as the step's dict of tensors on ``device``: floats and flags
    as float32, integers (actions, uint8 frames) as they are, like ``DeviceDataset.gather``."""
    tensors = {}
    for key in STEP_FIELDS:
        if key not in batch.get_keys():
            continue
        array = np.asarray(batch[key])
        dtype = torch.float32 if array.dtype.kind in "fb" else None
        tensors[key] = torch.as_tensor(array, dtype=dtype, device=device)
    return tensors


class FunctionalUpdate:
    """Mixin, before a Tianshou ``Algorithm`` class in the bases: ``_update_with_batch`` runs
    ``make_step()``'s functional step eagerly, and ``--compile`` compiles that same step
    (``updates.select.make_fast_update``). A subclass that overrides ``_update_with_batch``
    keeps its own update: the compiled path then refuses to replace it.

    ``tianshou_maths``: True turns every correction of the step off (Tianshou 2.0.1's maths).
    ``checkpointed_counters``: host-side counters of the update (delay, target copies), saved
    in ``state_dict`` with the optimizers Tianshou keeps outside it (``extra_optimizers``).
    """

    tianshou_maths: bool = False
    checkpointed_counters: tuple[str, ...] = ()
    _step: FunctionalStep | None = None
    _unsupported: str | None = None  # why make_step refused this configuration, if it did

    def __init__(self, *, tianshou_maths: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # the Tianshou class's constructor
        self.tianshou_maths = tianshou_maths

    def make_step(self) -> FunctionalStep:
        raise NotImplementedError

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers of the update that Tianshou does not checkpoint (it saves those its
        ``_create_optimizer`` made)."""
        return {}

    def functional_step(self) -> FunctionalStep | None:
        """The step over this algorithm's current tensors (built again after a load or a move,
        which replace the tensors it aliases); None for a configuration it does not cover
        (e.g. n-step returns): Tianshou 2.0.1's own update then runs, as said once."""
        if self._step is None and self._unsupported is None:
            try:
                self._step = self.make_step()
            except NotImplementedError as err:
                self._unsupported = str(err)
                print(f"{type(self).__name__}: {err}; Tianshou 2.0.1's own update runs instead")
        return self._step

    def compilable_step(self) -> FunctionalStep | None:
        """The step ``--compile`` compiles, or None where a subclass overrides
        ``_update_with_batch`` (its own update then runs, uncompiled: override ``make_step``
        instead to have the new maths compiled)."""
        owner = next(c for c in type(self).__mro__ if "_update_with_batch" in c.__dict__)
        if owner is not FunctionalUpdate:
            print(
                f"--compile: {owner.__name__} overrides _update_with_batch, so its own update "
                "runs uncompiled (override make_step to compile a new update)"
            )
            return None
        return self.functional_step()

    # Tianshou's update: sample -> _preprocess_batch -> _update_with_batch
    def _preprocess_batch(self, batch: Any, buffer: ReplayBuffer, indices: np.ndarray) -> Any:
        if self.functional_step() is None:
            return super()._preprocess_batch(batch, buffer, indices)  # type: ignore[misc]
        return batch  # the step computes its own targets

    def _update_with_batch(self, batch: Any) -> TrainingStats:
        step = self.functional_step()
        if step is None:
            return super()._update_with_batch(batch)  # type: ignore[misc]
        values = step(batch_tensors(batch, step.device), step.variant())
        step.advance()
        return step.to_stats(values.tolist())

    # checkpoints: counters and the optimizers outside Tianshou's list
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "counters": tianshou_adapter.counters(self, self.checkpointed_counters),
            "optimizers": {name: o.state_dict() for name, o in self.extra_optimizers().items()},
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        tianshou_adapter.restore_counters(self, state["counters"])
        for name, optimizer in self.extra_optimizers().items():
            optimizer.load_state_dict(state["optimizers"][name])

    def load_state_dict(self, state_dict: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self._step = None
        return super().load_state_dict(state_dict, *args, **kwargs)  # type: ignore[misc]

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:  # .to(), .cuda(), ...
        self._step = None
        return super()._apply(fn, *args, **kwargs)  # type: ignore[misc]
