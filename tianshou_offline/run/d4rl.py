"""What the ``d4rl_*.py`` scripts share beyond training: task arguments, the dataset,
evaluation environments with the same observation normalisation, and train-or-watch.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tianshou.algorithm.algorithm_base import Algorithm
from tianshou.data import Collector, ReplayBuffer
from tianshou.env import BaseVectorEnv, DummyVectorEnv, VectorEnvNormObs
from tianshou.utils import RunningMeanStd
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousCritic

from tianshou_offline.data.d4rl import load_d4rl_buffer, make_env, normalize_obs, normalized_score
from tianshou_offline.errors import UserInputError
from tianshou_offline.run.evaluation import EvalSetup, SeededEvalCollector
from tianshou_offline.run.training import OfflineRun, load_policy, run_directory

# D4RL's own default pairing: --task picks the evaluation environment, --expert-data-task the data.
DEFAULT_TASK = "HalfCheetah-v2"
DEFAULT_DATASET = "halfcheetah-expert-v2"


def add_d4rl_args(
    parser: argparse.ArgumentParser, *, hidden_sizes: list[int], norm_obs: int = 0
) -> None:
    parser.add_argument(
        "--task",
        default=DEFAULT_TASK,
        help="evaluation environment; D4RL's -v2/-v3 MuJoCo names map to gymnasium's -v5",
    )
    parser.add_argument(
        "--expert-data-task",
        default=DEFAULT_DATASET,
        help="a D4RL dataset name, a path to a D4RL-format .hdf5 file, or minari:<dataset id>",
    )
    parser.add_argument("--hidden-sizes", type=int, nargs="*", default=hidden_sizes)
    parser.add_argument(
        "--norm-obs",
        type=int,
        choices=(0, 1),
        default=norm_obs,
        help="1: normalise observations with the dataset's mean/std (also at evaluation)",
    )
    parser.add_argument("--gamma", type=float, default=0.99)


@dataclass
class EnvSpec:
    """Sizes of the evaluation environment, for building networks."""

    env: gym.Env
    obs_dim: int
    act_dim: int
    max_action: float


def make_env_spec(task: str) -> EnvSpec:
    env = make_env(task)
    if not isinstance(env.action_space, gym.spaces.Box):
        raise UserInputError(
            f"--task {task} has {type(env.action_space).__name__} actions; the d4rl_*.py scripts "
            f"need continuous (Box) actions, e.g. a MuJoCo task such as Hopper-v2"
        )
    return EnvSpec(
        env=env,
        obs_dim=int(np.prod(env.observation_space.shape)),
        act_dim=int(np.prod(env.action_space.shape)),
        max_action=float(env.action_space.high[0]),
    )


def make_critic(spec: EnvSpec, hidden_sizes: list[int], device: str) -> ContinuousCritic:
    """Q(s, a): an MLP over the concatenated observation and action (one of the twin critics)."""
    net = Net(
        state_shape=spec.obs_dim, action_shape=spec.act_dim, hidden_sizes=hidden_sizes, concat=True
    )
    return ContinuousCritic(preprocess_net=net).to(device)


class ReBRACCritic(torch.nn.Module):
    """Q(s, a) as ReBRAC's critic (Tarasov et al., 2023; CORL's rebrac.py ``Critic``): each hidden
    layer Linear -> ReLU -> LayerNorm (``layer_norm=False``: without it), then a linear output;
    initialised as ReBRAC's (the EDAC paper's): hidden biases 0.1, output weight and bias uniform
    in +-3e-3 (PyTorch's default U(+-1/sqrt(fan_in)) hidden weights are ReBRAC's too)."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden_sizes: list[int], layer_norm: bool = True
    ) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        width = obs_dim + act_dim
        for size in hidden_sizes:
            layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
            if layer_norm:
                layers.append(torch.nn.LayerNorm(size))
            width = size
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))
        init_like_rebrac(self, output_bound=3e-3)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], dim=-1))


def init_like_rebrac(module: torch.nn.Module, output_bound: float) -> None:
    """ReBRAC's initialisation of an MLP in place: every hidden Linear's bias 0.1, the last
    Linear's weight and bias uniform in +-``output_bound`` (1e-3 for the actor, 3e-3 for the
    critics in CORL's rebrac.py)."""
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer in linears[:-1]:
            layer.bias.fill_(0.1)
        linears[-1].weight.uniform_(-output_bound, output_bound)
        linears[-1].bias.uniform_(-output_bound, output_bound)


def load_dataset(
    args: argparse.Namespace, spec: EnvSpec
) -> tuple[ReplayBuffer, RunningMeanStd | None]:
    """The training data as a Tianshou buffer, normalised when ``--norm-obs 1``."""
    buffer = load_d4rl_buffer(args.expert_data_task, spec.env)
    print(f"dataset {args.expert_data_task}: {len(buffer)} transitions")
    if not args.norm_obs:
        return buffer, None
    return normalize_obs(buffer)


def score_fn(task: str):
    """Mean return -> D4RL normalized score (None where D4RL has no reference returns)."""
    return lambda mean_return: normalized_score(task, mean_return)


def make_eval_envs(task: str, num_envs: int, obs_rms: RunningMeanStd | None) -> BaseVectorEnv:
    """``num_envs`` environments of ``task``, their observations normalised with the dataset's
    fixed ``obs_rms`` if given. A top-level function (no lambdas), so that ``partial`` of it
    pickles: --eval-in-background's worker process builds its own copy with it."""
    envs: BaseVectorEnv = DummyVectorEnv([partial(make_env, task, quiet=True)] * num_envs)
    if obs_rms is not None:
        envs = VectorEnvNormObs(envs, update_obs_rms=False)
        envs.set_obs_rms(obs_rms)
    return envs


def make_test_collector(
    algorithm: Algorithm, args: argparse.Namespace, obs_rms: RunningMeanStd | None
) -> Collector:
    # One environment per evaluation episode: every test step runs them in lockstep with
    # batched inference, and each episode starts from its own seed.
    setup = EvalSetup(
        make_envs=partial(make_eval_envs, args.task, args.test_num, obs_rms), seed=args.seed
    )
    return SeededEvalCollector.from_setup(algorithm, setup)


def train_or_watch(
    algorithm: Algorithm, args: argparse.Namespace, spec: EnvSpec, algo_name: str
) -> dict:
    """Train on the dataset (or, with --watch, load a saved policy), then evaluate.

    Returns the summary that is also written to ``summary.json`` (with --watch: ``watch.json``)
    in the run directory, which is locked while this runs and made only once the input is read.
    """
    script = f"d4rl_{algo_name}.py"
    if args.watch:
        if not args.resume_path:
            raise UserInputError("--watch needs --resume-path <policy_best.pth or checkpoint.pth>")
        extra = load_policy(algorithm, args.resume_path, args.device, task=args.task, script=script)
        with run_directory(args, args.task, algo_name) as log_path:
            run = OfflineRun(algorithm, args, log_path, score_fn=score_fn(args.task), script=script)
            collector = make_test_collector(algorithm, args, extra.get("obs_rms"))
            return run.evaluate(collector, "watch")

    buffer, obs_rms = load_dataset(args, spec)
    with run_directory(args, args.task, algo_name) as log_path:
        run = OfflineRun(
            algorithm,
            args,
            log_path,
            score_fn=score_fn(args.task),
            extra_state={"obs_rms": obs_rms},
            script=script,
        )
        test_collector = make_test_collector(algorithm, args, obs_rms)
        print(f"logging to {log_path} (tensorboard --logdir {Path(args.logdir)})")
        run.train(buffer, test_collector)
        return run.evaluate(test_collector)
