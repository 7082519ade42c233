"""Evaluation in a worker process (``--eval-in-background``), so that training does not wait for it.

Why: every epoch ends with ``--test-num`` evaluation episodes, played one environment step at a
time on the CPU. Done in the training process, they stop training meanwhile: on a GPU they took 13
of the 18 minutes of a 1M-step TD3+BC run, the gradient steps 5. Here one worker process plays the
evaluation episodes of a *snapshot* of the policy while training goes on, and
``training.OfflineRun`` logs each result when it arrives.

How the worker stays equivalent to the in-process evaluation:

* it is started with the ``spawn`` method (forking a process that uses torch threads or CUDA is
  unsafe) and receives, once, a CPU copy of the policy module and the test collector's
  ``EvalSetup`` (picklable builders of the environments and buffer, the seed, the exploration-noise
  setting), from which it builds its own ``SeededEvalCollector``;
* each job ``(epoch, gradient_step, policy state on the CPU)`` is loaded into that copy and played
  from the same seeded episode starts as in the training process; jobs are answered in order with
  ``(epoch, gradient_step, CollectStats)``;
* before each evaluation the worker seeds its own random generators with the evaluation seed, so
  a result depends on the parameters alone; the training process draws no random numbers for
  evaluations any more. For the deterministic evaluation policies (D4RL TD3+BC, CQL, IL; Atari IL,
  CRR) a run therefore has exactly the history of a run without ``--eval-in-background`` (on the
  CPU). BCQ samples its VAE and the Atari BCQ/CQL policies their evaluation epsilon from the global
  generators, so with them both training and evaluations draw other (but reproducible) numbers.

A worker error comes back as its traceback (a ``UserInputError`` as its one line); the worker ends
when the training process closes it, terminates it, or dies.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

import torch
from tianshou.algorithm.algorithm_base import Policy
from tianshou.data import CollectStats

from tianshou_offline.errors import UserInputError
from tianshou_offline.run.evaluation import EvalSetup, SeededEvalCollector, seed_everything

# How often a waiting side checks that the other side is still alive.
_LIVENESS_CHECK_SECONDS = 1.0
# How long a worker that was told to stop (or terminated) gets before it is killed.
_SHUTDOWN_SECONDS = 30.0


@dataclass
class EvalResult:
    """One evaluation: the epoch and gradient step of the evaluated snapshot, and its episodes."""

    epoch: int
    gradient_step: int
    stats: CollectStats


@dataclass
class _WorkerFailure:
    """What the worker sends instead of a result when it fails."""

    user_error: bool
    message: str
    traceback: str


class BackgroundEvaluator:
    """One worker process that evaluates policy snapshots in the order they are submitted.

    Use as a context manager (or call ``close``): the worker is stopped when the block ends,
    however it ends, so no process outlives the run.
    """

    def __init__(self, policy: Policy, setup: EvalSetup, num_episodes: int) -> None:
        """``policy``: a module like the one evaluated (its parameters come with each job); it is
        copied to the worker at start, so the caller's module is not touched."""
        context = multiprocessing.get_context("spawn")
        self._jobs: multiprocessing.Queue = context.Queue()
        self._results: multiprocessing.Queue = context.Queue()
        self._unanswered = 0
        # Not a daemon: the Atari test environments run in subprocesses of the worker, which a
        # daemon may not have. close() and the worker's watch on this process end it instead.
        self._process = context.Process(
            target=_worker_main,
            args=(policy, setup, num_episodes, self._jobs, self._results),
            name="background-eval",
        )
        # A new process would compile Tianshou's numba functions again when its collector makes
        # a buffer (about 6 s of CPU, taken from training on a small machine); playing episodes
        # never calls them, so the worker runs them as plain Python.
        with _environment_for_new_processes(NUMBA_DISABLE_JIT="1"):
            self._process.start()

    def submit(self, epoch: int, gradient_step: int, policy_state: dict[str, torch.Tensor]) -> None:
        """Queue one evaluation; returns at once. ``policy_state`` must be on the CPU."""
        self._jobs.put((epoch, gradient_step, policy_state))
        self._unanswered += 1

    def finished_results(self) -> list[EvalResult]:
        """The results that have arrived since the last call, oldest first; does not wait."""
        results = []
        while self._unanswered and (result := self._receive(wait=False)) is not None:
            results.append(result)
        return results

    def remaining_results(self) -> list[EvalResult]:
        """Wait for the answers to every submitted evaluation; oldest first."""
        results = []
        while self._unanswered:
            result = self._receive(wait=True)
            assert result is not None
            results.append(result)
        return results

    def _receive(self, wait: bool) -> EvalResult | None:
        while True:
            # Checked before reading: whatever a finished worker sent is then already readable.
            worker_alive = self._process.is_alive()
            try:
                message = self._results.get(timeout=_LIVENESS_CHECK_SECONDS if wait else 0.0)
            except queue.Empty:
                if not worker_alive:
                    raise RuntimeError(
                        f"the background evaluation process ended (exit code "
                        f"{self._process.exitcode}) with {self._unanswered} evaluation(s) "
                        f"unanswered; its error, if any, is printed above"
                    ) from None
                if not wait:
                    return None
                continue
            if isinstance(message, _WorkerFailure):
                if message.user_error:
                    raise UserInputError(message.message)
                raise RuntimeError(
                    f"the background evaluation failed:\n{message.traceback.rstrip()}"
                )
            self._unanswered -= 1
            return message

    def close(self) -> None:
        """Stop the worker: at once if evaluations are unanswered (an error or an interruption
        ended the run), else after it has taken the stop signal. Safe to call twice."""
        if self._process.is_alive() and not self._unanswered:
            self._jobs.put(None)
            self._process.join(_SHUTDOWN_SECONDS)
        if self._process.is_alive():
            self._process.terminate()  # SIGTERM: the worker closes its environments and ends
            self._process.join(_SHUTDOWN_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        # Jobs the worker never read must not keep this process waiting at exit to send them.
        self._jobs.cancel_join_thread()
        self._jobs.close()
        self._results.close()

    def __enter__(self) -> BackgroundEvaluator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _worker_main(
    policy: Policy,
    setup: EvalSetup,
    num_episodes: int,
    jobs: multiprocessing.Queue,
    results: multiprocessing.Queue,
) -> None:
    """The worker process: build the evaluation collector once, then answer jobs until told to
    stop (``None``), terminated, or the training process is gone."""
    # Ctrl-C reaches the whole process group: the training process handles it and closes us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so that `finally` closes the environments
    # One observation per environment and step: more threads would only take cores from training.
    torch.set_num_threads(1)
    collector = None
    try:
        collector = SeededEvalCollector.from_setup(policy, setup)
        while (job := _next_job(jobs)) is not None:
            epoch, gradient_step, policy_state = job
            policy.load_state_dict(policy_state)
            seed_everything(setup.seed)
            collector.reset()
            stats = collector.collect(n_episode=num_episodes)
            results.put(EvalResult(epoch, gradient_step, stats))
    except Exception as err:  # anything: the training process must hear of it
        results.put(
            _WorkerFailure(
                user_error=isinstance(err, UserInputError),
                message=str(err),
                traceback=traceback.format_exc(),
            )
        )
    finally:
        if collector is not None:
            collector.env.close()


def _next_job(jobs: multiprocessing.Queue) -> tuple[int, int, dict[str, torch.Tensor]] | None:
    """The next job, or None when told to stop or when the training process has died (it can
    then never stop us, and the job queue would wait forever)."""
    parent = multiprocessing.parent_process()
    while True:
        try:
            return jobs.get(timeout=_LIVENESS_CHECK_SECONDS)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return None


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> Any:
    raise SystemExit(0)


@contextlib.contextmanager
def _environment_for_new_processes(**variables: str) -> Iterator[None]:
    """Set environment variables while processes are started (they inherit them), then restore
    them: this process's own modules have read theirs already."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
