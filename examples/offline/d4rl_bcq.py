#!/usr/bin/env python3
"""BCQ (Fujimoto et al., 2019) on D4RL-format MuJoCo data.

Batch-Constrained Q-learning only considers actions the data could have produced: a VAE models
the dataset's actions, a perturbation network nudges VAE samples by at most ``phi`` times the
action range, and the policy picks the best of ``forward_sampled_times`` candidates by Q-value.
Network sizes follow the paper: 400x300 actor and critics, 750x750 VAE.

    python3 d4rl_bcq.py --task HalfCheetah-v2 --expert-data-task halfcheetah-expert-v2
"""

import argparse

from tianshou.algorithm.imitation.bcq import BCQPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.utils.net.common import MLP, Net
from tianshou.utils.net.continuous import VAE, Perturbation

from tianshou_offline.algorithms import BCQ
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
    add_d4rl_args(parser, hidden_sizes=[400, 300])
    # 200 epochs x 5000 gradient steps = 1M steps, batch 256
    add_training_args(parser, epoch=200, epoch_num_steps=5000, batch_size=256)
    parser.add_argument("--actor-lr", type=float, default=1e-3)
    parser.add_argument("--critic-lr", type=float, default=1e-3)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--vae-hidden-sizes", type=int, nargs="*", default=[750, 750])
    parser.add_argument(
        "--latent-dim", type=int, default=None, help="VAE latent size (default 2 x action size)"
    )
    parser.add_argument("--phi", type=float, default=0.05, help="max perturbation of an action")
    parser.add_argument(
        "--lmbda", type=float, default=0.75, help="weight of min over max in the clipped target"
    )
    parser.add_argument("--tau", type=float, default=0.005)
    return parser.parse_args(argv)


def build_algorithm(args: argparse.Namespace, spec: EnvSpec) -> BCQ:
    """The VAE, perturbation actor, twin critics and BCQ, exactly as main() trains them."""
    latent_dim = args.latent_dim or 2 * spec.act_dim

    # networks: perturbation actor xi(s, a), twin critics Q(s, a), VAE over (s, a)
    # Perturbation takes element [0] of its preprocess_net's output: Tianshou's Net returns
    # (logits, state), whereas a bare MLP returns the logits, and [0] would then be the first
    # row, i.e. one perturbation for the whole batch (benchmarks/README.md, upstream notes)
    actor = Perturbation(
        preprocess_net=Net(
            state_shape=spec.obs_dim + spec.act_dim,
            action_shape=spec.act_dim,
            hidden_sizes=args.hidden_sizes,
        ),
        max_action=spec.max_action,
        phi=args.phi,
    ).to(args.device)

    vae = VAE(
        # no output layer: the encoder ends with ReLU features that VAE maps to mean/log-std
        encoder=MLP(input_dim=spec.obs_dim + spec.act_dim, hidden_sizes=args.vae_hidden_sizes),
        decoder=MLP(
            input_dim=spec.obs_dim + latent_dim,
            output_dim=spec.act_dim,
            hidden_sizes=args.vae_hidden_sizes,
        ),
        hidden_dim=args.vae_hidden_sizes[-1],
        latent_dim=latent_dim,
        max_action=spec.max_action,
    ).to(args.device)

    # algorithm
    critic = make_critic(spec, args.hidden_sizes, args.device)
    policy = BCQPolicy(
        actor_perturbation=actor, action_space=spec.env.action_space, critic=critic, vae=vae
    )
    algorithm = BCQ(
        tianshou_maths=args.tianshou_maths,
        policy=policy,
        actor_perturbation_optim=AdamOptimizerFactory(lr=args.actor_lr),
        critic_optim=AdamOptimizerFactory(lr=args.critic_lr),
        critic2=make_critic(spec, args.hidden_sizes, args.device),
        critic2_optim=AdamOptimizerFactory(lr=args.critic_lr),
        vae_optim=AdamOptimizerFactory(lr=args.vae_lr),
        gamma=args.gamma,
        tau=args.tau,
        lmbda=args.lmbda,
    ).to(args.device)
    return algorithm


def main(argv: list[str] | None = None) -> dict:
    args = get_args(argv)
    seed_everything(args.seed)
    spec = make_env_spec(args.task)
    algorithm = build_algorithm(args, spec)

    # data, training and evaluation
    return train_or_watch(algorithm, args, spec, algo_name="bcq")


if __name__ == "__main__":
    run_main(main)
