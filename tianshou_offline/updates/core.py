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

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from tianshou.algorithm.algorithm_base import Algorithm, TrainingStats
from tianshou.data import ReplayBuffer
from torch import Tensor

from tianshou_offline import tianshou_adapter

Params = dict[str, Tensor]
Batch = dict[str, Tensor]


class SampledDataset(Protocol):
    """What a step samples its batches from: DeviceDataset, ReplayTensors, or the Atari
    scripts' discrete.FrameStackDataset."""

    device: torch.device

    def sample(self, batch_size: int) -> Batch: ...


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
        # ReBRAC: ReBRAC.process_buffer adds the dataset's action at each next state
        act_next = getattr(buffer, "act_next", None)
        if act_next is not None:
            self.tensors["act_next"] = torch.as_tensor(
                np.asarray(act_next)[:size], device=self.device, dtype=torch.float32
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


def tianshou_maths(algorithm: Algorithm) -> bool:
    """True: the update as Tianshou 2.0.1 computes it, corrections off (a plain Tianshou
    algorithm has no switch and gets exactly its own maths)."""
    return bool(getattr(algorithm, "tianshou_maths", True))


def param_aliases(module: torch.nn.Module) -> Params:
    """The module's parameters as plain tensors sharing their storage (in-place updates reach
    the module, and through it ``state_dict``)."""
    return {name: p.detach() for name, p in module.named_parameters()}


def sub_params(params: Params, prefix: str) -> Params:
    """The entries of a module's parameter dict that belong to its submodule ``prefix``."""
    start = prefix + "."
    return {name[len(start) :]: p for name, p in params.items() if name.startswith(start)}


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
        return cls.of(
            tianshou_adapter.torch_optimizer(wrapped),
            max_grad_norm=tianshou_adapter.max_grad_norm(wrapped),
        )

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
        for source, target in tianshou_adapter.lagged_network_pairs(algorithm):
            names = [name for name, _ in source.named_parameters()]
            targets = [p.detach() for p in target.parameters()]
            self.by_source[id(source)] = dict(zip(names, targets, strict=True))
            self.targets += targets
            self.sources += [p.detach() for p in source.parameters()]

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
    device: torch.device  # where its tensors are (and batches must be)

    def variant(self) -> object:
        """The branch of the next step (host-side state only, no device sync)."""
        return None

    def advance(self) -> None:
        """Host-side bookkeeping after a step."""

    def __call__(self, batch: Batch, variant: object) -> Tensor:
        raise NotImplementedError

    def to_stats(self, values: list[float]) -> TrainingStats:
        raise NotImplementedError


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
        dataset: SampledDataset,
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
