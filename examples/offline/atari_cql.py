#!/usr/bin/env python3
"""Discrete conservative Q-learning (CQL, Kumar et al. 2020) on Atari from a fixed buffer.

QR-DQN (a return distribution per action, as quantiles) plus a penalty that pushes down the
Q-values of all actions (log-sum-exp) and up those of the buffer's actions, so actions the
data never shows do not look better than they are. One epoch is 10,000 gradient steps.

    python3 atari_cql.py --task PongNoFrameskip-v4 \
        --load-buffer-name log/PongNoFrameskip-v4/qrdqn/expert.hdf5 --epoch 5
    python3 atari_cql.py --task BreakoutNoFrameskip-v4 \
        --load-buffer-name log/BreakoutNoFrameskip-v4/qrdqn/expert.hdf5 --epoch 12 --min-q-weight 50
"""

from __future__ import annotations

import argparse

import gymnasium as gym
from tianshou.algorithm.modelfree.qrdqn import QRDQNPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.utils.net.common import ModuleWithVectorOutput

from tianshou_offline.algorithms import DiscreteCQL
from tianshou_offline.atari.networks import NatureCNN, QuantileNet
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
    add_atari_offline_args(parser, lr=1e-4)
    add_training_args(parser, epoch=100, epoch_num_steps=10_000, batch_size=32)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--num-quantiles", type=int, default=200)
    parser.add_argument("--n-step", type=int, default=1)
    parser.add_argument("--target-update-freq", type=int, default=500, help="in gradient steps")
    parser.add_argument(
        "--min-q-weight", type=float, default=10.0, help="weight of the conservative penalty"
    )
    parser.add_argument("--eps-test", type=float, default=0.001, help="random actions in tests")
    return parser.parse_args(argv)


def build_algorithm(
    args: argparse.Namespace, feature_net: ModuleWithVectorOutput, action_space: gym.spaces.Discrete
) -> DiscreteCQL:
    """Features -> 512 -> num_quantiles return quantiles per action (the QR-DQN network)."""
    net = QuantileNet(feature_net, int(action_space.n), args.num_quantiles)
    policy = QRDQNPolicy(model=net, action_space=action_space, eps_inference=args.eps_test)
    return DiscreteCQL(
        tianshou_maths=args.tianshou_maths,
        policy=policy,
        optim=AdamOptimizerFactory(lr=args.lr),
        min_q_weight=args.min_q_weight,
        gamma=args.gamma,
        num_quantiles=args.num_quantiles,
        n_step_return_horizon=args.n_step,
        target_update_freq=args.target_update_freq,
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
    return train_or_watch(algorithm, args, buffer, test_envs, algo_name="cql")


if __name__ == "__main__":
    run_main(main)
