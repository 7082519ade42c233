"""Small D4RL-schema files made in the tests."""

from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np


def write_random_hopper(path: Path, steps: int) -> Path:
    """``steps`` transitions of uniformly random actions in Hopper-v5, in the D4RL schema."""
    env = gym.make("Hopper-v5")
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    rows: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards")}
    rows.update(terminals=[], timeouts=[], next_observations=[])
    for _ in range(steps):
        act = rng.uniform(-1, 1, 3).astype(np.float32)
        next_obs, rew, terminated, truncated, _ = env.step(act)
        for key, value in zip(rows, (obs, act, rew, terminated, truncated, next_obs)):
            rows[key].append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    with h5py.File(path, "w") as file:
        for key, values in rows.items():
            file[key] = np.asarray(values)
    return path
