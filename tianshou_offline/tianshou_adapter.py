"""Every use this package makes of Tianshou's private attributes, in one place.

The functional update steps, the algorithms' checkpoints, the Atari buffer loader and the
offline trainer read (and a few write) state that Tianshou 2.0.1 keeps in attributes with a
leading underscore: the update counters, the automatic temperature's parameter and optimizer,
the optimizer wrapper's parts, the target networks' pairs, the replay buffer's fill state and
sampling RNG, the trainer's bookkeeping. None of it is Tianshou's public interface, so any
release may rename it. The package reaches it only through the functions here, and
``PRIVATE_ATTRIBUTES`` lists each name with the Tianshou class that holds it (plus the private
hooks the package overrides): test/test_tianshou_adapter.py checks the installed version and
every listed name on freshly built objects, and says which one is gone.

Tianshou is imported lazily (the Atari buffer tools start without it).
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import torch
    from tianshou.algorithm.algorithm_base import Algorithm, TrainingStats
    from tianshou.data import ReplayBuffer
    from tianshou.trainer import OfflineTrainer

WRITTEN_FOR = "2.0.1"  # the Tianshou version whose private attributes this module reads

# Tianshou class (module.Class[.Nested]) -> the private names this package relies on
PRIVATE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "tianshou.algorithm.algorithm_base.Algorithm": (
        "_preprocess_batch",
        "_update_with_batch",
        "_create_optimizer",
    ),
    "tianshou.algorithm.algorithm_base.Algorithm.Optimizer": (
        "_optim",
        "_module",
        "_max_grad_norm",
    ),
    "tianshou.algorithm.algorithm_base.LaggedNetworkAlgorithmMixin": (
        "_lagged_networks",
        "_add_lagged_network",
    ),
    "tianshou.utils.lagged_network.LaggedNetworkCollection": ("_lagged_network_pairs",),
    "tianshou.algorithm.modelfree.sac.AutoAlpha": ("_log_alpha", "_optim", "_target_entropy"),
    "tianshou.algorithm.modelfree.td3.TD3": ("_cnt", "_last"),
    "tianshou.algorithm.modelfree.dqn.QLearningOffPolicyAlgorithm": ("_iter",),
    "tianshou.algorithm.imitation.discrete_bcq.DiscreteBCQ": ("_iter", "_weight_reg"),
    "tianshou.algorithm.imitation.discrete_bcq.DiscreteBCQPolicy": ("_log_tau",),
    "tianshou.algorithm.imitation.discrete_crr.DiscreteCRR": (
        "_iter",
        "_target",
        "_freq",
        "_policy_improvement_mode",
        "_beta",
        "_ratio_upper_bound",
        "_min_q_weight",
    ),
    "tianshou.data.ReplayBuffer": (
        "_save_obs_next",
        "_size",
        "_insertion_idx",
        "_random_state",
        "_meta",
    ),
    "tianshou.trainer.OfflineTrainer": (
        "_buffer",
        "_current_update_step",
        "_policy_update_time",
        "_training_step",
        "_update_moving_avg_stats_and_log_update_data",
        "_TrainingStepResult",
        "_create_epoch_pbar_data_dict",
    ),
}

# the host-side counters an update depends on (checkpointed by tianshou_offline.algorithms)
TD3_COUNTERS = ("_cnt", "_last")  # policy-delay count, the last actor loss reported
TARGET_COPY_COUNTERS = ("_iter",)  # updates so far, which schedule the hard target copies


def installed_version() -> str:
    import tianshou

    return str(tianshou.__version__)


def resolve(class_path: str) -> type:
    """The class named by ``module.Class[.Nested]`` (the longest importable module prefix)."""
    parts = class_path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner: Any = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for name in parts[split:]:
            owner = getattr(owner, name)
        return owner
    raise ModuleNotFoundError(class_path)


def missing_private_attributes(obj: object) -> list[str]:
    """``Class.name`` of each listed private name that ``obj`` (an instance of one or more of
    the listed classes) lacks; empty when the installed Tianshou still has all of them."""
    missing = []
    for class_path, names in PRIVATE_ATTRIBUTES.items():
        cls = resolve(class_path)
        if isinstance(obj, cls):
            missing += [f"{cls.__qualname__}.{name}" for name in names if not hasattr(obj, name)]
    return missing


def mismatch_message(missing: list[str] | None = None) -> str:
    """What to tell a user whose Tianshou is not the one this module was written for."""
    installed = installed_version()
    found = f"Tianshou {installed} is installed"
    if missing:
        found += f" and lacks {', '.join(missing)}"
    return (
        f"tianshou_offline/tianshou_adapter.py was written for Tianshou {WRITTEN_FOR}, but "
        f"{found}: install tianshou=={WRITTEN_FOR} (requirements.txt pins it), or port the "
        "adapter's functions (and PRIVATE_ATTRIBUTES) to the installed version."
    )


# ----------------------------------------------------------------------------------------------
# Algorithms: optimizer wrappers, the temperature, target networks, counters
# ----------------------------------------------------------------------------------------------


def torch_optimizer(wrapper: Algorithm.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside Tianshou's optimizer wrapper."""
    return wrapper._optim


def optimized_module(wrapper: Algorithm.Optimizer) -> torch.nn.Module:
    """The module whose parameters the wrapper optimizes (and clips)."""
    return wrapper._module


def max_grad_norm(wrapper: Algorithm.Optimizer) -> float | None:
    """The wrapper's gradient-norm clip (None: no clipping)."""
    return wrapper._max_grad_norm


@dataclass
class Temperature:
    """SAC's automatic entropy temperature (Tianshou's ``AutoAlpha``)."""

    log_alpha: torch.nn.Parameter
    optimizer: torch.optim.Optimizer  # not in Tianshou's list of the algorithm's optimizers
    target_entropy: float


def automatic_temperature(alpha: object) -> Temperature | None:
    """The parts of an automatic temperature; None for a fixed one."""
    if not hasattr(alpha, "_log_alpha"):
        return None
    return Temperature(alpha._log_alpha, alpha._optim, float(alpha._target_entropy))


def lagged_network_pairs(algorithm: Algorithm) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    """(source, target) of each target network, in Tianshou's order; [] without any."""
    lagged = getattr(algorithm, "_lagged_networks", None)
    if lagged is None:
        return []
    return [(pair.source, pair.target) for pair in lagged._lagged_network_pairs]


def td3_update_count(algorithm: Algorithm) -> int:
    """TD3's count of critic updates, which schedules the delayed actor update."""
    return algorithm._cnt


def advance_td3_update_count(algorithm: Algorithm) -> None:
    algorithm._cnt += 1


def target_copy_update_count(algorithm: Algorithm) -> int:
    """The updates so far of discrete BCQ, CQL (QR-DQN) and CRR: every ``freq``-th copies the
    target networks."""
    return algorithm._iter


def advance_target_copy_update_count(algorithm: Algorithm) -> None:
    algorithm._iter += 1


def counters(algorithm: Algorithm, names: tuple[str, ...]) -> dict[str, Any]:
    """The values of the counters ``names`` (``TD3_COUNTERS``, ``TARGET_COPY_COUNTERS``)."""
    return {name: getattr(algorithm, name) for name in names}


def restore_counters(algorithm: Algorithm, values: dict[str, Any]) -> None:
    for name, value in values.items():
        setattr(algorithm, name, value)


def discrete_bcq_log_threshold(policy: object) -> float:
    """log of DiscreteBCQPolicy's unlikely-action threshold (-inf without one)."""
    return policy._log_tau


def discrete_bcq_imitation_penalty(algorithm: Algorithm) -> float:
    """DiscreteBCQ's weight of the imitation logits' L2 penalty."""
    return algorithm._weight_reg


@dataclass
class CRRSettings:
    """DiscreteCRR's constructor settings, which it keeps in private attributes."""

    target_networks: bool
    target_update_freq: int
    policy_improvement_mode: str
    beta: float
    ratio_upper_bound: float
    min_q_weight: float


def crr_settings(algorithm: Algorithm) -> CRRSettings:
    return CRRSettings(
        target_networks=algorithm._target,
        target_update_freq=algorithm._freq,
        policy_improvement_mode=algorithm._policy_improvement_mode,
        beta=algorithm._beta,
        ratio_upper_bound=algorithm._ratio_upper_bound,
        min_q_weight=algorithm._min_q_weight,
    )


# ----------------------------------------------------------------------------------------------
# Replay buffers
# ----------------------------------------------------------------------------------------------


def stores_obs_next(buffer: ReplayBuffer) -> bool:
    """False for a buffer made with ``ignore_obs_next`` (obs_next is derived from obs)."""
    return buffer._save_obs_next


def insertion_index(buffer: ReplayBuffer) -> int:
    """Where the buffer writes its next transition (its oldest one, once it has wrapped)."""
    return buffer._insertion_idx


def mark_filled(buffer: ReplayBuffer, size: int) -> None:
    """The fill state a buffer has after ``size`` calls of ``add``: full, next write at row 0
    (for a buffer whose arrays were set directly, with ``set_batch``)."""
    buffer._size = size
    buffer._insertion_idx = 0


def set_buffer_column(buffer: ReplayBuffer, name: str, values: np.ndarray) -> None:
    """Add (or replace) the stored column ``name`` of every transition (e.g. ReBRAC's next
    dataset action); ``buffer[indices]`` then carries it."""
    from tianshou.data import Batch

    columns = {key: value for key, value in buffer._meta.__dict__.items() if key != name}
    buffer._meta = Batch(**columns, **{name: values})


def set_sampling_rng(buffer: ReplayBuffer, rng: np.random.RandomState) -> None:
    """The RNG the buffer samples its batches with (checkpointed by the caller)."""
    buffer._random_state = rng


def replay_buffer_state(buffer: ReplayBuffer) -> dict[str, Any]:
    """Everything a ``ReplayBuffer`` or ``VectorReplayBuffer`` holds, to pickle: its data and
    the whole instance state of it and of each sub-buffer (fill level, insertion index, the
    running episode's return, length and start, ``last_index``, the sampling RNGs).

    Tianshou keeps the data in one ``Batch`` per buffer; a vector buffer's sub-buffers hold views
    of the top buffer's. Those views are left out (pickling them would store every frame twice)
    and are made again by ``restore_replay_buffer_state`` (through the public ``set_batch``).
    The data is not copied: pickle the result before the buffer changes."""
    from tianshou.data import Batch

    def instance_state(buf: ReplayBuffer, with_data: bool) -> dict[str, Any]:
        return {
            key: value if isinstance(value, Batch) else copy.deepcopy(value)
            for key, value in vars(buf).items()
            if key != "buffers" and (with_data or not isinstance(value, Batch))
        }

    return {
        "type": type(buffer).__name__,
        "state": instance_state(buffer, with_data=True),
        "sub_buffers": [instance_state(sub, False) for sub in getattr(buffer, "buffers", [])],
    }


def restore_replay_buffer_state(buffer: ReplayBuffer, saved: dict[str, Any]) -> None:
    """Put ``replay_buffer_state``'s result back into ``buffer``, a buffer made with the same
    class, size, number of sub-buffers and options."""
    from tianshou.data import Batch

    subs = list(getattr(buffer, "buffers", []))
    if saved["type"] != type(buffer).__name__ or len(saved["sub_buffers"]) != len(subs):
        raise ValueError(
            f"saved {saved['type']} with {len(saved['sub_buffers'])} sub-buffers, not "
            f"{type(buffer).__name__} with {len(subs)}"
        )
    if saved["state"]["maxsize"] != buffer.maxsize:
        raise ValueError(f"saved buffer of size {saved['state']['maxsize']}, not {buffer.maxsize}")
    (data,) = [value for value in saved["state"].values() if isinstance(value, Batch)]
    for sub, state in zip(subs, saved["sub_buffers"], strict=True):
        vars(sub).update(copy.deepcopy(state))
    vars(buffer).update({k: v for k, v in saved["state"].items() if v is not data})
    if len(data.get_keys()) > 0:  # an empty buffer has no arrays yet
        buffer.set_batch(data)  # also gives the sub-buffers their views of it


# ----------------------------------------------------------------------------------------------
# The offline trainer
# ----------------------------------------------------------------------------------------------


def trainer_buffer(trainer: OfflineTrainer) -> ReplayBuffer:
    """The buffer the trainer samples from (after the algorithm's ``process_buffer``)."""
    return trainer._buffer


def trainer_update_step(trainer: OfflineTrainer) -> int:
    """The gradient steps the trainer has counted."""
    return trainer._current_update_step


def offline_training_step(
    trainer: OfflineTrainer, update: Callable[[ReplayBuffer, int], TrainingStats]
) -> Any:
    """``OfflineTrainer._training_step`` with ``update(buffer, batch_size)`` in place of
    ``algorithm.update`` (same logging, timing and result type)."""
    from tianshou.algorithm.algorithm_base import policy_within_training_step

    with policy_within_training_step(trainer.algorithm.policy):
        stats = update(trainer._buffer, trainer.params.batch_size)
        trainer._update_moving_avg_stats_and_log_update_data(stats)
        trainer._policy_update_time += stats.train_time
        return trainer._TrainingStepResult(stats, env_step_advancement=trainer.params.batch_size)
