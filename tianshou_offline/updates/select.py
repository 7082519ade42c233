"""The compiled update of an algorithm: its own functional step over the dataset on the device
(frame-stacked buffers as ``discrete.FrameStackDataset``, others as ``core.DeviceDataset``)."""

from __future__ import annotations

import torch
from tianshou.algorithm.algorithm_base import Algorithm, TrainingStats
from tianshou.data import ReplayBuffer

from tianshou_offline import tianshou_adapter
from tianshou_offline.updates.core import DeviceDataset, FastUpdate, FunctionalStep
from tianshou_offline.updates.discrete import FrameStackDataset, StagedBatches


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
        if hasattr(algorithm, "sample_step_batch"):
            raise NotImplementedError(
                f"{type(algorithm).__name__} samples its batches on the host (OnlineUpdate)"
            )
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


class OnlineUpdate:
    """``algorithm.update(buffer, sample_size)`` of an online loop (examples/atari/atari_qrdqn.py),
    for an algorithm whose step takes host-sampled batches (``sample_step_batch``, e.g.
    ``algorithms.QRDQN``): the step eagerly
    (Tianshou's ``update``: sample, n-step bookkeeping, step), or compiled: the same sample
    and bookkeeping on the host, the batch copied into fixed tensors on the device
    (``StagedBatches``) and the compiled step run on them (``FastUpdate``, a CUDA graph on
    CUDA). Both draw the same batches from the buffer's RNG, so a checkpoint resumes either.
    If compiling fails, Tianshou's ``update`` (the eager step) runs from then on, with one line
    saying why; the batch staged for the failed call is dropped (one extra draw of the RNG)."""

    def __init__(self, algorithm: Algorithm, compile: bool) -> None:
        self.algorithm = algorithm
        self.fast: FastUpdate | None = None
        self.staged: StagedBatches | None = None
        step = algorithm.functional_step() if compile else None
        if step is not None:
            self.staged = StagedBatches(step.device)
            # on the CPU each update's loss is read at once (no cost there), so the loop logs
            # the same losses as the eager step; on CUDA the mean of every 100 (one sync)
            interval = 1 if step.device.type == "cpu" else 100
            self.fast = FastUpdate(
                algorithm, step, self.staged, compile=True, stats_interval=interval
            )

    def __call__(self, buffer: ReplayBuffer, batch_size: int) -> TrainingStats:
        if self.fast is None or self.staged is None or self.fast.failed is not None:
            return self.algorithm.update(sample_size=batch_size, buffer=buffer)
        self.staged.stage(self.algorithm.sample_step_batch(buffer, batch_size))
        return self.fast.update(buffer, batch_size)
