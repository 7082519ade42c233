#!/usr/bin/env python3
"""ReBRAC (Tarasov et al., 2023) on D4RL-format MuJoCo data.

TD3+BC revisited: the actor minimises ``--actor-bc-coef`` x its squared distance to the
dataset's action minus the normalised min of both critics, and the critics' target subtracts
``--critic-bc-coef`` x the squared distance of the smoothed next action to the dataset's next
action. LayerNorm in the critics, three hidden layers of 256, batch 1024 and learning rates 1e-3,
as in the paper. The two coefficients are tuned per dataset in the paper; the defaults (0.01,
0.01) are its halfcheetah-expert and hopper-medium values, and examples/offline/README.md lists
the others.

    python3 d4rl_rebrac.py --task HalfCheetah-v2 --expert-data-task halfcheetah-expert-v2
"""

import argparse

from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.exploration import GaussianNoise
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorDeterministic

from tianshou_offline.algorithms import ReBRAC
from tianshou_offline.errors import UserInputError, run_main
from tianshou_offline.run.d4rl import (
    EnvSpec,
    ReBRACCritic,
    add_d4rl_args,
    init_like_rebrac,
    make_env_spec,
    train_or_watch,
)
from tianshou_offline.run.evaluation import seed_everything
from tianshou_offline.run.training import add_training_args


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # the paper's (and CORL's) locomotion settings leave observations unnormalised
    add_d4rl_args(parser, hidden_sizes=[256, 256, 256], norm_obs=0)
    # 200 epochs x 5000 gradient steps = 1M steps, batch 1024: the paper's budget.
    add_training_args(parser, epoch=200, epoch_num_steps=5000, batch_size=1024)
    parser.add_argument("--actor-lr", type=float, default=1e-3)
    parser.add_argument("--critic-lr", type=float, default=1e-3)
    parser.add_argument(
        "--actor-bc-coef", type=float, default=0.01, help="weight of BC in the actor loss"
    )
    parser.add_argument(
        "--critic-bc-coef", type=float, default=0.01, help="weight of BC in the critics' target"
    )
    parser.add_argument(
        "--critic-layer-norm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="LayerNorm after each hidden layer of the critics",
    )
    parser.add_argument(
        "--normalize-q",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="divide the actor's Q term by its mean magnitude",
    )
    parser.add_argument("--policy-noise", type=float, default=0.2, help="target smoothing")
    parser.add_argument("--noise-clip", type=float, default=0.5)
    parser.add_argument("--update-actor-freq", type=int, default=2, help="policy delay")
    parser.add_argument("--tau", type=float, default=0.005)
    args = parser.parse_args(argv)
    if args.tianshou_maths:
        raise UserInputError("--tianshou-2.0.1-maths: Tianshou 2.0.1 has no ReBRAC to compare with")
    if args.actor_bc_coef < 0 or args.critic_bc_coef < 0:
        raise UserInputError("--actor-bc-coef and --critic-bc-coef: expected values >= 0")
    return args


def build_algorithm(args: argparse.Namespace, spec: EnvSpec) -> ReBRAC:
    """The actor, twin LayerNorm critics and ReBRAC, exactly as main() trains them."""
    # networks: a deterministic actor (no LayerNorm) and twin critics Q(s, a), both initialised
    # as ReBRAC's (small output layers, hidden biases 0.1)
    actor = ContinuousActorDeterministic(
        preprocess_net=Net(state_shape=spec.obs_dim, hidden_sizes=args.hidden_sizes),
        action_shape=spec.act_dim,
        max_action=spec.max_action,
    )
    init_like_rebrac(actor, output_bound=1e-3)
    actor = actor.to(args.device)
    critic, critic2 = (
        ReBRACCritic(spec.obs_dim, spec.act_dim, args.hidden_sizes, args.critic_layer_norm).to(
            args.device
        )
        for _ in range(2)
    )

    # algorithm
    policy = ContinuousDeterministicPolicy(
        actor=actor,
        # offline training never explores; the noise only matters if the policy is reused online
        exploration_noise=GaussianNoise(sigma=0.1),
        action_space=spec.env.action_space,
    )
    algorithm = ReBRAC(
        policy=policy,
        policy_optim=AdamOptimizerFactory(lr=args.actor_lr),
        critic=critic,
        critic_optim=AdamOptimizerFactory(lr=args.critic_lr),
        critic2=critic2,
        critic2_optim=AdamOptimizerFactory(lr=args.critic_lr),
        tau=args.tau,
        gamma=args.gamma,
        policy_noise=args.policy_noise,
        update_actor_freq=args.update_actor_freq,
        noise_clip=args.noise_clip,
        actor_bc_coef=args.actor_bc_coef,
        critic_bc_coef=args.critic_bc_coef,
        normalize_q=args.normalize_q,
    ).to(args.device)
    return algorithm


def main(argv: list[str] | None = None) -> dict:
    args = get_args(argv)
    seed_everything(args.seed)
    spec = make_env_spec(args.task)
    algorithm = build_algorithm(args, spec)

    # data, training and evaluation
    return train_or_watch(algorithm, args, spec, algo_name="rebrac")


if __name__ == "__main__":
    run_main(main)
