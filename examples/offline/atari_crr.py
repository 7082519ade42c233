#!/usr/bin/env python3
"""Discrete critic regularized regression (CRR, Wang et al. 2020) on Atari from a fixed buffer.

A critic learns Q(s, a) of the current actor; the actor imitates the buffer's actions,
weighted by how much better than the actor's average each action looks (its advantage), so it
copies the good part of the data. --min-q-weight > 0 adds CQL's conservative penalty to the
critic ("CRR w/ CQL"), which works much better on Atari. One epoch is 10,000 gradient steps.

    python3 atari_crr.py --task PongNoFrameskip-v4 \
        --load-buffer-name log/PongNoFrameskip-v4/qrdqn/expert.hdf5 --epoch 5
    python3 atari_crr.py --task PongNoFrameskip-v4 \
        --load-buffer-name log/PongNoFrameskip-v4/qrdqn/expert.hdf5 --epoch 5 --min-q-weight 10
"""

from __future__ import annotations

import argparse

import gymnasium as gym
from tianshou.algorithm.modelfree.reinforce import DiscreteActorPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.utils.net.common import ModuleWithVectorOutput
from tianshou.utils.net.discrete import DiscreteCritic

from tianshou_offline.algorithms import DiscreteCRR
from tianshou_offline.atari.networks import HIDDEN_SIZES, NatureCNN, logits_head
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
    parser.add_argument(
        "--policy-improvement-mode",
        choices=("exp", "binary", "all"),
        default="exp",
        help="actor weight: exp(advantage / beta), [advantage > 0], or 1 (plain cloning)",
    )
    parser.add_argument("--ratio-upper-bound", type=float, default=20.0, help="cap of exp weight")
    parser.add_argument("--beta", type=float, default=1.0, help="temperature of exp weight")
    parser.add_argument(
        "--min-q-weight",
        type=float,
        default=0.0,
        help="weight of the CQL penalty on the critic; > 0 gives CRR w/ CQL (e.g. 10)",
    )
    parser.add_argument("--target-update-freq", type=int, default=500, help="in gradient steps")
    return parser.parse_args(argv)


def build_algorithm(
    args: argparse.Namespace, feature_net: ModuleWithVectorOutput, action_space: gym.spaces.Discrete
) -> DiscreteCRR:
    """Actor logits and critic Q-values: two heads (512 hidden each) on shared features."""
    num_actions = int(action_space.n)
    actor = logits_head(feature_net, num_actions)
    critic = DiscreteCritic(
        preprocess_net=feature_net, hidden_sizes=HIDDEN_SIZES, last_size=num_actions
    )
    policy = DiscreteActorPolicy(actor=actor, action_space=action_space)  # samples its actions
    return DiscreteCRR(
        tianshou_maths=args.tianshou_maths,
        policy=policy,
        critic=critic,
        optim=AdamOptimizerFactory(lr=args.lr),
        gamma=args.gamma,
        policy_improvement_mode=args.policy_improvement_mode,
        ratio_upper_bound=args.ratio_upper_bound,
        beta=args.beta,
        min_q_weight=args.min_q_weight,
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
    return train_or_watch(algorithm, args, buffer, test_envs, algo_name="crr")


if __name__ == "__main__":
    run_main(main)
