"""What the four ``atari_*.py`` offline scripts share beyond training: Atari arguments, the
buffer file(s), test environments and train-or-watch.

The scripts differ only in their networks and algorithm (``build_algorithm`` in each), which
work on any feature extractor: ``NatureCNN`` here, an MLP in the CartPole tests.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import gymnasium as gym
import h5py
from tianshou.algorithm.algorithm_base import Algorithm
from tianshou.data import ReplayBuffer
from tianshou.env import BaseVectorEnv

from tianshou_offline.atari.env import add_atari_env_args, evaluation_buffer, make_atari_env
from tianshou_offline.data.atari_buffer import load_atari_buffer
from tianshou_offline.errors import UserInputError
from tianshou_offline.run.evaluation import EvalSetup, SeededEvalCollector
from tianshou_offline.run.training import OfflineRun, load_policy, run_directory

RL_UNPLUGGED_SOURCE = "rl_unplugged"


def add_atari_offline_args(parser: argparse.ArgumentParser, *, lr: float) -> None:
    """Task, data and learning-rate arguments of every offline Atari script."""
    add_atari_env_args(parser)
    parser.add_argument(
        "--load-buffer-name",
        nargs="+",
        default=None,
        help="buffer file(s) (.hdf5 from atari_qrdqn.py or convert_rl_unplugged_atari.py, or "
        ".pkl); several files are concatenated; default: log/<task>/qrdqn/expert.hdf5",
    )
    parser.add_argument(
        "--buffer-from-rl-unplugged",
        action="store_true",
        help="the buffer files are RL Unplugged shards written by convert_rl_unplugged_atari.py "
        "(checked: each file must say so)",
    )
    parser.add_argument(
        "--buffer-size-limit",
        type=int,
        default=None,
        help="use only the first N transitions of the data (e.g. 100000 for a 10%% subset)",
    )
    parser.add_argument("--lr", type=float, default=lr)


def make_test_envs(args: argparse.Namespace) -> tuple[gym.Env, BaseVectorEnv]:
    """One env for the spaces and ``--test-num`` test envs (whole games, real scores)."""
    env, _, test_envs = make_atari_env(
        args.task, args.seed, 0, args.test_num, max_episode_steps=args.max_episode_steps
    )
    return env, test_envs


def build_test_envs(
    task: str, seed: int, test_num: int, max_episode_steps: int | None
) -> BaseVectorEnv:
    """The test envs of ``make_test_envs``: a top-level function, so that ``partial`` of it
    pickles (--eval-in-background's worker process builds its own with it)."""
    return make_atari_env(task, seed, 0, test_num, max_episode_steps=max_episode_steps)[2]


def eval_setup(args: argparse.Namespace) -> EvalSetup:
    """How the test collector is made. Every evaluation starts its games from the same seeds
    (comparable across epochs); exploration_noise: policies with an evaluation epsilon (BCQ,
    CQL) use it in tests."""
    return EvalSetup(
        make_envs=partial(
            build_test_envs, args.task, args.seed, args.test_num, args.max_episode_steps
        ),
        seed=args.seed,
        exploration_noise=True,
        make_buffer=partial(evaluation_buffer, args.test_num, args.max_episode_steps),
    )


def buffer_paths(args: argparse.Namespace) -> list[Path]:
    if args.load_buffer_name is None:
        return [Path("log") / args.task / "qrdqn" / "expert.hdf5"]
    return [Path(name).expanduser() for name in args.load_buffer_name]


def load_atari_data(args: argparse.Namespace, num_actions: int) -> ReplayBuffer:
    """The training data: a frame-stacking buffer, checked against the game's action count."""
    paths = buffer_paths(args)
    for path in paths:
        if not path.is_file():
            raise UserInputError(
                f"buffer file {path} does not exist; record one with atari_qrdqn.py --watch "
                f"--resume-path <policy.pth> --save-buffer-name expert.hdf5 (see README.md)"
            )
    if args.buffer_from_rl_unplugged:
        for path in paths:
            source = _source_of(path)
            if source != RL_UNPLUGGED_SOURCE:
                raise UserInputError(
                    f"{path} was written by {source}, not by convert_rl_unplugged_atari.py; "
                    f"drop --buffer-from-rl-unplugged"
                )
    buffer = load_atari_buffer(
        paths, num_actions=num_actions, max_transitions=args.buffer_size_limit, task=args.task
    )
    print(f"loaded {len(buffer)} transitions from {', '.join(map(str, paths))}", flush=True)
    return buffer


def _source_of(path: Path) -> str:
    try:
        with h5py.File(path, "r") as file:
            return str(file.attrs.get("source", "an unknown program"))
    except OSError as err:
        raise UserInputError(f"{path} is not a readable HDF5 file: {err}") from err


def train_or_watch(
    algorithm: Algorithm,
    args: argparse.Namespace,
    buffer: ReplayBuffer | None,
    test_envs: BaseVectorEnv,
    algo_name: str,
) -> dict:
    """Train on ``buffer`` (or, with --watch, load a saved policy), then evaluate.

    Returns the summary that is also written to ``summary.json`` (with --watch: ``watch.json``)
    in the run directory, which is locked while this runs and made only once the input is read.
    """
    script = f"atari_{algo_name}.py"
    if args.watch:
        if not args.resume_path:
            raise UserInputError("--watch needs --resume-path <policy_best.pth or checkpoint.pth>")
        load_policy(algorithm, args.resume_path, args.device, task=args.task, script=script)
    with run_directory(args, args.task, algo_name) as log_path:
        test_collector = SeededEvalCollector.from_setup(algorithm, eval_setup(args), envs=test_envs)
        run = OfflineRun(algorithm, args, log_path, script=script)
        if args.watch:
            return run.evaluate(test_collector, "watch")
        assert buffer is not None
        print(f"logging to {log_path} (tensorboard --logdir {Path(args.logdir)})")
        run.train(buffer, test_collector)
        return run.evaluate(test_collector)
