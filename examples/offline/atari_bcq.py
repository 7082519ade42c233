#!/usr/bin/env python3
"""Discrete batch-constrained Q-learning (BCQ, Fujimoto et al. 2019) on Atari from a fixed buffer.

Q-learning whose greedy action is restricted to actions a behaviour-cloning head finds likely
enough (probability at least --unlikely-action-threshold times the most likely action's), so
the Q-values of actions the data never shows are never trusted. One epoch is 10,000 gradient
steps.

    python3 atari_bcq.py --task PongNoFrameskip-v4 \
        --load-buffer-name log/PongNoFrameskip-v4/qrdqn/expert.hdf5 --epoch 5
    python3 atari_bcq.py --task BreakoutNoFrameskip-v4 --load-buffer-name \
        ~/.rl_unplugged/buffers/Breakout/run_1-00001-of-00100.hdf5 \
        --buffer-from-rl-unplugged --epoch 12
"""

from __future__ import annotations

import argparse

import gymnasium as gym
from tianshou.algorithm.imitation.discrete_bcq import DiscreteBCQPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.utils.net.common import ModuleWithVectorOutput

from tianshou_offline.algorithms import DiscreteBCQ
from tianshou_offline.atari.networks import NatureCNN, logits_head
from tianshou_offline.errors import run_main
from tianshou_offline.run.atari import (
    add_atari_offline_args,
    load_atari_data,
    make_test_envs,
    train_or_watch,
)
from tianshou_offline.run.evaluation import seed_everything
from tianshou_offline.run.training import add_training_args


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_atari_offline_args(parser, lr=6.25e-5)
    add_training_args(parser, epoch=100, epoch_num_steps=10_000, batch_size=32)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--n-step", type=int, default=1)
    parser.add_argument("--target-update-freq", type=int, default=8000, help="in gradient steps")
    parser.add_argument(
        "--unlikely-action-threshold",
        type=float,
        default=0.3,
        help="actions less likely than this times the most likely one are never chosen",
    )
    parser.add_argument(
        "--imitation-logits-penalty", type=float, default=0.01, help="L2 weight on the BC logits"
    )
    parser.add_argument("--eps-test", type=float, default=0.001, help="random actions in tests")
    return parser.parse_args(argv)


def build_algorithm(
    args: argparse.Namespace, feature_net: ModuleWithVectorOutput, action_space: gym.spaces.Discrete
) -> DiscreteBCQ:
    """Two heads on shared features: Q-values and behaviour-cloning logits (512 hidden each)."""
    num_actions = int(action_space.n)
    q_net = logits_head(feature_net, num_actions)
    imitation_net = logits_head(feature_net, num_actions)
    policy = DiscreteBCQPolicy(
        model=q_net,
        imitator=imitation_net,
        action_space=action_space,
        unlikely_action_threshold=args.unlikely_action_threshold,
        eps_inference=args.eps_test,
    )
    return DiscreteBCQ(
        tianshou_maths=args.tianshou_maths,
        policy=policy,
        optim=AdamOptimizerFactory(lr=args.lr),
        gamma=args.gamma,
        n_step_return_horizon=args.n_step,
        target_update_freq=args.target_update_freq,
        imitation_logits_penalty=args.imitation_logits_penalty,
    )


def main(argv: list[str] | None = None) -> dict:
    args = get_args(argv)
    seed_everything(args.seed)

    # environments and data
    env, test_envs = make_test_envs(args)
    buffer = None if args.watch else load_atari_data(args, num_actions=int(env.action_space.n))

    # networks and algorithm
    algorithm = build_algorithm(args, NatureCNN(), env.action_space).to(args.device)

    # training and evaluation
    return train_or_watch(algorithm, args, buffer, test_envs, algo_name="bcq")


if __name__ == "__main__":
    run_main(main)
