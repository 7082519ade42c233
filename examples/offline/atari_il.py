#!/usr/bin/env python3
"""Imitation learning (behaviour cloning) on Atari from a fixed buffer.

A classifier learns to predict the buffer's actions from the stacked frames (cross-entropy):
the baseline every offline RL algorithm has to beat. One epoch is 10,000 gradient steps.

    python3 atari_il.py --task PongNoFrameskip-v4 \
        --load-buffer-name log/PongNoFrameskip-v4/qrdqn/expert.hdf5 --epoch 5
"""

from __future__ import annotations

import argparse

import gymnasium as gym
from tianshou.algorithm.imitation.imitation_base import ImitationPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.utils.net.common import ModuleWithVectorOutput

from tianshou_offline.algorithms import ImitationLearning
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
    add_atari_offline_args(parser, lr=1e-4)
    add_training_args(parser, epoch=100, epoch_num_steps=10_000, batch_size=32)
    return parser.parse_args(argv)


def build_algorithm(
    args: argparse.Namespace, feature_net: ModuleWithVectorOutput, action_space: gym.spaces.Discrete
) -> ImitationLearning:
    """Features -> 512 -> action logits, trained with cross-entropy on the buffer's actions."""
    actor = logits_head(feature_net, int(action_space.n))
    policy = ImitationPolicy(actor=actor, action_space=action_space)  # acts by argmax
    return ImitationLearning(
        policy=policy, optim=AdamOptimizerFactory(lr=args.lr), tianshou_maths=args.tianshou_maths
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
    return train_or_watch(algorithm, args, buffer, test_envs, algo_name="il")


if __name__ == "__main__":
    run_main(main)
