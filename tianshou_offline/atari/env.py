"""Atari environments with the DeepMind preprocessing, as Tianshou vector environments.

An observation is the last 4 frames, each a grayscale 84x84 uint8 image: shape (4, 84, 84).
One agent step is 4 emulator frames (the action is repeated; the observed frame is the
pixel-wise maximum of the last two, which removes the flicker of sprites drawn every other
frame). An episode starts with 1-30 random no-ops (so a deterministic emulator does not always
produce the same game) and, in games that wait for it, a FIRE.

Training environments additionally
* end an episode when a life is lost (the emulator is not reset, the next episode continues the
  game): the value of a state then does not depend on lives left, which helps Q-learning;
* clip rewards to their sign, so one learning rate fits games with very different scores.
Test environments do neither: they report real game scores over whole games.

EnvPool (a C++ vectorised ALE) is used when it is installed; it implements the same
preprocessing natively. Otherwise the environments are gymnasium + ale-py (whose package
ships the game ROMs).
"""

from __future__ import annotations

import argparse
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, TimeLimit
from tianshou.data import VectorReplayBuffer
from tianshou.env import BaseVectorEnv, DummyVectorEnv, ShmemVectorEnv

from tianshou_offline.errors import UserInputError

try:
    import envpool
except ImportError:
    envpool = None

gym.register_envs(ale_py)

FRAME_SIZE = 84
FRAME_STACK = 4
NOOP_MAX = 30
FRAME_SKIP = 4
MAX_GAME_STEPS = 27_000  # ale-py's limit for v4 games: 108,000 frames


def add_atari_env_args(parser: argparse.ArgumentParser) -> None:
    """The arguments every Atari script has: the game and an optional episode cap."""
    parser.add_argument(
        "--task", default="PongNoFrameskip-v4", help="ale-py game id, e.g. BreakoutNoFrameskip-v4"
    )
    parser.add_argument(
        "--max-episode-steps",
        type=int,
        default=None,
        help="end (truncate) episodes after this many agent steps (default: the game's own "
        "limit, 108,000 frames = 27,000 steps); a small value makes quick smoke tests",
    )


def check_atari_task(task: str) -> None:
    """Raise UserInputError unless ``task`` is an ale-py game without built-in frame skipping."""
    hint = "use an id such as PongNoFrameskip-v4 or BreakoutNoFrameskip-v4"
    try:
        spec = gym.spec(task)
    except gym.error.Error as err:
        raise UserInputError(f"unknown task '{task}' ({err}); {hint}") from None
    # The preprocessing does its own frame skipping, so the emulator must not skip frames.
    if not str(spec.entry_point).startswith("ale_py") or spec.kwargs.get("frameskip") != 1:
        raise UserInputError(f"'{task}' is not an Atari game without frame skipping; {hint}")


class EpisodicLifeEnv(gym.Wrapper):
    """Report the loss of a life as the end of an episode, without resetting the game.

    ``reset`` only resets the emulator after a real game over; after a lost life it takes one
    no-op step and play continues from there.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        # lives == 0 can last a few frames in some games (Qbert) before the real game over.
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, _, _, info = self.env.step(0)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireResetEnv(gym.Wrapper):
    """Press FIRE after each reset, for games that stand still until it is pressed."""

    FIRE = 1

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(self.FIRE)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        return obs, info


def make_gym_atari_env(
    task: str, *, training: bool, max_episode_steps: int | None = None
) -> gym.Env:
    """One gymnasium Atari environment with the preprocessing described in the module docstring."""
    env = gym.make(task, obs_type="grayscale")
    # No-op reset, 4-frame skip with a max over the last two frames, 84x84 resize.
    env = AtariPreprocessing(
        env,
        noop_max=NOOP_MAX,
        frame_skip=FRAME_SKIP,
        screen_size=FRAME_SIZE,
        terminal_on_life_loss=False,  # EpisodicLifeEnv instead: it does not reset the game
        grayscale_obs=True,
    )
    if training:
        env = EpisodicLifeEnv(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireResetEnv(env)
    if training:
        env = gym.wrappers.TransformReward(env, lambda reward: float(np.sign(reward)))
    env = FrameStackObservation(env, FRAME_STACK)  # repeats the first frame after a reset
    if max_episode_steps is not None:
        # Outermost: counts the agent's steps (in training envs an episode is one life).
        env = TimeLimit(env, max_episode_steps)
    return env


def _make_envpool(
    task: str, num_envs: int, seed: int, training: bool, max_episode_steps: int | None
) -> BaseVectorEnv:
    """The same environments from EnvPool (which names them e.g. Pong-v5)."""
    options: dict[str, Any] = {}
    if max_episode_steps is not None:
        options["max_episode_steps"] = max_episode_steps
    return envpool.make_gymnasium(
        task.replace("NoFrameskip-v4", "-v5"),
        num_envs=num_envs,
        seed=seed,
        episodic_life=training,
        reward_clip=training,
        stack_num=FRAME_STACK,
        frame_skip=FRAME_SKIP,
        noop_max=NOOP_MAX,
        img_height=FRAME_SIZE,
        img_width=FRAME_SIZE,
        gray_scale=True,
        use_fire_reset=True,
        repeat_action_probability=0.0,
        **options,
    )


def _make_vector_env(
    task: str, num_envs: int, seed: int, training: bool, max_episode_steps: int | None
) -> BaseVectorEnv:
    if envpool is not None:
        return _make_envpool(task, num_envs, seed, training, max_episode_steps)

    def make_one() -> gym.Env:
        return make_gym_atari_env(task, training=training, max_episode_steps=max_episode_steps)

    # One environment runs in this process; several run in subprocesses, in parallel.
    vector_env_class = DummyVectorEnv if num_envs == 1 else ShmemVectorEnv
    envs = vector_env_class([make_one] * num_envs)
    envs.seed(seed)  # environment i gets seed + i
    return envs


def make_atari_env(
    task: str,
    seed: int,
    training_num: int,
    test_num: int,
    *,
    max_episode_steps: int | None = None,
) -> tuple[gym.Env, BaseVectorEnv | None, BaseVectorEnv]:
    """Return (one environment for its spaces, training envs, test envs).

    ``training_num`` may be 0 (offline scripts): the training envs are then None. Test envs are
    seeded after the training envs, so no test game repeats a training game.
    """
    check_atari_task(task)
    if test_num < 1:
        raise UserInputError(f"--test-num must be at least 1 (got {test_num})")
    env = make_gym_atari_env(task, training=False)
    train_envs = (
        _make_vector_env(task, training_num, seed, True, max_episode_steps)
        if training_num > 0
        else None
    )
    test_envs = _make_vector_env(task, test_num, seed + training_num, False, max_episode_steps)
    return env, train_envs, test_envs


def evaluation_buffer(num_envs: int, max_episode_steps: int | None) -> VectorReplayBuffer:
    """A buffer for a test collector: room for one whole episode per env, newest frames only.

    Tianshou measures episode lengths from the buffer, so an episode must fit. Storing one
    84x84 frame per step (not the default obs and obs_next stacks) keeps that at 7 KB per step:
    190 MB per env for the 27,000-step game limit, a third of Tianshou's default buffer.
    """
    steps = max_episode_steps or MAX_GAME_STEPS
    return VectorReplayBuffer(
        num_envs * steps, num_envs, ignore_obs_next=True, save_only_last_obs=True
    )
