"""The compiled update of an algorithm: its own functional step over the dataset on the device
(frame-stacked buffers as ``discrete.FrameStackDataset``, others as ``core.DeviceDataset``)."""

from __future__ import annotations

import torch
from tianshou.algorithm.algorithm_base import Algorithm
from tianshou.data import ReplayBuffer

from tianshou_offline import tianshou_adapter
from tianshou_offline.updates.core import DeviceDataset, FastUpdate, FunctionalStep
from tianshou_offline.updates.discrete import FrameStackDataset


def functional_step(algorithm: Algorithm, twin_ensemble: bool = False) -> FunctionalStep | None:
    """The step ``algorithm`` compiles (``algorithms.base.FunctionalUpdate.compilable_step``), or
    None: a Tianshou class, or a subclass with its own ``_update_with_batch``, keeps its update.
    ``twin_ensemble``: TD3+BC's and CQL's twin critics as one batched network
    (``_ActorTwinCriticStep``; off by default: on the CPU it did not pay, benchmarks/README.md)."""
    compilable = getattr(algorithm, "compilable_step", None)
    step = compilable() if compilable is not None else None
    if step is not None and twin_ensemble and hasattr(step, "ensemble"):
        step.ensemble = True
    return step


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
    index tables (discrete.FrameStackDataset), so each frame is stored once."""

    if buffer.stack_num > 1 or not tianshou_adapter.stores_obs_next(buffer):
        return FrameStackDataset(buffer, device)
    return DeviceDataset(buffer, device)
