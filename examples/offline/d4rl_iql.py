#!/usr/bin/env python3
"""IQL (Kostrikov et al., 2021) on D4RL-format MuJoCo data.

Implicit Q-learning never evaluates an action that is not in the dataset: V(s) regresses onto an
upper expectile (``--expectile``) of the target critics' Q(s, a) at the dataset's actions, the
twin critics onto r + gamma V(s'), and the actor clones the dataset's actions weighted by
exp(``--beta`` x (Q(s, a) - V(s))), clipped at ``--max-weight``. Defaults are the paper's D4RL
locomotion settings (examples/offline/README.md lists them with their sources): a Gaussian actor
(``--deterministic-actor``: CORL's alternative), a cosine decay of the actor's learning rate over
the run, rewards scaled by 1000 / (max - min episode return), observations normalised.

    python3 d4rl_iql.py --task HalfCheetah-v2 --expert-data-task halfcheetah-expert-v2
"""

import argparse

from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy
from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import (
    ContinuousActorDeterministic,
    ContinuousActorProbabilistic,
    ContinuousCritic,
)

from tianshou_offline.algorithms import IQL
from tianshou_offline.algorithms.continuous import independent_normal
from tianshou_offline.errors import UserInputError, run_main
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
    parser.add_argument("--value-lr", type=float, default=3e-4)
    parser.add_argument(
        "--expectile", type=float, default=0.7, help="of the value regression, in (0, 1)"
    )
    parser.add_argument(
        "--beta", type=float, default=3.0, help="inverse temperature of the advantage weights"
    )
    parser.add_argument(
        "--max-weight", type=float, default=100.0, help="clip of the advantage weights"
    )
    parser.add_argument("--tau", type=float, default=0.005)
    parser.add_argument(
        "--deterministic-actor",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="a deterministic actor regressed onto the weighted actions (CORL's "
        "iql_deterministic) instead of the paper's Gaussian",
    )
    parser.add_argument(
        "--actor-lr-schedule",
        choices=("cosine", "constant"),
        default="cosine",
        help="cosine: the actor's learning rate decays to 0 over --epoch x --epoch-num-steps",
    )
    parser.add_argument(
        "--normalize-reward",
        type=int,
        choices=(0, 1),
        default=1,
        help="1: rewards x 1000 / (max - min episode return of the dataset), as the paper",
    )
    args = parser.parse_args(argv)
    if args.tianshou_maths:
        raise UserInputError("--tianshou-2.0.1-maths: Tianshou 2.0.1 has no IQL to compare with")
    if not 0.0 < args.expectile < 1.0:
        raise UserInputError(f"--expectile {args.expectile}: expected a value in (0, 1), e.g. 0.7")
    if args.beta < 0 or args.max_weight <= 0:
        raise UserInputError("--beta and --max-weight: expected beta >= 0 and max-weight > 0")
    return args


def build_algorithm(args: argparse.Namespace, spec: EnvSpec) -> IQL:
    """The actor, twin critics, value network and IQL, exactly as main() trains them."""
    # networks: the actor (Gaussian with a state-independent std, or deterministic), twin critics
    # Q(s, a) and the value network V(s)
    preprocess = Net(state_shape=spec.obs_dim, hidden_sizes=args.hidden_sizes)
    policy: ProbabilisticActorPolicy | ContinuousDeterministicPolicy
    if args.deterministic_actor:
        actor = ContinuousActorDeterministic(
            preprocess_net=preprocess, action_shape=spec.act_dim, max_action=spec.max_action
        ).to(args.device)
        policy = ContinuousDeterministicPolicy(actor=actor, action_space=spec.env.action_space)
    else:
        actor = ContinuousActorProbabilistic(
            preprocess_net=preprocess,
            action_shape=spec.act_dim,
            max_action=spec.max_action,  # the mean is max_action x tanh(...)
            conditioned_sigma=False,
        ).to(args.device)
        # evaluation acts with the mean; the bounded mean is already in the action box
        policy = ProbabilisticActorPolicy(
            actor=actor,
            dist_fn=independent_normal,
            deterministic_eval=True,
            action_space=spec.env.action_space,
            action_scaling=False,
            action_bound_method=None,
        )
    value = ContinuousCritic(
        preprocess_net=Net(state_shape=spec.obs_dim, hidden_sizes=args.hidden_sizes)
    ).to(args.device)

    # algorithm
    schedule_steps = (
        args.epoch * args.epoch_num_steps if args.actor_lr_schedule == "cosine" else None
    )
    max_episode_steps = getattr(spec.env.spec, "max_episode_steps", None) or 1000
    algorithm = IQL(
        policy=policy,
        policy_optim=AdamOptimizerFactory(lr=args.actor_lr),
        critic=make_critic(spec, args.hidden_sizes, args.device),
        critic_optim=AdamOptimizerFactory(lr=args.critic_lr),
        critic2=make_critic(spec, args.hidden_sizes, args.device),
        critic2_optim=AdamOptimizerFactory(lr=args.critic_lr),
        value=value,
        value_optim=AdamOptimizerFactory(lr=args.value_lr),
        expectile=args.expectile,
        beta=args.beta,
        max_weight=args.max_weight,
        tau=args.tau,
        gamma=args.gamma,
        actor_lr_decay_steps=schedule_steps,
        normalize_reward=bool(args.normalize_reward),
        max_episode_steps=max_episode_steps,
    ).to(args.device)
    return algorithm


def main(argv: list[str] | None = None) -> dict:
    args = get_args(argv)
    seed_everything(args.seed)
    spec = make_env_spec(args.task)
    algorithm = build_algorithm(args, spec)

    # data, training and evaluation
    return train_or_watch(algorithm, args, spec, algo_name="iql")


if __name__ == "__main__":
    run_main(main)
