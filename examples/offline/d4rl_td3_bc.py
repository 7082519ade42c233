#!/usr/bin/env python3
"""TD3+BC (Fujimoto & Gu, 2021) on D4RL-format MuJoCo data.

TD3 whose actor loss adds a behaviour-cloning term: maximise lambda * Q(s, pi(s)) while staying
close to the dataset's actions, with lambda = alpha / mean|Q| so the two terms keep the same scale.
Observations are normalised with the dataset's statistics (``--norm-obs 1``, as in the paper).

    python3 d4rl_td3_bc.py --task HalfCheetah-v2 --expert-data-task halfcheetah-expert-v2
"""

import argparse

from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.exploration import GaussianNoise
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorDeterministic

from tianshou_offline.algorithms import TD3BC
from tianshou_offline.errors import run_main
from tianshou_offline.run.d4rl import (
    EnvSpec,
    add_d4rl_args,
    make_critic,
    make_env_spec,
    train_or_watch,
)
from tianshou_offline.run.evaluation import seed_everything
from tianshou_offline.run.training import add_training_args


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_d4rl_args(parser, hidden_sizes=[256, 256], norm_obs=1)
    # 200 epochs x 5000 gradient steps = 1M steps, batch 256: the paper's budget.
    add_training_args(parser, epoch=200, epoch_num_steps=5000, batch_size=256)
    parser.add_argument("--actor-lr", type=float, default=3e-4)
    parser.add_argument("--critic-lr", type=float, default=3e-4)
    parser.add_argument("--alpha", type=float, default=2.5, help="weight of Q against BC")
    parser.add_argument("--policy-noise", type=float, default=0.2, help="target smoothing")
    parser.add_argument("--noise-clip", type=float, default=0.5)
    parser.add_argument("--update-actor-freq", type=int, default=2, help="policy delay")
    parser.add_argument("--tau", type=float, default=0.005)
    return parser.parse_args(argv)


def build_algorithm(args: argparse.Namespace, spec: EnvSpec) -> TD3BC:
    """The actor, twin critics and TD3+BC, exactly as main() trains them."""
    # networks: a deterministic actor and twin critics Q(s, a)
    actor = ContinuousActorDeterministic(
        preprocess_net=Net(state_shape=spec.obs_dim, hidden_sizes=args.hidden_sizes),
        action_shape=spec.act_dim,
        max_action=spec.max_action,
    ).to(args.device)

    # algorithm
    policy = ContinuousDeterministicPolicy(
        actor=actor,
        # offline training never explores; the noise only matters if the policy is reused online
        exploration_noise=GaussianNoise(sigma=0.1),
        action_space=spec.env.action_space,
    )
    algorithm = TD3BC(
        tianshou_maths=args.tianshou_maths,
        policy=policy,
        policy_optim=AdamOptimizerFactory(lr=args.actor_lr),
        critic=make_critic(spec, args.hidden_sizes, args.device),
        critic_optim=AdamOptimizerFactory(lr=args.critic_lr),
        critic2=make_critic(spec, args.hidden_sizes, args.device),
        critic2_optim=AdamOptimizerFactory(lr=args.critic_lr),
        tau=args.tau,
        gamma=args.gamma,
        policy_noise=args.policy_noise,
        update_actor_freq=args.update_actor_freq,
        noise_clip=args.noise_clip,
        alpha=args.alpha,
    ).to(args.device)
    return algorithm


def main(argv: list[str] | None = None) -> dict:
    args = get_args(argv)
    seed_everything(args.seed)
    spec = make_env_spec(args.task)
    algorithm = build_algorithm(args, spec)

    # data, training and evaluation
    return train_or_watch(algorithm, args, spec, algo_name="td3_bc")


if __name__ == "__main__":
    run_main(main)
