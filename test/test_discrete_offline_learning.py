"""The offline Atari algorithms learn: CartPole with the Atari scripts' own builders and defaults.

Each ``atari_*.py`` script builds its algorithm with ``build_algorithm(args, feature_net,
action_space)`` from its own argument defaults. Here the same function gets the same defaults
(learning rate, target-update period, quantiles, thresholds, batch size 32, heads of 512
units), with a small MLP in place of the Nature CNN, and learns from a fixed CartPole buffer:
a hand-written controller with 20% random actions. Training stops as soon as the mean return
of 10 test episodes reaches the threshold; the test fails if it does not within the budget.
A random policy scores about 22; the data's 41 episodes average 488 (2 end with a fall).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from example_scripts import load_script
from tianshou.data import Collector, ReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.trainer import OfflineTrainerParams
from tianshou.utils.net.common import Net

from tianshou_offline.run.evaluation import seed_everything

atari_bcq = load_script("atari_bcq")
atari_cql = load_script("atari_cql")
atari_crr = load_script("atari_crr")
atari_il = load_script("atari_il")

TASK = "CartPole-v1"
DATA_SIZE = 20_000
DATA_EPS = 0.2  # share of random actions in the data
RETURN_THRESHOLD = 200.0  # mean over TEST_EPISODES; random play scores about 22
TEST_EPISODES = 10
STEPS_PER_EVALUATION = 250


def controller_action(obs: np.ndarray) -> int:
    """Push the cart towards where the pole falls (and, weakly, back to the centre)."""
    return int(np.dot([0.1, 0.5, 1.0, 1.0], obs) > 0)


def make_cartpole_data() -> ReplayBuffer:
    env = gym.make(TASK)
    rng = np.random.default_rng(0)
    columns: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "terminated", "truncated")}
    columns["obs_next"] = []
    obs, _ = env.reset(seed=0)
    episode = 0
    for _ in range(DATA_SIZE):
        random_step = rng.random() < DATA_EPS
        act = int(rng.integers(2)) if random_step else controller_action(obs)
        obs_next, rew, terminated, truncated, _ = env.step(act)
        for key, value in zip(
            columns, (obs, act, rew, terminated, truncated, obs_next), strict=True
        ):
            columns[key].append(value)
        obs = obs_next
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=episode)
    arrays = {key: np.array(value) for key, value in columns.items()}
    arrays["truncated"][-1] = True  # the data ends mid-episode
    arrays["done"] = arrays["terminated"] | arrays["truncated"]
    return ReplayBuffer.from_data(**arrays)


@pytest.fixture(scope="module")
def cartpole_data() -> ReplayBuffer:
    return make_cartpole_data()


# (script, extra arguments, gradient-step budget). Gradient steps the algorithms needed to
# reach the threshold in measured runs with seeds 0, 1, 2, 3 (evaluating every 250 steps):
# IL 500, 250, 500, 500; BCQ 1750, 1000, 250, 1000; CQL 750, 500, 1000, 1000;
# CRR 500, 500, 750, 500; CRR w/ CQL 500, 500, 500, 500. Budgets are twice the slowest.
CASES = {
    "il": (atari_il, [], 1000),
    "bcq": (atari_bcq, [], 3500),
    "cql": (atari_cql, [], 2000),
    "crr": (atari_crr, [], 1500),
    "crr_cql": (atari_crr, ["--min-q-weight", "10"], 1000),
}


def train_on_cartpole(name: str, data: ReplayBuffer, seed: int = 0) -> tuple[float, int]:
    """Train the ``name`` case until the threshold or its budget: (best mean return, steps)."""
    script, extra_args, max_steps = CASES[name]
    args = script.get_args(["--device", "cpu", "--seed", str(seed), *extra_args])
    seed_everything(args.seed)
    torch.set_num_threads(1)
    env = gym.make(TASK)
    feature_net = Net(state_shape=env.observation_space.shape, hidden_sizes=[64, 64])
    algorithm = script.build_algorithm(args, feature_net, env.action_space)

    test_envs = DummyVectorEnv([lambda: gym.make(TASK)] * TEST_EPISODES)
    test_envs.seed(1000 + seed)
    result = algorithm.run_training(
        OfflineTrainerParams(
            buffer=data,
            test_collector=Collector(algorithm, test_envs, exploration_noise=True),
            max_epochs=max_steps // STEPS_PER_EVALUATION,
            epoch_num_steps=STEPS_PER_EVALUATION,
            batch_size=args.batch_size,
            test_step_num_episodes=TEST_EPISODES,
            stop_fn=lambda mean_return: mean_return >= RETURN_THRESHOLD,
            show_progress=False,
            verbose=False,
        )
    )
    return result.best_reward, result.update_step


@pytest.mark.parametrize("name", list(CASES))
def test_learns_cartpole_from_offline_data(name: str, cartpole_data: ReplayBuffer) -> None:
    best_return, steps = train_on_cartpole(name, cartpole_data)
    print(f"{name}: best mean return {best_return:.0f} after {steps} gradient steps")
    assert best_return >= RETURN_THRESHOLD
