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
import copy
import functools
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


class ResumableEnv(gym.Wrapper):
    """The outermost wrapper of a training environment whose whole state can be saved and put
    back, so that an interrupted online run continues with exactly the same games.

    The state (``resume_state``, picklable) is the emulator's (``cloneState(include_rng=True)``:
    RAM, CPU, frame counters and ALE's own RNG), the environment's ``np_random`` (the no-op
    counts at reset), every attribute of every wrapper in between except its links and spaces
    (the frame stack, the max-pooling buffer, lives, the step count of the time limit, ...) and
    the last observation and info this wrapper returned. ``reset(options={RESTORE_OPTION:
    states})`` puts ``states[index]`` back instead of resetting and returns that observation
    and info, so a Tianshou collector continues from it (``restore_options``).
    """

    RESTORE_OPTION = "restore_state"
    # attributes of a wrapper that are not state: links, spaces, constructor arguments
    _NOT_STATE = frozenset(
        {"env", "ale", "_saved_kwargs", "_action_space", "_observation_space", "_metadata"}
        | {"_cached_spec", "_reward_range"}
    )

    def __init__(self, env: gym.Env, index: int) -> None:
        super().__init__(env)
        self.index = index  # which of the vector environment's states is this one's
        self._last: tuple[Any, dict[str, Any]] | None = None

    def _layers(self) -> list[gym.Env]:
        layers, env = [], self.env
        while isinstance(env, gym.Wrapper):
            layers.append(env)
            env = env.env
        return layers

    @property
    def resume_state(self) -> dict[str, Any]:
        unwrapped = self.env.unwrapped
        return {
            "layers": [
                (
                    type(layer).__name__,
                    {
                        key: copy.deepcopy(value)
                        for key, value in vars(layer).items()
                        if key not in self._NOT_STATE and not callable(value)
                    },
                )
                for layer in self._layers()
            ],
            "ale": unwrapped.ale.cloneState(include_rng=True),
            "np_random": copy.deepcopy(unwrapped.np_random),
            "last": copy.deepcopy(self._last),
        }

    def _restore(self, state: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        layers = self._layers()
        names = [type(layer).__name__ for layer in layers]
        if names != [name for name, _ in state["layers"]]:
            raise ValueError(f"saved environment state of wrappers {state['layers']}, not {names}")
        for layer, (_, values) in zip(layers, state["layers"], strict=True):
            vars(layer).update(copy.deepcopy(values))
        unwrapped = self.env.unwrapped
        unwrapped.ale.restoreState(state["ale"])
        unwrapped.np_random = copy.deepcopy(state["np_random"])
        self._last = copy.deepcopy(state["last"])
        if self._last is None:
            raise ValueError("the saved environment state is of an environment never reset")
        return copy.deepcopy(self._last)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if options and self.RESTORE_OPTION in options:
            return self._restore(options[self.RESTORE_OPTION][self.index])
        self._last = self.env.reset(seed=seed, options=options)
        return self._last

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        result = self.env.step(action)
        self._last = (result[0], result[4])
        return result


def vector_env_states(envs: BaseVectorEnv) -> list[dict[str, Any]]:
    """``resume_state`` of each environment of a vector of ``ResumableEnv`` (in env order)."""
    if isinstance(envs, DummyVectorEnv):  # its get_env_attr reads the unwrapped env
        return [worker.env.resume_state for worker in envs.workers]
    return list(envs.get_env_attr("resume_state"))


def restore_options(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Reset arguments that put ``states`` (from ``vector_env_states``) back, e.g.
    ``collector.reset_env(restore_options(states))``: the collector then continues from the
    saved observations."""
    return {"options": {ResumableEnv.RESTORE_OPTION: states}}


def _make_resumable_env(
    task: str, index: int, *, training: bool, max_episode_steps: int | None
) -> gym.Env:
    env = make_gym_atari_env(task, training=training, max_episode_steps=max_episode_steps)
    return ResumableEnv(env, index)


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
    task: str,
    num_envs: int,
    seed: int,
    training: bool,
    max_episode_steps: int | None,
    resumable: bool = False,
) -> BaseVectorEnv:
    if envpool is not None and not resumable:
        return _make_envpool(task, num_envs, seed, training, max_episode_steps)

    def make_one() -> gym.Env:
        return make_gym_atari_env(task, training=training, max_episode_steps=max_episode_steps)

    env_fns = [make_one] * num_envs
    if resumable:
        env_fns = [
            functools.partial(
                _make_resumable_env,
                task,
                index,
                training=training,
                max_episode_steps=max_episode_steps,
            )
            for index in range(num_envs)
        ]
    # One environment runs in this process; several run in subprocesses, in parallel.
    vector_env_class = DummyVectorEnv if num_envs == 1 else ShmemVectorEnv
    envs = vector_env_class(env_fns)
    envs.seed(seed)  # environment i gets seed + i
    return envs


def make_atari_env(
    task: str,
    seed: int,
    training_num: int,
    test_num: int,
    *,
    max_episode_steps: int | None = None,
    resumable_training: bool = False,
) -> tuple[gym.Env, BaseVectorEnv | None, BaseVectorEnv]:
    """Return (one environment for its spaces, training envs, test envs).

    ``training_num`` may be 0 (offline scripts): the training envs are then None. Test envs are
    seeded after the training envs, so no test game repeats a training game.
    ``resumable_training``: training envs are ``ResumableEnv`` (gymnasium + ale-py even where
    EnvPool is installed: EnvPool's state cannot be saved).
    """
    check_atari_task(task)
    if test_num < 1:
        raise UserInputError(f"--test-num must be at least 1 (got {test_num})")
    env = make_gym_atari_env(task, training=False)
    train_envs = (
        _make_vector_env(task, training_num, seed, True, max_episode_steps, resumable_training)
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
