#!/usr/bin/env python3
"""CQL (Kumar et al., 2020) on D4RL-format MuJoCo data; Cal-QL with ``--calibrated``.

Conservative Q-learning is SAC whose critic loss adds a penalty that pushes Q down on actions the
policy proposes (sampled, and uniform ones) and up on the dataset's actions, so the learned
Q-function never trusts actions the data does not support. With ``--with-lagrange`` the penalty
weight is tuned to keep the gap near ``--lagrange-threshold``. Cal-QL (Nakamoto et al., 2023)
additionally floors the penalised Q-values at the dataset's Monte-Carlo returns.
Networks as in CQL's paper and CORL: three hidden layers of 256.

    python3 d4rl_cql.py --task HalfCheetah-v2 --expert-data-task halfcheetah-expert-v2
"""

import argparse

from tianshou.algorithm.modelfree.sac import AutoAlpha, SACPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorProbabilistic

from tianshou_offline.algorithms import CQL
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
    add_d4rl_args(parser, hidden_sizes=[256, 256, 256])
    # 200 epochs x 5000 gradient steps = 1M steps, batch 256
    add_training_args(parser, epoch=200, epoch_num_steps=5000, batch_size=256)
    parser.add_argument("--actor-lr", type=float, default=1e-4)
    parser.add_argument("--critic-lr", type=float, default=3e-4)
    parser.add_argument("--alpha-lr", type=float, default=1e-4, help="SAC temperature lr")
    # CORL's D4RL MuJoCo setting (cql.py: cql_alpha 10, cql_lagrange False): a fixed weight;
    # the CQL paper tuned the multiplier (--with-lagrange) for AntMaze
    parser.add_argument(
        "--cql-weight", "--min-q-weight", type=float, default=10.0, help="conservative penalty"
    )
    parser.add_argument("--with-lagrange", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--lagrange-threshold", type=float, default=10.0)
    parser.add_argument("--cql-alpha-lr", type=float, default=3e-4, help="Lagrange multiplier lr")
    parser.add_argument(
        "--num-repeat-actions",
        "--cql-n-actions",
        type=int,
        default=10,
        help="actions sampled per state for the penalty",
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="of the log-sum-exp")
    parser.add_argument(
        "--calibrated",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Cal-QL: floor Q at the dataset's Monte-Carlo returns",
    )
    parser.add_argument("--tau", type=float, default=0.005)
    return parser.parse_args(argv)


def build_algorithm(args: argparse.Namespace, spec: EnvSpec) -> CQL:
    """The actor, twin critics and CQL, exactly as main() trains them."""
    # networks: a tanh-Gaussian actor and twin critics Q(s, a)
    actor = ContinuousActorProbabilistic(
        preprocess_net=Net(state_shape=spec.obs_dim, hidden_sizes=args.hidden_sizes),
        action_shape=spec.act_dim,
        unbounded=True,
        conditioned_sigma=True,
    ).to(args.device)

    # algorithm: SAC's entropy temperature is tuned towards -|A| as in SAC and CQL
    alpha = AutoAlpha(
        target_entropy=-spec.act_dim, log_alpha=0.0, optim=AdamOptimizerFactory(lr=args.alpha_lr)
    ).to(args.device)
    policy = SACPolicy(actor=actor, action_space=spec.env.action_space)
    algorithm = CQL(
        tianshou_maths=args.tianshou_maths,
        policy=policy,
        policy_optim=AdamOptimizerFactory(lr=args.actor_lr),
        critic=make_critic(spec, args.hidden_sizes, args.device),
        critic_optim=AdamOptimizerFactory(lr=args.critic_lr),
        critic2=make_critic(spec, args.hidden_sizes, args.device),
        critic2_optim=AdamOptimizerFactory(lr=args.critic_lr),
        calibrated=args.calibrated,
        cql_alpha_lr=args.cql_alpha_lr,
        cql_weight=args.cql_weight,
        tau=args.tau,
        gamma=args.gamma,
        alpha=alpha,
        temperature=args.temperature,
        with_lagrange=args.with_lagrange,
        lagrange_threshold=args.lagrange_threshold,
        num_repeat_actions=args.num_repeat_actions,
        min_action=-spec.max_action,
        max_action=spec.max_action,
    ).to(args.device)
    return algorithm


def main(argv: list[str] | None = None) -> dict:
    args = get_args(argv)
    seed_everything(args.seed)
    spec = make_env_spec(args.task)
    algorithm = build_algorithm(args, spec)

    # data, training and evaluation
    return train_or_watch(algorithm, args, spec, algo_name="cql")


if __name__ == "__main__":
    run_main(main)
