#!/usr/bin/env python3
"""Behaviour cloning (imitation learning) on D4RL-format MuJoCo data.

A deterministic actor regresses the dataset's actions with a mean-squared error: the baseline
every offline RL algorithm has to beat, and a strong one on expert data.

    python3 d4rl_il.py --task HalfCheetah-v2 --expert-data-task halfcheetah-expert-v2
"""

import argparse

from tianshou.algorithm.imitation.imitation_base import ImitationPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorDeterministic

from tianshou_offline.algorithms import ImitationLearning
from tianshou_offline.errors import run_main
from tianshou_offline.run.d4rl import EnvSpec, add_d4rl_args, make_env_spec, train_or_watch
from tianshou_offline.run.evaluation import seed_everything
from tianshou_offline.run.training import add_training_args


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_d4rl_args(parser, hidden_sizes=[256, 256])
    # 200 epochs x 5000 gradient steps = 1M steps, batch 256
    add_training_args(parser, epoch=200, epoch_num_steps=5000, batch_size=256)
    parser.add_argument("--lr", type=float, default=1e-4)
    return parser.parse_args(argv)


def build_algorithm(args: argparse.Namespace, spec: EnvSpec) -> ImitationLearning:
    """The actor and behaviour cloning, exactly as main() trains them."""
    # network: s -> a, squashed to the action range
    actor = ContinuousActorDeterministic(
        preprocess_net=Net(state_shape=spec.obs_dim, hidden_sizes=args.hidden_sizes),
        action_shape=spec.act_dim,
        max_action=spec.max_action,
    ).to(args.device)

    # algorithm: MSE between the actor's and the dataset's actions
    policy = ImitationPolicy(actor=actor, action_space=spec.env.action_space)
    algorithm = ImitationLearning(
        policy=policy, optim=AdamOptimizerFactory(lr=args.lr), tianshou_maths=args.tianshou_maths
    ).to(args.device)
    return algorithm


def main(argv: list[str] | None = None) -> dict:
    args = get_args(argv)
    seed_everything(args.seed)
    spec = make_env_spec(args.task)
    algorithm = build_algorithm(args, spec)

    # data, training and evaluation
    return train_or_watch(algorithm, args, spec, algo_name="il")


if __name__ == "__main__":
    run_main(main)
