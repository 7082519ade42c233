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
"""

from __future__ import annotations

import argparse
import datetime
import pickle
from pathlib import Path

import numpy as np
import torch
from tianshou.algorithm import QRDQN
from tianshou.algorithm.modelfree.qrdqn import QRDQNPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Collector, VectorReplayBuffer
from tianshou.env import BaseVectorEnv
from tianshou.trainer import OffPolicyTrainerParams
from tianshou.utils import TensorboardLogger
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from tianshou_offline.atari.env import (
    FRAME_STACK,
    add_atari_env_args,
    evaluation_buffer,
    make_atari_env,
)
from tianshou_offline.atari.networks import NatureCNN, QuantileNet
from tianshou_offline.data.atari_buffer import save_atari_buffer
from tianshou_offline.errors import UserInputError, run_main
from tianshou_offline.files import atomic_write, check_writable
from tianshou_offline.run.arguments import check_after_parsing
from tianshou_offline.run.evaluation import seed_everything
from tianshou_offline.run.training import load_policy, save_state

POLICY_NAME = "policy.pth"
SCRIPT = "atari_qrdqn.py"  # what a policy file it loads must have been written by, if recorded


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
        "--resume-path", default=None, help="policy.pth to start from (or to watch / record)"
    )
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


def evaluate(algorithm: QRDQN, test_collector: Collector, test_num: int) -> None:
    test_collector.reset()
    returns = test_collector.collect(n_episode=test_num).returns
    print(
        f"evaluation over {len(returns)} episodes: "
        f"return {returns.mean():.1f} ± {returns.std():.1f}"
    )


def main() -> None:
    args = get_parser().parse_args()
    if args.save_buffer_name and not (args.watch and args.resume_path):
        raise UserInputError(
            "--save-buffer-name needs --watch and --resume-path (the policy that plays)"
        )
    if args.save_buffer_name:  # before the recording, not after it
        check_writable(
            buffer_output_path(args.save_buffer_name, args.resume_path), "--save-buffer-name"
        )
    seed_everything(args.seed)

    # --- environments -------------------------------------------------------------------------
    training_num = 0 if args.watch else args.training_num
    test_num = args.test_num
    if args.save_buffer_name:
        test_num = recording_env_count(args.buffer_size, args.test_num)
    env, train_envs, test_envs = make_atari_env(
        args.task, args.seed, training_num, test_num, max_episode_steps=args.max_episode_steps
    )
    num_actions = int(env.action_space.n)

    # --- network and algorithm ----------------------------------------------------------------
    net = QuantileNet(NatureCNN(), num_actions, args.num_quantiles).to(args.device)
    policy = QRDQNPolicy(
        model=net,
        action_space=env.action_space,
        eps_training=args.eps_train,
        eps_inference=args.eps_test,
    )
    algorithm = QRDQN(
        policy=policy,
        optim=AdamOptimizerFactory(lr=args.lr),
        gamma=args.gamma,
        num_quantiles=args.num_quantiles,
        n_step_return_horizon=args.n_step,
        target_update_freq=args.target_update_freq,
    ).to(args.device)
    if args.resume_path:
        load_policy(algorithm, args.resume_path, args.device, task=args.task, script=SCRIPT)
        print(f"loaded the policy {args.resume_path}")
    test_collector = Collector(
        algorithm,
        test_envs,
        evaluation_buffer(len(test_envs), args.max_episode_steps),
        exploration_noise=True,
    )

    if args.watch:
        if args.save_buffer_name:
            path = buffer_output_path(args.save_buffer_name, args.resume_path)
            record_buffer(algorithm, test_envs, args, num_actions, path)
        else:
            evaluate(algorithm, test_collector, args.test_num)
        return

    # --- training -----------------------------------------------------------------------------
    now = datetime.datetime.now().strftime("%y%m%d-%H%M%S")
    log_path = Path(args.logdir) / args.task / "qrdqn" / f"{args.seed}-{now}"
    # The newest expert also goes to <logdir>/<task>/qrdqn/policy.pth, the README's path.
    expert_path = log_path.parent / POLICY_NAME
    logger = TensorboardLogger(SummaryWriter(str(log_path)))
    buffer = VectorReplayBuffer(
        args.buffer_size,
        buffer_num=len(train_envs),
        ignore_obs_next=True,
        save_only_last_obs=True,
        stack_num=FRAME_STACK,
    )
    train_collector = Collector(algorithm, train_envs, buffer, exploration_noise=True)
    train_collector.reset()
    train_collector.collect(n_step=args.batch_size * len(train_envs))  # enough for one batch

    def save_best(algorithm: QRDQN) -> None:
        # no task/script record here (test_atari_e2e pins these two keys); loading still
        # refuses a policy file of another script or task that has one
        payload = {"algorithm": algorithm.state_dict(), "extra_state": {}}
        save_state(log_path / POLICY_NAME, payload)
        save_state(expert_path, payload)

    def set_exploration(epoch: int, env_step: int) -> None:
        # Nature DQN schedule: linear decay, then constant.
        progress = min(1.0, env_step / args.eps_decay_steps)
        eps = args.eps_train + progress * (args.eps_train_final - args.eps_train)
        policy.set_eps_training(eps)
        if env_step % 1000 == 0:
            logger.write("train/env_step", env_step, {"train/eps": eps})

    def reached_expert_level(mean_return: float) -> bool:
        return "Pong" in args.task and mean_return >= 20  # Pong's maximum is 21

    algorithm.run_training(
        OffPolicyTrainerParams(
            training_collector=train_collector,
            test_collector=test_collector,
            max_epochs=args.epoch,
            epoch_num_steps=args.epoch_num_steps,
            collection_step_num_env_steps=args.collection_step_num_env_steps,
            update_step_num_gradient_steps_per_sample=args.update_per_step,
            test_step_num_episodes=args.test_num,
            batch_size=args.batch_size,
            training_fn=set_exploration,
            stop_fn=reached_expert_level,
            save_best_fn=save_best,
            logger=logger,
            test_in_training=False,
        )
    )
    print(f"best policy: {log_path / POLICY_NAME} (also {expert_path})")

    # --- evaluation of the best policy --------------------------------------------------------
    load_policy(algorithm, log_path / POLICY_NAME, args.device)
    evaluate(algorithm, test_collector, args.test_num)


if __name__ == "__main__":
    run_main(main)
