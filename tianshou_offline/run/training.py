"""What every offline script shares: arguments, seeding, logging, checkpoints, training, evaluation.

A script builds its data, networks and Tianshou algorithm, then hands them to this module
(seeding and the test collectors are in ``run.evaluation``, the file names in ``run.summary``):

    args = parser.parse_args()                  # after add_training_args(parser, ...): checked
    seed_everything(args.seed)                  # run.evaluation
    with run_directory(args, task, "td3_bc") as log_path:   # made and locked; see its docstring
        run = OfflineRun(algorithm, args, log_path, score_fn=..., script="d4rl_td3_bc.py")
        run.train(buffer, test_collector)       # Tianshou's offline trainer, checkpoints each epoch
        run.evaluate(test_collector)            # final line + summary.json

Files in the log directory ``<logdir>/<task>/<algo>/<seed>-<time>/``:

* ``checkpoint.pth``: everything needed to continue (algorithm incl. optimizers, epoch, gradient
  step, RNG states, best score, evaluation history, ``extra_state`` such as observation
  statistics, and with ``--eval-in-background`` the snapshots whose evaluation had not come back),
  rewritten atomically after every epoch; ``--resume-path`` takes this file (or its
  directory) and the run continues in the same directory until ``--epoch`` epochs are done, so
  an interrupted run ends with exactly as many gradient steps as an uninterrupted one.
* ``policy_best.pth`` / ``policy_last.pth``: the algorithm state and ``extra_state``; ``--watch
  --resume-path policy_best.pth`` evaluates one without training.
* ``summary.json``: the final evaluation, best evaluation and per-epoch history (results tables);
  a ``--watch`` run writes ``watch.json`` instead, which results tables do not read.
* ``.lock`` while a process works in the directory (``run_directory``): a second is refused.
* TensorBoard event files (``tensorboard --logdir log``).

Every policy and checkpoint file records the ``--task`` and the script that wrote it; loading one
with another task or script is refused (older files without the record are not checked).

Each epoch ends with an evaluation of ``--test-num`` episodes: by Tianshou's trainer, in this
process, or with ``--eval-in-background`` by a worker process on a snapshot of the parameters
while training goes on (``run.background_eval``); either way it is logged, recorded and
checkpointed the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tianshou.algorithm.algorithm_base import Algorithm
from tianshou.data import Collector, CollectStats, ReplayBuffer
from tianshou.trainer import OfflineTrainer, OfflineTrainerParams
from tianshou.utils import TensorboardLogger
from torch.utils.tensorboard import SummaryWriter

from tianshou_offline import tianshou_adapter
from tianshou_offline.errors import UserInputError
from tianshou_offline.files import DirectoryLock, atomic_write, make_directory
from tianshou_offline.run.arguments import check_after_parsing
from tianshou_offline.run.background_eval import BackgroundEvaluator, EvalResult
from tianshou_offline.run.evaluation import global_rng_state, set_global_rng_state
from tianshou_offline.run.summary import (
    BEST_POLICY_NAME,
    CHECKPOINT_NAME,
    LAST_POLICY_NAME,
    SUMMARY_NAME,
    WATCH_SUMMARY_NAME,
)
from tianshou_offline.updates.core import FastUpdate
from tianshou_offline.updates.select import make_fast_update

# On the CPU, compiling pays back within ~30k updates (measurements: benchmarks/README.md, "The
# fast path"); the scripts' own budgets (1M updates) are far above this, tests and tries below.
COMPILE_PAYS_FROM_STEPS = 50_000

# Maps a mean episode return to the score shown beside it (D4RL's normalized score), or None.
ScoreFn = Callable[[float], float | None]


def add_training_args(
    parser: argparse.ArgumentParser,
    *,
    epoch: int,
    epoch_num_steps: int,
    batch_size: int,
    test_num: int = 10,
) -> None:
    """Add the arguments every offline script has, with the script's own defaults."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epoch", type=int, default=epoch, help="number of epochs")
    parser.add_argument(
        "--epoch-num-steps",
        type=int,
        default=epoch_num_steps,
        help="gradient steps per epoch (an evaluation and a checkpoint follow each epoch)",
    )
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument(
        "--test-num", type=int, default=test_num, help="evaluation episodes after each epoch"
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda"
    )
    parser.add_argument("--logdir", default="log")
    parser.add_argument(
        "--run-dir",
        default=None,
        help="write this run's files into exactly this directory instead of "
        "<logdir>/<task>/<algo>/<seed>-<time> (sweep.py gives each grid point a fixed one)",
    )
    parser.add_argument(
        "--resume-path",
        default=None,
        help="checkpoint.pth (or its run directory) to continue training from; "
        "with --watch: a policy file to evaluate",
    )
    parser.add_argument(
        "--watch", action="store_true", help="evaluate a saved policy without training"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the algorithm's update step (torch.compile, data on the device; "
        "--no-compile: the same step, eager). Default: on for CUDA; on "
        f"CPU only for runs of at least {COMPILE_PAYS_FROM_STEPS} gradient steps, since "
        "compiling takes a minute or more there",
    )
    parser.add_argument(
        "--tianshou-2.0.1-maths",
        dest="tianshou_maths",
        action="store_true",
        help="the update exactly as Tianshou 2.0.1 computes it, every correction of this "
        "collection off (see the algorithm's docstring), for comparison",
    )
    parser.add_argument(
        "--eval-in-background",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="evaluations run in a worker process on a snapshot of the policy while training "
        "goes on; results are logged when they arrive (background_eval.py)",
    )
    check_after_parsing(parser)  # parse_args refuses bad values with one line (arguments.py)


@contextlib.contextmanager
def run_directory(args: argparse.Namespace, task: str, algo_name: str) -> Iterator[Path]:
    """The run directory, ``<logdir>/<task>/<algo>/<seed>-<time>`` or ``--run-dir`` as given (a
    resumed run continues in its own), locked for this process while the block runs (a
    second process is refused with one line). If the block fails in a directory it created,
    before any checkpoint, the run's files and the directories it created are removed again:
    a failed run leaves nothing that looks like a run."""
    if args.resume_path and not args.watch:
        checkpoint = _resolve_checkpoint(args.resume_path)
        if not checkpoint.is_file():
            raise UserInputError(f"no saved policy or checkpoint at {checkpoint}")
        path, created = checkpoint.parent, []
    elif args.run_dir:
        path = Path(args.run_dir).expanduser()
        created = make_directory(path, "--run-dir")
    else:
        now = datetime.datetime.now().strftime("%y%m%d-%H%M%S")
        path = Path(args.logdir).expanduser() / task / algo_name / f"{args.seed}-{now}"
        created = make_directory(path, "--logdir")
    lock = None
    try:
        lock = DirectoryLock(path, "run directory")
        yield path
    except Exception:
        if created and not (path / CHECKPOINT_NAME).exists():
            _remove_unfinished_run(path, created, lock)
        raise
    finally:
        if lock is not None:
            lock.release()


def _remove_unfinished_run(path: Path, created: list[Path], lock: DirectoryLock | None) -> None:
    for name in ("events.out.tfevents.*", BEST_POLICY_NAME, LAST_POLICY_NAME):
        for file in path.glob(name):
            with contextlib.suppress(OSError):
                file.unlink()
    if lock is not None:
        lock.release()
    for directory in reversed(created):  # deepest first; only where nothing else is left
        with contextlib.suppress(OSError):
            directory.rmdir()


def save_state(path: Path, payload: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def load_state(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserInputError(f"no saved policy or checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # torch raises many types for a damaged file
        raise UserInputError(f"{path} is not a readable checkpoint ({err})") from err
    if not isinstance(payload, dict) or not ("algorithm" in payload or "policy" in payload):
        raise UserInputError(
            f"{path} was not written by these scripts (no 'algorithm' or 'policy' entry)"
        )
    return payload


def load_policy(
    algorithm: Algorithm,
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    task: str | None = None,
    script: str | None = None,
) -> dict[str, Any]:
    """Load a policy/checkpoint file into ``algorithm``; return its ``extra_state``.

    The file holds the whole algorithm (``"algorithm"``: networks, targets, optimizers) or only
    its policy (``"policy"``, as atari_qrdqn.py's expert: half the size without the target
    network, which the first update copies from the policy).
    ``task``, ``script``: refuse a file that records another task or script (files without the
    record, from before it was kept, are not checked)."""
    payload = load_state(path, device)
    saved_task, saved_script = payload.get("task"), payload.get("script")
    if task is not None and saved_task is not None and saved_task != task:
        raise UserInputError(
            f"{path} is a policy for --task {saved_task}, not {task}: pass --task {saved_task}, "
            f"or a policy trained on {task}"
        )
    if script is not None and saved_script is not None and saved_script != script:
        raise UserInputError(
            f"{path} was written by {saved_script}, not {script}: load it with {saved_script}"
        )
    try:
        if "algorithm" in payload:
            algorithm.load_state_dict(payload["algorithm"])
        else:
            algorithm.policy.load_state_dict(payload["policy"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise UserInputError(
            f"{path} does not fit this script's networks (other task or sizes?): "
            f"{str(err).splitlines()[0]}"
        ) from err
    return payload.get("extra_state", {})


def _resolve_checkpoint(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path / CHECKPOINT_NAME if path.is_dir() else path


class _RunLogger(TensorboardLogger):
    """TensorBoard logger that also records each evaluation (with its normalized score) for
    summary.json, and tells the trainer where a resumed run starts."""

    def __init__(self, run: OfflineRun) -> None:
        super().__init__(SummaryWriter(str(run.log_path)), save_interval=1, update_interval=100)
        self._run = run

    def log_test_data(self, log_data: dict, step: int) -> None:
        super().log_test_data(log_data, step)
        stats = log_data["returns_stat"]
        mean, std = float(stats["mean"]), float(stats["std"])
        score = self._run.score_fn(mean)
        if score is not None:
            self.writer.add_scalar("test/normalized_score", score, global_step=step)
        self._run.history.append(
            {
                "gradient_step": step // self._run.args.batch_size,
                "return_mean": mean,
                "return_std": std,
                "normalized_score": score,
            }
        )

    def restore_data(self) -> tuple[int, int, int]:
        epoch, gradient_step = self._run.start_epoch, self._run.start_gradient_step
        self.last_save_step = epoch
        # every evaluation is logged: a resumed background run may still log epoch 0's (step 0)
        self.last_log_test_step = -1
        self.last_log_update_step = gradient_step
        return epoch, gradient_step * self._run.args.batch_size, gradient_step


class _ProgressOfflineTrainer(OfflineTrainer):
    """Tianshou's offline trainer, with smoothed losses and the latest score in the progress bar,
    and with ``fast_update`` (if set) doing the gradient steps in place of ``algorithm.update``."""

    latest_score: str = "-"
    fast_update: FastUpdate | None = None

    def _training_step(self) -> Any:  # OfflineTrainer._TrainingStepResult
        if self.fast_update is None:
            return super()._training_step()
        return tianshou_adapter.offline_training_step(self, self.fast_update.update)

    def _create_epoch_pbar_data_dict(self, training_step_result: Any) -> dict[str, str]:
        stats = training_step_result.get_training_stats()
        shown = {k: f"{v:.3g}" for k, v in (stats.smoothed_loss or {}).items()}
        shown["score"] = self.latest_score
        return shown


@dataclass
class _PendingEvaluation:
    """A snapshot sent to the background evaluation, not answered yet. Kept because
    policy_best.pth must get the parameters that were evaluated, not the current ones; written
    into checkpoints because a resumed run must evaluate it again."""

    epoch: int
    gradient_step: int
    policy: dict[str, Any]  # what policy_best.pth gets: the algorithm state (CPU), extra_state

    def policy_state(self) -> dict[str, torch.Tensor]:
        """The policy module's part of the algorithm state: all that the worker's copy loads."""
        prefix = "policy."
        return {
            name.removeprefix(prefix): value
            for name, value in self.policy["algorithm"].items()
            if name.startswith(prefix)
        }


class OfflineRun:
    """One training run: resume, per-epoch checkpoints, evaluations (in this process or in the
    background), best/last policies, summary."""

    def __init__(
        self,
        algorithm: Algorithm,
        args: argparse.Namespace,
        log_path: Path,
        *,
        score_fn: ScoreFn | None = None,
        extra_state: dict[str, Any] | None = None,
        script: str | None = None,
    ) -> None:
        """``script``: the script's file name, recorded (with --task) in every saved file and
        checked on --resume-path."""
        self.algorithm = algorithm
        self.args = args
        self.log_path = log_path
        self.script = script
        # D4RL tasks pass their normalized score; where it is None the run reports raw returns
        self.expects_score = score_fn is not None
        self.score_fn: ScoreFn = score_fn or (lambda mean_return: None)
        self.extra_state = extra_state or {}
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.start_gradient_step = 0
        self.best_return = -np.inf
        self.train_seconds = 0.0
        self.end_gradient_step = 0
        self._trainer: _ProgressOfflineTrainer | None = None
        self._logger: _RunLogger | None = None
        self._final_policy_returns: np.ndarray | None = None
        # --eval-in-background: the worker, and the snapshots it has not answered yet by epoch
        self._evaluator: BackgroundEvaluator | None = None
        self._pending: dict[int, _PendingEvaluation] = {}
        # Tianshou's buffers sample with their own RandomState (seed 42 by default): seed it
        # from --seed so that seeds differ, and checkpoint it so that a resume continues it.
        self._buffer_rng = np.random.RandomState(args.seed)
        if args.resume_path and not args.watch:
            self._restore(_resolve_checkpoint(args.resume_path))

    # --- checkpoints -------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        """What every saved file records about the run that wrote it (checked by load_policy)."""
        return {"task": getattr(self.args, "task", None), "script": self.script}

    def _policy_payload(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm.state_dict(),
            "extra_state": self.extra_state,
            **self._identity(),
        }

    def _save_checkpoint(self, epoch: int, env_step: int, gradient_step: int) -> str:
        path = self.log_path / CHECKPOINT_NAME
        payload = self._policy_payload()
        payload.update(
            epoch=epoch,
            gradient_step=gradient_step,
            best_return=self.best_return,
            history=self.history,
            pending_evaluations=[vars(pending) for pending in self._pending.values()],
            rng={**global_rng_state(), "buffer": self._buffer_rng.get_state()},
        )
        save_state(path, payload)
        save_state(self.log_path / LAST_POLICY_NAME, self._policy_payload())
        return str(path)

    def _restore(self, path: Path) -> None:
        payload = load_state(path, self.args.device)
        if "epoch" not in payload:
            raise UserInputError(f"{path} is a policy file, not a checkpoint; use --watch with it")
        load_policy(
            self.algorithm,
            path,
            self.args.device,
            task=getattr(self.args, "task", None),
            script=self.script,
        )
        self.extra_state = payload.get("extra_state", {})
        self.start_epoch = payload["epoch"]
        self.start_gradient_step = payload["gradient_step"]
        self.best_return = payload["best_return"]
        self.history = list(payload["history"])
        self._pending = {
            entry["epoch"]: _PendingEvaluation(
                entry["epoch"],
                entry["gradient_step"],
                {**_cpu_copy(entry["policy"]), **self._identity()},
            )
            for entry in payload.get("pending_evaluations", [])
        }
        if self._pending and not getattr(self.args, "eval_in_background", False):
            raise UserInputError(
                f"{path} holds {len(self._pending)} evaluation(s) that were still running in the "
                f"background; resume it with --eval-in-background"
            )
        set_global_rng_state(payload["rng"])
        self._buffer_rng.set_state(payload["rng"]["buffer"])
        print(
            f"resuming {path}: epoch {self.start_epoch}/{self.args.epoch}, "
            f"gradient step {self.start_gradient_step}"
        )

    def _end_of_epoch(self, epoch: int, env_step: int, gradient_step: int) -> str:
        """The trainer's save_checkpoint_fn, called once after every epoch, before the trainer's
        own test step (if it has one): with --eval-in-background, first the results that have
        arrived, then the checkpoint, then this epoch's snapshot goes to the worker."""
        if self._evaluator is not None:
            self._record_background_results(self._evaluator.finished_results())
        path = self._save_checkpoint(epoch, env_step, gradient_step)
        if self._evaluator is not None:
            # After the checkpoint, as the trainer's test step: a resume evaluates the
            # checkpoint's own parameters first, in either mode.
            self._submit_for_evaluation(epoch, gradient_step)
        return path

    # --- training ----------------------------------------------------------------------------
    def _score(self, stats: CollectStats) -> float:
        """The trainer's score of its own (in-process) evaluation of the current parameters."""
        return self._record_evaluation(stats)

    def _record_evaluation(
        self, stats: CollectStats, evaluated_policy: dict[str, Any] | None = None
    ) -> float:
        """Return the score of an evaluation: the normalized score where known, else the mean
        return; show it in the progress bar; save policy_best.pth on improvement.

        ``evaluated_policy``: the snapshot that was evaluated (background evaluation); None: the
        current parameters. The trainer forces a 'best' at its initial evaluation; we keep the
        best over the whole run, across resumes, so policy_best.pth is only ever replaced by a
        better policy.
        """
        assert stats.returns_stat is not None
        mean = float(stats.returns_stat.mean)
        self._final_policy_returns = np.array(stats.returns)  # the latest evaluation, so far
        normalized = self.score_fn(mean)
        score = mean if normalized is None else normalized
        if self._trainer is not None:
            self._trainer.latest_score = f"{score:.1f}"
        if mean > self.best_return:
            self.best_return = mean
            if evaluated_policy is None:
                evaluated_policy = self._policy_payload()
            save_state(self.log_path / BEST_POLICY_NAME, evaluated_policy)
        return score

    def _start_background_evaluator(self, test_collector: Collector) -> BackgroundEvaluator:
        # imported here: background_eval imports this module, and only this option needs it
        setup = getattr(test_collector, "setup", None)
        if setup is None:
            raise ValueError(
                "--eval-in-background needs a test collector made by "
                "SeededEvalCollector.from_setup (the worker builds its own from the setup)"
            )
        policy_on_cpu = copy.deepcopy(self.algorithm.policy).cpu()
        return BackgroundEvaluator(policy_on_cpu, setup, self.args.test_num)

    def _submit_for_evaluation(self, epoch: int, gradient_step: int) -> None:
        """Send a snapshot of the current parameters to the worker, and keep it until answered."""
        assert self._evaluator is not None
        snapshot = {"algorithm": _cpu_copy(self.algorithm.state_dict())}
        snapshot["extra_state"] = self.extra_state
        snapshot.update(self._identity())
        pending = _PendingEvaluation(epoch, gradient_step, snapshot)
        self._pending[epoch] = pending
        self._evaluator.submit(epoch, gradient_step, pending.policy_state())

    def _record_background_results(self, results: list[EvalResult]) -> None:
        """Record results as the trainer's test step records its own: TensorBoard and history
        (at the snapshot's env step), then the score, best policy and progress bar."""
        assert self._logger is not None
        for result in results:
            pending = self._pending.pop(result.epoch)
            env_step = result.gradient_step * self.args.batch_size
            self._logger.log_test_data(asdict(result.stats), env_step)
            self._record_evaluation(result.stats, evaluated_policy=pending.policy)
            assert result.stats.returns_stat is not None
            print(
                f"Epoch #{result.epoch} (evaluated in the background): test_reward: "
                f"{result.stats.returns_stat.mean:.6f} ± {result.stats.returns_stat.std:.6f}, "
                f"best_reward: {self.best_return:.6f}",
                flush=True,
            )

    def train(self, buffer: ReplayBuffer, test_collector: Collector) -> None:
        """Train for the remaining epochs, evaluating with ``test_collector`` after each (or,
        with --eval-in-background, in a worker that builds the same collector from its setup)."""
        tianshou_adapter.set_sampling_rng(buffer, self._buffer_rng)
        self._logger = _RunLogger(self)
        self._logger.writer.add_text("args", str(vars(self.args)))
        if getattr(self.args, "eval_in_background", False):
            # started first: the new process imports torch while this one builds the trainer
            self._evaluator = self._start_background_evaluator(test_collector)
        try:
            params = OfflineTrainerParams(
                buffer=buffer,
                # None: the trainer runs no test steps; _end_of_epoch submits them instead
                test_collector=None if self._evaluator is not None else test_collector,
                max_epochs=self.args.epoch,
                epoch_num_steps=self.args.epoch_num_steps,
                test_step_num_episodes=self.args.test_num,
                batch_size=self.args.batch_size,
                compute_score_fn=self._score,
                save_checkpoint_fn=self._end_of_epoch,
                resume_from_log=self.start_epoch > 0,
                logger=self._logger,
                show_progress=not self.args.no_progress,
            )
            self._trainer = _ProgressOfflineTrainer(self.algorithm, params)
            if _use_fast_update(self.args):  # None for algorithms without a fast step
                self._trainer.fast_update = make_fast_update(
                    self.algorithm, tianshou_adapter.trainer_buffer(self._trainer), self.args.device
                )
            started = time.time()
            if self._evaluator is not None:
                # a resumed run first evaluates what the interrupted one was still waiting for
                for pending in self._pending.values():
                    self._evaluator.submit(
                        pending.epoch, pending.gradient_step, pending.policy_state()
                    )
                # the trainer's initial test step: the parameters training starts (or resumes) from
                self._submit_for_evaluation(self.start_epoch, self.start_gradient_step)
            self._trainer.run()
            if self._evaluator is not None:
                self._record_background_results(self._evaluator.remaining_results())
            self.train_seconds = time.time() - started
            self.end_gradient_step = tianshou_adapter.trainer_update_step(self._trainer)
            save_state(self.log_path / LAST_POLICY_NAME, self._policy_payload())
        except BaseException:
            # TensorBoard writes its file from a thread, maybe after run_directory has removed a
            # failed new run's files: closed first, it can no longer bring one back
            self._logger.writer.close()
            raise
        finally:
            if self._evaluator is not None:
                self._evaluator.close()  # also on errors and Ctrl-C: no process outlives the run
                self._evaluator = None

    # --- evaluation --------------------------------------------------------------------------
    def evaluate(self, test_collector: Collector, label: str = "final") -> dict[str, Any]:
        """Evaluate ``--test-num`` episodes; print one line; write summary.json atomically
        (label "watch": watch.json, so that a watch neither replaces a run's summary nor
        appears in results tables as a run)."""
        if self._final_policy_returns is not None:
            # The trainer's last test step already evaluated these very parameters on the same
            # seeded episodes: evaluating again would repeat it exactly.
            returns = self._final_policy_returns
        else:
            test_collector.reset()
            returns = np.asarray(test_collector.collect(n_episode=self.args.test_num).returns)
        returns = returns.astype(float)
        scores = [self.score_fn(float(r)) for r in returns]
        has_score = all(s is not None for s in scores)
        line = (
            f"{label} evaluation over {len(returns)} episodes: "
            f"return {returns.mean():.1f} ± {returns.std():.1f}"
        )
        if has_score:
            line += f", normalized score {np.mean(scores):.1f} ± {np.std(scores):.1f}"
        elif self.expects_score:
            line += " (no D4RL reference scores for this task: raw returns only)"
        print(line, flush=True)
        summary = {
            "script": Path(sys.argv[0]).name,
            "args": json_args(self.args),
            "log_path": str(self.log_path),
            "gradient_steps": max(self.end_gradient_step, self.start_gradient_step),
            "train_seconds": round(self.train_seconds, 1),
            label: {
                "episodes": len(returns),
                "return_mean": float(returns.mean()),
                "return_std": float(returns.std()),
                "returns": returns.tolist(),
                "normalized_score_mean": float(np.mean(scores)) if has_score else None,
                "normalized_score_std": float(np.std(scores)) if has_score else None,
            },
            "history": self.history,
        }
        if self.history:
            best = max(self.history, key=lambda h: h["return_mean"])
            summary["best"] = best
        name = WATCH_SUMMARY_NAME if label == "watch" else SUMMARY_NAME
        with atomic_write(self.log_path / name) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
        return summary


def _use_fast_update(args: argparse.Namespace) -> bool:
    """--compile as given; by default on CUDA, and on the CPU for runs long enough that the
    compile time is paid back (COMPILE_PAYS_FROM_STEPS)."""
    compile_flag = getattr(args, "compile", None)
    if compile_flag is not None:
        return bool(compile_flag)
    if torch.device(args.device).type == "cuda":
        return True
    return args.epoch * args.epoch_num_steps >= COMPILE_PAYS_FROM_STEPS


def _cpu_copy(value: Any) -> Any:
    """A copy of a state dict (nested dicts and lists of tensors, e.g. with optimizer states) on
    the CPU, independent of the live parameters and optimizer moments."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        copied = type(value)((key, _cpu_copy(item)) for key, item in value.items())
        if hasattr(value, "_metadata"):  # module versions, read by load_state_dict
            copied._metadata = copy.deepcopy(value._metadata)
        return copied
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(item) for item in value)
    return copy.deepcopy(value)


def json_args(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed arguments a summary or checkpoint records: those JSON can hold."""

    def jsonable(value: Any) -> bool:
        try:
            json.dumps(value)
            return True
        except TypeError:
            return False

    return {key: value for key, value in vars(args).items() if jsonable(value)}
