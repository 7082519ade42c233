#!/usr/bin/env python3
"""Online QR-DQN on Atari: the expert whose data the offline Atari examples learn from.

Train an expert (its best policy lands in log/<task>/qrdqn/policy.pth)::

    python3 atari_qrdqn.py --task PongNoFrameskip-v4

Record 1M transitions of it playing with 20% random actions, as an HDF5 buffer file next to
the policy (log/<task>/qrdqn/expert.hdf5; a name ending in .pkl pickles the buffer instead)::

    python3 atari_qrdqn.py --task PongNoFrameskip-v4 --watch \
        --resume-path log/PongNoFrameskip-v4/qrdqn/policy.pth \
        --eps-test 0.2 --buffer-size 1000000 --save-buffer-name expert.hdf5

Recording keeps every frame once in memory (about 7 KB per transition: 7 GB for 1M).

A training run writes into ``<logdir>/<task>/qrdqn/<seed>-<time>/`` (or ``--run-dir``):
``checkpoint.pth`` and ``replay_buffer.<env step>.pkl`` after every epoch and every
``--checkpoint-every`` env steps, ``policy.pth`` (the best evaluation's policy, also copied to
``<logdir>/<task>/qrdqn/policy.pth``), ``policy_last.pth``, TensorBoard logs and, at the end,
``summary.json``. After an interruption (even kill -9) continue it with::

    python3 atari_qrdqn.py --resume-path log/PongNoFrameskip-v4/qrdqn/0-<time>

It goes on from the last checkpoint exactly as if it had not stopped: the networks, target
network, optimizer and update counter, the env-step, gradient-step and epoch counters (hence
the exploration rate), the replay buffer with its sampling RNGs, the random states of Python,
NumPy and torch, and the training games themselves (emulator, no-op RNG, frame stacks, lives)
are saved; evaluations restart their games from the same seeds every time. The run's settings
are taken from the checkpoint; ``--epoch`` may be raised to train on over several sittings.
A ``--resume-path`` that is a policy file (no counters) only starts a new run from it.

The update is Tianshou 2.0.1's QR-DQN maths written as one functional step
(``tianshou_offline.algorithms.QRDQN``; test/test_qrdqn_step.py checks it against Tianshou's
class). ``--compile`` compiles it (default on CUDA, and on the CPU for runs of at least
10,000 gradient steps, where it pays back its compile time: benchmarks/README.md); batches are
still sampled by the replay buffer on the host, so a checkpoint resumes either way.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tianshou.algorithm.algorithm_base import policy_within_training_step
from tianshou.algorithm.modelfree.qrdqn import QRDQNPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Collector, VectorReplayBuffer
from tianshou.env import BaseVectorEnv
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from tianshou_offline import tianshou_adapter
from tianshou_offline.algorithms import QRDQN
from tianshou_offline.atari.env import (
    FRAME_STACK,
    add_atari_env_args,
    evaluation_buffer,
    make_atari_env,
    restore_options,
    vector_env_states,
)
from tianshou_offline.atari.networks import NatureCNN, QuantileNet
from tianshou_offline.data.atari_buffer import save_atari_buffer
from tianshou_offline.errors import UserInputError, run_main
from tianshou_offline.files import atomic_write, check_writable, remove_stale_temporary_files
from tianshou_offline.run.arguments import check_after_parsing
from tianshou_offline.run.evaluation import (
    SeededEvalCollector,
    global_rng_state,
    seed_everything,
    set_global_rng_state,
)
from tianshou_offline.run.summary import CHECKPOINT_NAME, LAST_POLICY_NAME, SUMMARY_NAME
from tianshou_offline.run.training import (
    json_args,
    load_policy,
    load_state,
    run_directory,
    save_state,
)
from tianshou_offline.updates.select import OnlineUpdate

POLICY_NAME = "policy.pth"
# --compile's default on the CPU: from this many gradient steps of a run on (see use_compile)
COMPILE_PAYS_FROM_UPDATES = 10_000
SCRIPT = "atari_qrdqn.py"  # what a policy file it loads must have been written by, if recorded
BUFFER_FILE = "replay_buffer.{env_step}.pkl"  # the checkpoint names the one that belongs to it
# The settings a resumed run takes from its checkpoint (giving another value is refused): they
# decide what the run computes. The others (--epoch, --device, --checkpoint-every, ...) may
# change between sittings.
RUN_SETTINGS = (
    "task",
    "max_episode_steps",
    "seed",
    "eps_test",
    "eps_train",
    "eps_train_final",
    "eps_decay_steps",
    "buffer_size",
    "lr",
    "gamma",
    "num_quantiles",
    "n_step",
    "target_update_freq",
    "epoch_num_steps",
    "collection_step_num_env_steps",
    "update_per_step",
    "batch_size",
    "training_num",
    "test_num",
)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_atari_env_args(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eps-test", type=float, default=0.005, help="random-action rate in tests")
    parser.add_argument("--eps-train", type=float, default=1.0, help="initial exploration rate")
    parser.add_argument("--eps-train-final", type=float, default=0.05)
    parser.add_argument(
        "--eps-decay-steps", type=int, default=1_000_000, help="env steps of linear decay"
    )
    parser.add_argument(
        "--buffer-size",
        type=int,
        default=100_000,
        help="replay buffer size; with --save-buffer-name: transitions to record",
    )
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--num-quantiles", type=int, default=200)
    parser.add_argument("--n-step", type=int, default=3)
    parser.add_argument("--target-update-freq", type=int, default=500)
    parser.add_argument("--epoch", type=int, default=100)
    parser.add_argument("--epoch-num-steps", type=int, default=100_000, help="env steps per epoch")
    parser.add_argument(
        "--collection-step-num-env-steps", type=int, default=10, help="env steps between updates"
    )
    parser.add_argument(
        "--update-per-step", type=float, default=0.1, help="gradient steps per env step"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--training-num", type=int, default=10, help="parallel training envs")
    parser.add_argument("--test-num", type=int, default=10, help="test episodes (parallel envs)")
    parser.add_argument("--logdir", default="log")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda"
    )
    parser.add_argument(
        "--resume-path",
        default=None,
        help="a run directory (or its checkpoint.pth) to continue; a policy.pth to start a new "
        "run from, or with --watch to evaluate / record",
    )
    parser.add_argument(
        "--run-dir",
        default=None,
        help="write this run's files into exactly this directory instead of "
        "<logdir>/<task>/qrdqn/<seed>-<time>",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=50_000,
        help="env steps between checkpoints within an epoch (0: only after each epoch); a "
        "checkpoint writes the replay buffer, about 7 KB per transition",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the update step (torch.compile; --no-compile: the same step, eager). "
        f"Default: on for CUDA; on the CPU for runs of at least {COMPILE_PAYS_FROM_UPDATES} "
        "gradient steps (compiling takes about a minute there)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--watch", action="store_true", help="only evaluate (or record) the --resume-path policy"
    )
    parser.add_argument(
        "--save-buffer-name",
        default=None,
        help="with --watch: record --buffer-size transitions to this .hdf5 (or .pkl) file; a "
        "bare file name is put next to --resume-path",
    )
    check_after_parsing(parser)  # one line for a bad --seed, --epoch, --device, ...
    return parser


def buffer_output_path(save_buffer_name: str, resume_path: str | None) -> Path:
    """A bare file name goes next to the policy that plays, as in the README's commands."""
    name = Path(save_buffer_name).expanduser()
    if resume_path is not None and name.parent == Path("."):
        return Path(resume_path).expanduser().parent / name
    return name


def recording_env_count(buffer_size: int, test_num: int) -> int:
    """A vector buffer splits its size evenly between the envs: use as many as divide it."""
    return max(n for n in range(1, test_num + 1) if buffer_size % n == 0)


def record_buffer(
    algorithm: QRDQN,
    envs: BaseVectorEnv,
    args: argparse.Namespace,
    num_actions: int,
    path: Path,
) -> None:
    """Let the policy play (with ``--eps-test`` random actions) in test environments
    (unclipped rewards, whole games as episodes) and save ``--buffer-size`` transitions."""
    num_envs = len(envs)
    buffer = VectorReplayBuffer(
        args.buffer_size,
        buffer_num=num_envs,
        ignore_obs_next=True,  # o_{t+1} is the next row's obs
        save_only_last_obs=True,  # each frame stored once; stacks rebuilt on sampling
        stack_num=FRAME_STACK,
    )
    collector = Collector(algorithm, envs, buffer, exploration_noise=True)
    collector.reset()
    chunk = num_envs * max(1, 10_000 // num_envs)  # a multiple of num_envs: exact step counts
    returns: list[float] = []  # of the episodes finished while recording
    with tqdm(total=args.buffer_size, desc=f"record {path.name}", unit="step") as progress:
        while len(buffer) < args.buffer_size:
            steps = min(chunk, args.buffer_size - len(buffer))
            returns.extend(collector.collect(n_step=steps).returns)
            progress.update(steps)
    behaviour = f"{np.mean(returns):.1f} ± {np.std(returns):.1f}" if returns else "n/a"
    print(
        f"recorded {len(buffer)} transitions; behaviour policy return {behaviour} "
        f"over {len(returns)} finished episodes"
    )
    if path.suffix == ".pkl":
        with atomic_write(path) as tmp, open(tmp, "wb") as f:
            pickle.dump(buffer, f, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        save_atari_buffer(
            path,
            buffer,
            num_actions=num_actions,
            task=args.task,
            source="atari_qrdqn",
            policy=str(args.resume_path),
            eps=args.eps_test,
            seed=args.seed,
            behaviour_returns=[float(r) for r in returns],
        )
    print(f"saved the buffer to {path}")


def evaluate(algorithm: QRDQN, test_collector: Collector, test_num: int) -> np.ndarray:
    test_collector.reset()
    returns = np.asarray(test_collector.collect(n_episode=test_num).returns, dtype=float)
    print(
        f"evaluation over {len(returns)} episodes: "
        f"return {returns.mean():.1f} ± {returns.std():.1f}",
        flush=True,
    )
    return returns


def build_algorithm(
    args: argparse.Namespace, action_space: Any, feature_net: torch.nn.Module | None = None
) -> QRDQN:
    """QR-DQN on the Nature CNN (or ``feature_net``); its update is the functional step of
    ``tianshou_offline.updates.discrete.QRDQNStep``, Tianshou 2.0.1's maths."""
    feature_net = NatureCNN() if feature_net is None else feature_net
    net = QuantileNet(feature_net, int(action_space.n), args.num_quantiles).to(args.device)
    policy = QRDQNPolicy(
        model=net,
        action_space=action_space,
        eps_training=args.eps_train,
        eps_inference=args.eps_test,
    )
    return QRDQN(
        policy=policy,
        optim=AdamOptimizerFactory(lr=args.lr),
        gamma=args.gamma,
        num_quantiles=args.num_quantiles,
        n_step_return_horizon=args.n_step,
        target_update_freq=args.target_update_freq,
    ).to(args.device)


def use_compile(args: argparse.Namespace) -> bool:
    """--compile as given; by default on CUDA, and on the CPU for runs of at least
    COMPILE_PAYS_FROM_UPDATES gradient steps (benchmarks/README.md: on one CPU core the
    compiled step is faster than the eager one and pays back its compile time in a few
    thousand updates)."""
    if args.compile is not None:
        return bool(args.compile)
    if torch.device(args.device).type == "cuda":
        return True
    updates = args.epoch * args.epoch_num_steps * args.update_per_step
    return updates >= COMPILE_PAYS_FROM_UPDATES


def exploration_rate(args: argparse.Namespace, env_step: int) -> float:
    """Nature DQN schedule: linear decay over --eps-decay-steps env steps, then constant."""
    progress = min(1.0, env_step / args.eps_decay_steps)
    return args.eps_train + progress * (args.eps_train_final - args.eps_train)


def reached_expert_level(task: str, mean_return: float) -> bool:
    return "Pong" in task and mean_return >= 20  # Pong's maximum is 21


class OnlineRun:
    """One training run: Tianshou's off-policy loop (collect ``--collection-step-num-env-steps``
    env steps, then ``--update-per-step`` gradient steps per env step; an evaluation after each
    epoch), written out here so that every piece of its state can be checkpointed and resumed.
    """

    def __init__(self, args: argparse.Namespace, log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.expert_path = log_path.parent / POLICY_NAME  # the README's path of the expert
        env, self.train_envs, self.test_envs = make_atari_env(
            args.task,
            args.seed,
            args.training_num,
            args.test_num,
            max_episode_steps=args.max_episode_steps,
            resumable_training=True,
        )
        self.algorithm = build_algorithm(args, env.action_space)
        self.buffer = VectorReplayBuffer(
            args.buffer_size,
            buffer_num=args.training_num,
            ignore_obs_next=True,  # o_{t+1} is the next row's obs
            save_only_last_obs=True,  # each frame stored once; stacks rebuilt on sampling
            stack_num=FRAME_STACK,
        )
        # Tianshou's buffers sample with RandomState(42) each: seeds should differ by --seed
        tianshou_adapter.set_sampling_rng(self.buffer, np.random.RandomState(args.seed))
        for index, sub in enumerate(self.buffer.buffers):
            tianshou_adapter.set_sampling_rng(sub, np.random.RandomState([args.seed, index]))
        self.train_collector = Collector(
            self.algorithm, self.train_envs, self.buffer, exploration_noise=True
        )
        # every evaluation plays games from the same seeds (after the training envs' seeds)
        self.test_collector = SeededEvalCollector(
            self.algorithm,
            self.test_envs,
            args.seed + args.training_num,
            buffer=evaluation_buffer(args.test_num, args.max_episode_steps),
            exploration_noise=True,
        )
        # progress (all of it in the checkpoint)
        self.epoch = 0  # epochs completed (each ends with an evaluation)
        self.steps_in_epoch = 0
        self.env_step = 0
        self.gradient_step = 0
        self.stopped = False  # the expert level was reached
        self.best_return = -float("inf")
        self.history: list[dict[str, Any]] = []
        self.seconds = {"train": 0.0, "collect": 0.0, "update": 0.0, "eval": 0.0}
        self.resumed = False
        self.saved_at_env_step = -1

    # --- checkpoints -------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {"task": self.args.task, "script": SCRIPT}

    def checkpoint(self) -> None:
        """checkpoint.pth and the replay buffer, each written atomically; the buffer first, under
        a name with the env step that checkpoint.pth then names, so that a kill at any moment
        leaves a checkpoint and its own buffer."""
        self._remove_stale_buffer_files()
        buffer_name = BUFFER_FILE.format(env_step=self.env_step)
        with atomic_write(self.log_path / buffer_name) as tmp, open(tmp, "wb") as file:
            state = tianshou_adapter.replay_buffer_state(self.buffer)
            pickle.dump(state, file, protocol=pickle.HIGHEST_PROTOCOL)
        payload = {
            "algorithm": self.algorithm.state_dict(),
            "extra_state": {},
            **self._identity(),
            "counters": tianshou_adapter.counters(
                self.algorithm, tianshou_adapter.TARGET_COPY_COUNTERS
            ),
            "progress": {
                "epoch": self.epoch,
                "steps_in_epoch": self.steps_in_epoch,
                "env_step": self.env_step,
                "gradient_step": self.gradient_step,
                "stopped": self.stopped,
            },
            "best_return": self.best_return,
            "history": self.history,
            "seconds": self.seconds,
            "args": json_args(self.args),
            "buffer_file": buffer_name,
            "env_states": vector_env_states(self.train_envs),
            "rng": global_rng_state(),
        }
        save_state(self.log_path / CHECKPOINT_NAME, payload)
        save_state(self.log_path / LAST_POLICY_NAME, self._policy_payload())
        for old in self.log_path.glob(BUFFER_FILE.format(env_step="*")):
            if old.name != buffer_name:
                old.unlink()
        self.saved_at_env_step = self.env_step

    def _remove_stale_buffer_files(self) -> None:
        """Temporary buffer files of killed writers (atomic_write cleans only its own name's)."""
        for tmp in self.log_path.glob(".replay_buffer.*.pkl.*.tmp"):
            final = tmp.name[1:].split(".pkl.")[0] + ".pkl"
            remove_stale_temporary_files(self.log_path / final)

    def restore(self, path: Path, payload: dict[str, Any]) -> None:
        """Continue from ``payload`` (checkpoint.pth at ``path``, loaded): after everything is
        built, so that nothing built afterwards draws from the restored random states."""
        load_policy(self.algorithm, path, self.args.device, task=self.args.task, script=SCRIPT)
        tianshou_adapter.restore_counters(self.algorithm, payload["counters"])
        progress = payload["progress"]
        self.epoch, self.steps_in_epoch = progress["epoch"], progress["steps_in_epoch"]
        self.env_step, self.gradient_step = progress["env_step"], progress["gradient_step"]
        self.stopped = progress["stopped"]
        self.best_return = payload["best_return"]
        self.history = list(payload["history"])
        self.seconds = dict(payload["seconds"])
        buffer_path = path.parent / payload["buffer_file"]
        try:
            with open(buffer_path, "rb") as file:
                buffer_state = pickle.load(file)
        except (OSError, pickle.UnpicklingError, EOFError) as err:
            raise UserInputError(
                f"cannot read {buffer_path}, the replay buffer of {path} ({err})"
            ) from err
        try:
            tianshou_adapter.restore_replay_buffer_state(self.buffer, buffer_state)
            # the training games go on from the saved emulator states and observations
            self.train_collector.reset_env(restore_options(payload["env_states"]))
        except ValueError as err:
            raise UserInputError(f"{path} does not fit this run: {err}") from err
        set_global_rng_state(payload["rng"])
        self.resumed = True
        self.saved_at_env_step = self.env_step
        print(
            f"resuming {path}: epoch {self.epoch}/{self.args.epoch} done, "
            f"env step {self.env_step}, gradient step {self.gradient_step}",
            flush=True,
        )

    def _policy_payload(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm.state_dict(), "extra_state": {}, **self._identity()}

    # --- training ----------------------------------------------------------------------------
    def start(self) -> None:
        """A new run: start the games, fill the buffer with one batch per env of random play
        (not counted as env steps, as in Tianshou's examples), evaluate the initial policy."""
        self.train_collector.reset()
        with policy_within_training_step(self.algorithm.policy):
            self.algorithm.policy.set_eps_training(self.args.eps_train)
            self.train_collector.collect(n_step=self.args.batch_size * self.args.training_num)
        self.evaluate_epoch()

    def evaluate_epoch(self) -> float:
        started = time.time()
        self.test_collector.reset()
        returns = np.asarray(
            self.test_collector.collect(n_episode=self.args.test_num).returns, dtype=float
        )
        self.seconds["eval"] += time.time() - started
        mean, std = float(returns.mean()), float(returns.std())
        self.history.append(
            {
                "epoch": self.epoch,
                "env_step": self.env_step,
                "gradient_step": self.gradient_step,
                "return_mean": mean,
                "return_std": std,
                "normalized_score": None,
            }
        )
        self.writer.add_scalar("test/return", mean, self.env_step)
        self.writer.add_scalar("test/return_std", std, self.env_step)
        if mean > self.best_return:
            self.best_return = mean
            # the policy's network only (9 MB for Pong): the file to keep and share
            payload = {"policy": self.algorithm.policy.state_dict(), "extra_state": {}}
            payload.update(self._identity())
            save_state(self.log_path / POLICY_NAME, payload)
            save_state(self.expert_path, payload)
        self.stopped = reached_expert_level(self.args.task, mean)
        return mean

    def train(self) -> None:
        args = self.args
        total = args.epoch * args.epoch_num_steps
        loss_sum, loss_count = 0.0, 0
        last_test = f"{self.history[-1]['return_mean']:.1f}" if self.history else "-"
        progress = tqdm(
            total=max(total, self.env_step),
            initial=self.env_step,
            unit="env step",
            desc="qrdqn",
            disable=args.no_progress,
            dynamic_ncols=True,
        )
        started, timed_updates = time.time(), 0
        # built after a restore (which replaces the tensors the step updates in place)
        update = OnlineUpdate(self.algorithm, use_compile(args))
        with progress:
            while self.epoch < args.epoch and not self.stopped:
                # --- one training step: collect, then update ----------------------------------
                eps = exploration_rate(args, self.env_step)
                self.algorithm.policy.set_eps_training(eps)
                with policy_within_training_step(self.algorithm.policy):
                    tick = time.time()
                    stats = self.train_collector.collect(n_step=args.collection_step_num_env_steps)
                    tock = time.time()
                    updates = round(args.update_per_step * stats.n_collected_steps)
                    for _ in range(updates):
                        result = update(self.buffer, args.batch_size)
                        loss_sum += float(result.loss)
                        loss_count += 1
                    self.seconds["collect"] += tock - tick
                    self.seconds["update"] += time.time() - tock
                previous = self.env_step
                self.env_step += stats.n_collected_steps
                self.steps_in_epoch += stats.n_collected_steps
                self.gradient_step += updates
                timed_updates += updates
                progress.update(stats.n_collected_steps)
                # --- logs ---------------------------------------------------------------------
                if stats.n_collected_episodes:
                    self.writer.add_scalar("train/return", stats.returns.mean(), self.env_step)
                if self.env_step // 1000 > previous // 1000:
                    self.writer.add_scalar("train/eps", eps, self.env_step)
                if loss_count >= 100:
                    self.writer.add_scalar("train/loss", loss_sum / loss_count, self.env_step)
                    elapsed = max(time.time() - started, 1e-9)
                    progress.set_postfix(
                        epoch=f"{self.epoch + 1}/{args.epoch}",
                        upd=self.gradient_step,
                        eps=f"{eps:.3f}",
                        loss=f"{loss_sum / loss_count:.3g}",
                        test=last_test,
                        upd_s=f"{timed_updates / elapsed:.1f}",
                        refresh=False,
                    )
                    loss_sum, loss_count = 0.0, 0
                # --- end of epoch: evaluation, then a checkpoint; or a checkpoint within it ----
                if self.steps_in_epoch >= args.epoch_num_steps:
                    self.epoch += 1
                    self.steps_in_epoch = 0
                    mean = self.evaluate_epoch()
                    last_test = f"{mean:.1f}"
                    self._record_speed()
                    self.checkpoint()
                    progress.write(
                        f"epoch {self.epoch}: env step {self.env_step}, gradient step "
                        f"{self.gradient_step}, test return {mean:.1f} ± "
                        f"{self.history[-1]['return_std']:.1f} (best {self.best_return:.1f})"
                    )
                elif args.checkpoint_every and (
                    self.env_step // args.checkpoint_every > previous // args.checkpoint_every
                ):
                    self._record_speed()
                    self.checkpoint()
        self._record_speed()
        if self.saved_at_env_step != self.env_step:
            self.checkpoint()

    def _record_speed(self) -> None:
        """Add this sitting's wall time to the run's; log the speeds so far."""
        sitting = time.time() - self._sitting_started
        self.seconds["train"] = self._train_seconds_before + sitting
        for name, value in self.speeds().items():
            self.writer.add_scalar(f"speed/{name}", value, self.env_step)

    def speeds(self) -> dict[str, float]:
        """Env steps and updates per second: over the whole run's wall time (collection,
        updates, evaluations and checkpoints), and of the collection and the updates alone."""
        seconds = self.seconds
        return {
            "env_steps_per_second": self.env_step / max(seconds["train"], 1e-9),
            "collect_env_steps_per_second": self.env_step / max(seconds["collect"], 1e-9),
            "updates_per_second": self.gradient_step / max(seconds["update"], 1e-9),
        }

    def run(self) -> dict[str, Any]:
        self._sitting_started = time.time()
        self._train_seconds_before = self.seconds["train"]
        # a resumed run's TensorBoard curves drop what the interrupted one logged after the
        # checkpoint (purge_step), so every step appears once
        self.writer = SummaryWriter(
            str(self.log_path), purge_step=self.env_step if self.resumed else None
        )
        try:
            if not self.resumed:
                self.writer.add_text("args", str(vars(self.args)))
                self.start()
                self.checkpoint()
            self.train()
            return self.finish()
        finally:
            self.writer.close()

    def finish(self) -> dict[str, Any]:
        """Evaluate the best policy; write summary.json."""
        print(f"best policy: {self.log_path / POLICY_NAME} (also {self.expert_path})")
        load_policy(self.algorithm, self.log_path / POLICY_NAME, self.args.device)
        returns = evaluate(self.algorithm, self.test_collector, self.args.test_num)
        best = max(self.history, key=lambda h: h["return_mean"])
        summary = {
            "script": SCRIPT,
            "args": json_args(self.args),
            "log_path": str(self.log_path),
            "epochs": self.epoch,
            "env_steps": self.env_step,
            "gradient_steps": self.gradient_step,
            "reached_expert_level": self.stopped,
            "train_seconds": round(self.seconds["train"], 1),
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            **{k: round(v, 2) for k, v in self.speeds().items()},
            "final": {
                "policy": POLICY_NAME,
                "episodes": len(returns),
                "return_mean": float(returns.mean()),
                "return_std": float(returns.std()),
                "returns": returns.tolist(),
                "normalized_score_mean": None,
                "normalized_score_std": None,
            },
            "best": best,
            "history": self.history,
        }
        with atomic_write(self.log_path / SUMMARY_NAME) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
        return summary


def checkpoint_to_resume(args: argparse.Namespace) -> tuple[Path, dict[str, Any]] | None:
    """(path, contents) of the checkpoint --resume-path names; None for none or a policy file."""
    if not args.resume_path or args.watch:
        return None
    path = Path(args.resume_path).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    payload = load_state(path, args.device)
    if "progress" not in payload:
        return None  # a policy: a new run starts from it
    return path, payload


def settings_of_resumed_run(
    parser: argparse.ArgumentParser, argv: list[str] | None, saved: dict[str, Any]
) -> argparse.Namespace:
    """The command line again, with the checkpoint's settings as defaults (and its --epoch):
    ``--resume-path DIR`` alone continues the run as it was started (--compile too: the
    compiled and eager steps differ in float rounding, so an exact resume keeps the choice;
    it may be changed, e.g. on moving to a GPU). A RUN_SETTINGS value given that differs from
    the run's is refused."""
    kept = (*RUN_SETTINGS, "epoch", "compile")
    parser.set_defaults(**{k: saved[k] for k in kept if k in saved})
    args = parser.parse_args(argv)
    different = [k for k in RUN_SETTINGS if k in saved and getattr(args, k) != saved[k]]
    if different:
        given = ", ".join(f"--{k.replace('_', '-')} {getattr(args, k)}" for k in different)
        run = ", ".join(f"--{k.replace('_', '-')} {saved[k]}" for k in different)
        raise UserInputError(
            f"{given}: the run at --resume-path {args.resume_path} has {run}; a resumed run "
            f"keeps its settings (leave these out), or start a new run"
        )
    return args


def train(args: argparse.Namespace, resume: tuple[Path, dict[str, Any]] | None) -> dict:
    directory_args = argparse.Namespace(**vars(args))
    if resume is None:
        directory_args.resume_path = None  # a policy to start from: a new run directory
    with run_directory(directory_args, args.task, "qrdqn") as log_path:
        run = OnlineRun(args, log_path)
        if resume is not None:
            run.restore(*resume)
        elif args.resume_path:
            load_policy(run.algorithm, args.resume_path, args.device, task=args.task, script=SCRIPT)
            print(f"starting from the policy {args.resume_path}")
        summary = run.run()
    print(
        f"{summary['env_steps']} env steps, {summary['gradient_steps']} gradient steps in "
        f"{summary['train_seconds']:.0f} s ({summary['env_steps_per_second']:.1f} env steps/s; "
        f"collection alone {summary['collect_env_steps_per_second']:.1f}/s, updates alone "
        f"{summary['updates_per_second']:.1f}/s); summary: {log_path / SUMMARY_NAME}"
    )
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = get_parser()
    args = parser.parse_args(argv)
    resume = checkpoint_to_resume(args)
    if resume is not None:
        args = settings_of_resumed_run(parser, argv, resume[1]["args"])
    if args.save_buffer_name and not (args.watch and args.resume_path):
        raise UserInputError(
            "--save-buffer-name needs --watch and --resume-path (the policy that plays)"
        )
    if args.save_buffer_name:  # before the recording, not after it
        check_writable(
            buffer_output_path(args.save_buffer_name, args.resume_path), "--save-buffer-name"
        )
    if args.checkpoint_every < 0:
        raise UserInputError(
            f"--checkpoint-every {args.checkpoint_every}: expected a number of env steps "
            f"(0: only after each epoch)"
        )
    seed_everything(args.seed)
    if not args.watch:
        return train(args, resume)

    # --- watch: evaluate, or record a buffer ----------------------------------------------------
    test_num = args.test_num
    if args.save_buffer_name:
        test_num = recording_env_count(args.buffer_size, args.test_num)
    env, _, test_envs = make_atari_env(
        args.task, args.seed, 0, test_num, max_episode_steps=args.max_episode_steps
    )
    algorithm = build_algorithm(args, env.action_space)
    if args.resume_path:
        load_policy(algorithm, args.resume_path, args.device, task=args.task, script=SCRIPT)
        print(f"loaded the policy {args.resume_path}")
    if args.save_buffer_name:
        path = buffer_output_path(args.save_buffer_name, args.resume_path)
        record_buffer(algorithm, test_envs, args, int(env.action_space.n), path)
    else:
        test_collector = Collector(
            algorithm,
            test_envs,
            evaluation_buffer(len(test_envs), args.max_episode_steps),
            exploration_noise=True,
        )
        evaluate(algorithm, test_collector, args.test_num)
    return None


if __name__ == "__main__":
    run_main(main)
