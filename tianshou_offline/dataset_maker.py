"""Make datasets in the D4RL format from SAC policies trained here (D4RL itself is offline).

Three modes:

``train``   trains SAC online on a gymnasium MuJoCo task (Tianshou's SAC networks and optimizers,
            updated by the compiled functional step ``updates.continuous.SACStep`` over a
            replay buffer held as tensors) and keeps, every ``--snapshot-every`` env steps,
            a snapshot of the actor (a few hundred KB) together with its evaluated return. A
            checkpoint (networks, optimizers, RNG states and the log of every action taken) is
            written atomically, so ``--resume-path`` continues an interrupted run exactly where
            it stopped.
``export``  copies what ``make`` needs from a training run (the snapshot index, the medium
            and expert snapshots, the action log up to the medium snapshot) into a small
            folder that can be committed, e.g. ``examples/offline/snapshots/hopper``.
``make``    writes D4RL-schema HDF5 files from snapshots, without retraining:
              random         uniform random actions
              medium         the snapshot whose return is closest to 1/3 of the best return
              expert         the snapshot with the best return
              medium-replay  SAC's replay buffer up to the medium snapshot
              medium-expert  medium and expert concatenated

How medium-replay is rebuilt: during training every action is rounded to float16 *before*
the environment sees it, and each episode is reset with a recorded seed. MuJoCo is
deterministic, so replaying the logged actions from the logged seeds reproduces the replay
buffer transition by transition (the stored per-episode returns check this), at a cost of
2 bytes per action dimension instead of a full buffer dump.

Made files never take an official D4RL name: ``hopper-made-medium-1m.hdf5`` rather than
``hopper-medium-v2``; their ``metadata`` group says exactly how they were made.

    python examples/offline/make_d4rl_dataset.py train --task Hopper-v5 --steps 300000 \
        --run-dir runs/hopper
    python examples/offline/make_d4rl_dataset.py export --run-dir runs/hopper --out snapshots/hopper
    python examples/offline/make_d4rl_dataset.py make --snapshots snapshots/hopper \
        --levels medium expert
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import h5py
import numpy as np
import torch
from tqdm import tqdm

from tianshou_offline import tianshou_adapter
from tianshou_offline.data import d4rl as d4rl_data
from tianshou_offline.errors import UserInputError
from tianshou_offline.files import DirectoryLock, atomic_write, check_directory, make_directory
from tianshou_offline.run.arguments import check_after_parsing
from tianshou_offline.updates.continuous import SACStep
from tianshou_offline.updates.core import CompilationFailed, FastUpdate, ReplayTensors

TOOL_VERSION = "2.0"  # 2.0: the functional SAC step over a tensor replay buffer
EPISODE_STEPS = 1000  # D4RL's MuJoCo episodes are cut (timeouts) at 1000 steps
LEVELS = ("random", "medium", "expert", "medium-replay", "medium-expert")
DEFAULT_OUT_DIR = "~/.d4rl/made"  # never $D4RL_DATASET_DIR: that is the cache of official files
SNAPSHOT_INDEX = "index.json"
ACTION_LOG = "replay_actions.npz"
CHECKPOINT = "checkpoint.pt"
CHECKSUMS = "checksums.json"  # written by export: what make must reproduce from the folder
# The policy levels depend on the CPU family (torch's float32 kernels round differently on
# AMD EPYC and on AVX-512 Intel), so checksums.json can hold further machines' checksums here.
OTHER_MACHINES = "other_machines"
CHECKSUM_TRANSITIONS = 300

# The MuJoCo locomotion tasks D4RL made data for; D4RL's bare names ("hopper") are accepted too.
D4RL_ENV_NAMES = {
    "hopper": "Hopper",
    "halfcheetah": "HalfCheetah",
    "walker2d": "Walker2d",
    "ant": "Ant",
}


# --------------------------------------------------------------------------------------------
# Tasks and environments
# --------------------------------------------------------------------------------------------


def gym_task_id(name: str) -> str:
    """``hopper``, ``Hopper-v2``, ``hopper-medium-v2`` or ``Hopper-v5`` -> ``Hopper-v5``."""
    bare = D4RL_ENV_NAMES.get(name.strip().lower())
    task_id = d4rl_data.gym_task_id(f"{bare}-v2" if bare else name.strip())
    if task_id.split("-")[0] not in D4RL_ENV_NAMES.values():
        raise UserInputError(
            f"{name!r} is not a task this tool trains: use one of "
            f"{', '.join(D4RL_ENV_NAMES)} (or their D4RL/gymnasium ids such as Hopper-v5)"
        )
    return task_id


def short_name(task_id: str) -> str:
    """``Hopper-v5`` -> ``hopper`` (the prefix of made dataset files)."""
    return task_id.split("-")[0].lower()


def make_env(task_id: str) -> gym.Env:
    env = gym.make(task_id, max_episode_steps=EPISODE_STEPS)
    space = env.action_space
    # Actions are stored as the SAC actor's tanh output, so the env's range must be [-1, 1].
    if not (
        isinstance(space, gym.spaces.Box) and np.all(space.low == -1) and np.all(space.high == 1)
    ):
        raise UserInputError(f"{task_id}: expected continuous actions in [-1, 1], got {space}")
    return env


def episode_seed(base_seed: int, episode_index: int) -> int:
    """The reset seed of an episode: a pure function of the run's seed and the episode's number."""
    return int(np.random.SeedSequence([base_seed, episode_index]).generate_state(1)[0])


def physics_state(env: gym.Env) -> tuple[np.ndarray, np.ndarray]:
    data = env.unwrapped.data  # type: ignore[attr-defined]
    return data.qpos.copy(), data.qvel.copy()


# --------------------------------------------------------------------------------------------
# Networks (Tianshou 2.x SAC) and actions from an actor
# --------------------------------------------------------------------------------------------


def build_actor(obs_dim: int, act_dim: int, hidden_sizes: list[int]) -> torch.nn.Module:
    from tianshou.utils.net.common import Net
    from tianshou.utils.net.continuous import ContinuousActorProbabilistic

    return ContinuousActorProbabilistic(
        preprocess_net=Net(state_shape=obs_dim, hidden_sizes=hidden_sizes),
        action_shape=act_dim,
        unbounded=True,
        conditioned_sigma=True,
    )


def build_sac(env: gym.Env, args: argparse.Namespace, device: str):  # -> tianshou SAC
    from tianshou.algorithm import SAC
    from tianshou.algorithm.modelfree.sac import AutoAlpha, SACPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory
    from tianshou.utils.net.common import Net
    from tianshou.utils.net.continuous import ContinuousCritic

    obs_dim = int(np.prod(env.observation_space.shape))
    act_dim = int(np.prod(env.action_space.shape))
    actor = build_actor(obs_dim, act_dim, args.hidden_sizes).to(device)

    def critic() -> torch.nn.Module:
        net = Net(
            state_shape=obs_dim, action_shape=act_dim, hidden_sizes=args.hidden_sizes, concat=True
        )
        return ContinuousCritic(preprocess_net=net).to(device)

    # Automatic entropy tuning: the usual target entropy -|A| works for all four tasks.
    alpha = AutoAlpha(-float(act_dim), 0.0, AdamOptimizerFactory(lr=args.alpha_lr)).to(device)
    return SAC(
        policy=SACPolicy(actor=actor, action_space=env.action_space),
        policy_optim=AdamOptimizerFactory(lr=args.actor_lr),
        critic=critic(),
        critic_optim=AdamOptimizerFactory(lr=args.critic_lr),
        critic2=critic(),
        critic2_optim=AdamOptimizerFactory(lr=args.critic_lr),
        tau=args.tau,
        gamma=args.gamma,
        alpha=alpha,
    )


def actor_actions(
    actor: torch.nn.Module, obs: np.ndarray, generator: torch.Generator | None
) -> np.ndarray:
    """SAC's action for a batch of observations: tanh of a sample of the actor's Gaussian.

    This is exactly what ``SACPolicy`` does while training; with ``generator=None`` the
    global torch RNG is used (training), otherwise the given one (dataset making).
    """
    device = next(actor.parameters()).device
    with torch.no_grad():
        (mu, sigma), _ = actor(torch.as_tensor(obs, dtype=torch.float32, device=device))
        noise = torch.randn(mu.shape, generator=generator, device="cpu").to(device)
        return torch.tanh(mu + sigma * noise).cpu().numpy().astype(np.float32)


# --------------------------------------------------------------------------------------------
# Episodes -> D4RL arrays
# --------------------------------------------------------------------------------------------


class EpisodeRecorder:
    """Collects one episode's transitions with the physics state behind each observation.

    ``full_precision`` keeps float64 (what the env returns) instead of D4RL's float32, for
    rebuilding a replay buffer bit for bit.
    """

    def __init__(self, full_precision: bool = False) -> None:
        self.columns: dict[str, list] = {k: [] for k in D4RL_KEYS}
        self.full_precision = full_precision

    def add(self, obs, act, rew, next_obs, terminated, truncated, qpos, qvel) -> None:
        values = (obs, act, rew, terminated, truncated, next_obs, qpos, qvel)
        for key, value in zip(D4RL_KEYS, values, strict=True):
            # A copy: callers pass rows of arrays that they overwrite on the next step.
            self.columns[key].append(np.array(value))

    def __len__(self) -> int:
        return len(self.columns["rewards"])

    def arrays(self) -> dict[str, np.ndarray]:
        def dtype(key: str) -> type:
            return np.float64 if self.full_precision and key in FLOAT_KEYS else D4RL_DTYPES[key]

        return {key: np.asarray(values, dtype=dtype(key)) for key, values in self.columns.items()}


D4RL_KEYS = (
    "observations",
    "actions",
    "rewards",
    "terminals",
    "timeouts",
    "next_observations",
    "infos/qpos",
    "infos/qvel",
)
D4RL_DTYPES = {
    "observations": np.float32,
    "actions": np.float32,
    "rewards": np.float32,
    "terminals": np.bool_,
    "timeouts": np.bool_,
    "next_observations": np.float32,
    "infos/qpos": np.float64,
    "infos/qvel": np.float64,
}
FLOAT_KEYS = ("observations", "actions", "rewards", "next_observations")


def concatenate_episodes(episodes: list[dict[str, np.ndarray]], limit: int | None = None):
    """Join episodes in order; cut at ``limit`` transitions, marking the cut as a timeout."""
    data = {key: np.concatenate([ep[key] for ep in episodes]) for key in D4RL_KEYS}
    if limit is not None and len(data["rewards"]) > limit:
        data = {key: value[:limit] for key, value in data.items()}
        # The last episode was cut by the dataset's size, not by the task: a truncation.
        if not data["terminals"][-1]:
            data["timeouts"][-1] = True
    return data


def episode_returns(data: dict[str, np.ndarray]) -> np.ndarray:
    ends = np.flatnonzero(data["terminals"] | data["timeouts"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    cumulative = np.concatenate([[0.0], np.cumsum(data["rewards"], dtype=np.float64)])
    return cumulative[ends + 1] - cumulative[starts]


def collect(
    task_id: str,
    choose_actions: Callable[[np.ndarray], np.ndarray],
    *,
    seed: int,
    num_envs: int,
    num_transitions: int | None = None,
    num_episodes: int | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run ``num_envs`` environments side by side with one batched policy call per step.

    Finished episodes are kept in the order they finish until there are ``num_transitions``
    transitions (the last one is cut to fit) or ``num_episodes`` episodes; episodes still
    running then are dropped. Every reset uses ``episode_seed(seed, k)`` for the k-th
    episode started, so a (seed, policy, num_envs) triple always gives the same data.
    """
    envs = [make_env(task_id) for _ in range(num_envs)]
    started = 0
    obs = np.zeros((num_envs,) + envs[0].observation_space.shape)
    recorders = []
    for i, env in enumerate(envs):
        obs[i], _ = env.reset(seed=episode_seed(seed, started))
        started += 1
        recorders.append(EpisodeRecorder())
    finished: list[dict[str, np.ndarray]] = []
    num_finished_transitions = 0

    def done() -> bool:
        if num_transitions is not None and num_finished_transitions >= num_transitions:
            return True
        return num_episodes is not None and len(finished) >= num_episodes

    bar = tqdm(total=num_transitions, unit="step", disable=not progress, smoothing=0.05)
    while not done():
        actions = choose_actions(obs.astype(np.float32))
        for i, env in enumerate(envs):
            qpos, qvel = physics_state(env)
            next_obs, reward, terminated, truncated, _ = env.step(actions[i])
            recorders[i].add(
                obs[i], actions[i], reward, next_obs, terminated, truncated, qpos, qvel
            )
            if terminated or truncated:
                finished.append(recorders[i].arrays())
                num_finished_transitions += len(recorders[i])
                bar.update(len(recorders[i]))
                recorders[i] = EpisodeRecorder()
                next_obs, _ = env.reset(seed=episode_seed(seed, started))
                started += 1
                if done():
                    break
            obs[i] = next_obs
    bar.close()
    for env in envs:
        env.close()
    if num_episodes is not None:
        finished = finished[:num_episodes]
    return concatenate_episodes(finished, num_transitions)


# --------------------------------------------------------------------------------------------
# The action log: everything needed to rebuild SAC's replay buffer
# --------------------------------------------------------------------------------------------


def to_env_action(action: np.ndarray) -> np.ndarray:
    """Round to float16 (then back to float32) so the action log stores it exactly."""
    return np.clip(action, -1.0, 1.0).astype(np.float16).astype(np.float32)


@dataclass
class ActionLog:
    """All actions of a training run, the reset seed of every episode started, and the length
    and return of every episode finished (to check that a replay reproduces them)."""

    actions: np.ndarray  # (capacity, act_dim) float16; the first ``num_steps`` rows are used
    num_steps: int
    episode_seeds: list[int]
    episode_lengths: list[int]
    episode_returns: list[float]

    @classmethod
    def empty(cls, act_dim: int, capacity: int) -> ActionLog:
        return cls(np.zeros((capacity, act_dim), np.float16), 0, [], [], [])

    def append(self, action: np.ndarray) -> None:
        if self.num_steps == len(self.actions):  # grow (a resumed run may train longer)
            self.actions = np.concatenate([self.actions, np.zeros_like(self.actions)])
        self.actions[self.num_steps] = action
        self.num_steps += 1

    def to_arrays(self, upto: int | None = None) -> dict[str, np.ndarray]:
        """The log of the first ``upto`` steps (all by default) as arrays for ``np.savez``."""
        upto = self.num_steps if upto is None else min(upto, self.num_steps)
        lengths = np.cumsum(self.episode_lengths)
        num_full = int(np.searchsorted(lengths, upto, side="right"))
        num_started = num_full + (1 if (lengths[num_full - 1] if num_full else 0) < upto else 0)
        return {
            "actions": self.actions[:upto].copy(),
            "episode_seeds": np.asarray(self.episode_seeds[:num_started], np.int64),
            "episode_lengths": np.asarray(self.episode_lengths[:num_full], np.int64),
            "episode_returns": np.asarray(self.episode_returns[:num_full], np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ActionLog:
        actions = np.asarray(arrays["actions"], np.float16)
        return cls(
            actions=actions.copy(),
            num_steps=len(actions),
            episode_seeds=[int(s) for s in arrays["episode_seeds"]],
            episode_lengths=[int(n) for n in arrays["episode_lengths"]],
            episode_returns=[float(r) for r in arrays["episode_returns"]],
        )


@dataclass
class Replay:
    """What replaying an action log gives back."""

    data: dict[str, np.ndarray] | None  # D4RL arrays of every replayed transition
    env: gym.Env  # left after the last logged action, for resuming training
    obs: np.ndarray  # its current observation
    open_episode_return: float  # the return so far of the episode still running
    return_error: float  # largest |logged - replayed| episode return (0.0: exact)


def replay_action_log(
    task_id: str, log: ActionLog, progress: bool = False, full_precision: bool = False
):
    """Replay the logged actions from the logged seeds (an episode still running at the end
    of the log ends in a timeout in ``data``)."""
    env = make_env(task_id)
    recorders = [EpisodeRecorder(full_precision)]
    obs, _ = env.reset(seed=log.episode_seeds[0]) if log.episode_seeds else env.reset()
    episode = 0
    episode_return = 0.0  # summed step by step in float64, exactly as during training
    worst_return_error = 0.0
    for step in tqdm(range(log.num_steps), unit="step", disable=not progress, desc="replay"):
        action = log.actions[step].astype(np.float32)
        qpos, qvel = physics_state(env)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        recorders[-1].add(obs, action, reward, next_obs, terminated, truncated, qpos, qvel)
        episode_return += float(reward)
        obs = next_obs
        if terminated or truncated:
            if episode < len(log.episode_lengths):
                if len(recorders[-1]) != log.episode_lengths[episode]:
                    worst_return_error = math.inf
                else:
                    error = abs(episode_return - log.episode_returns[episode])
                    worst_return_error = max(worst_return_error, error)
            episode += 1
            episode_return = 0.0
            recorders.append(EpisodeRecorder(full_precision))
            if step + 1 == log.num_steps and episode == len(log.episode_seeds):
                break  # a log cut where an episode ended (to_arrays(upto)): nothing follows
            if episode >= len(log.episode_seeds):
                raise UserInputError("the action log is inconsistent: more episodes than seeds")
            obs, _ = env.reset(seed=log.episode_seeds[episode])
    if episode != len(log.episode_lengths):
        # The replay ended its episodes at other steps than the original run did.
        worst_return_error = math.inf
    episodes = [r.arrays() for r in recorders if len(r)]
    data = concatenate_episodes(episodes) if episodes else None
    if data is not None and not (data["terminals"][-1] or data["timeouts"][-1]):
        data["timeouts"][-1] = True  # the log ends mid-episode: a truncation, as in D4RL
    return Replay(data, env, obs, episode_return, worst_return_error)


# --------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------


def snapshot_file_name(step: int) -> str:
    return f"actor-step{step:07d}.pt"


def load_index(snapshot_dir: Path, option: str = "--snapshots") -> dict[str, Any]:
    """The snapshot index in ``snapshot_dir``; ``option``: the flag that named the folder."""
    path = snapshot_dir / SNAPSHOT_INDEX
    if not path.is_file():
        written_by = (
            "a training run of 'train' (or its snapshots/ folder)"
            if option == "--run-dir"
            else "'train' (its snapshots/ folder) or 'export', e.g. "
            "examples/offline/snapshots/hopper"
        )
        raise UserInputError(
            f"no {SNAPSHOT_INDEX} in {snapshot_dir}: pass {option} a folder written by {written_by}"
        )
    try:
        index = json.loads(path.read_text())
        index["snapshots"] = sorted(index["snapshots"], key=lambda s: s["step"])
    except (ValueError, KeyError, TypeError) as err:
        raise UserInputError(f"{path} is not a snapshot index ({err}); re-export it") from err
    if not index["snapshots"]:
        raise UserInputError(f"{path} lists no snapshots yet: train longer")
    return index


def write_json(path: Path, payload: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")


def choose_medium_and_expert(index: dict[str, Any]) -> tuple[dict, dict]:
    """Expert: the best snapshot. Medium: the one before it whose return is closest to 1/3 of it.

    Snapshots from the random-action warm-up (before any update) are no candidates.
    """
    learned = [s for s in index["snapshots"] if s["step"] > index.get("start_steps", 0)]
    snapshots = learned or index["snapshots"]
    expert = max(snapshots, key=lambda s: s["return_mean"])
    target = expert["return_mean"] / 3.0
    earlier = [s for s in snapshots if s["step"] < expert["step"]] or [expert]
    medium = min(earlier, key=lambda s: abs(s["return_mean"] - target))
    return medium, expert


def load_snapshot_actor(snapshot_dir: Path, entry: dict[str, Any]) -> torch.nn.Module:
    path = snapshot_dir / entry["file"]
    if not path.is_file():
        raise UserInputError(
            f"snapshot {path} is missing: 'export' copies the medium and expert snapshots; "
            f"point --snapshots at the training run's snapshots/ folder for the others"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        actor = build_actor(payload["obs_dim"], payload["act_dim"], list(payload["hidden_sizes"]))
        actor.load_state_dict({k: v.float() for k, v in payload["actor"].items()})
    except Exception as err:  # any unpickling/shape problem means the file is not usable
        raise UserInputError(f"{path} is not a snapshot of this tool ({err})") from err
    return actor.eval()


def evaluate_actor(actor: torch.nn.Module, task_id: str, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` episodes with actions sampled from the SAC policy (the way
    datasets are made, so a snapshot's return is the return its dataset will have)."""
    generator = torch.Generator().manual_seed(seed)
    data = collect(
        task_id,
        lambda obs: actor_actions(actor, obs, generator),
        seed=seed,
        num_envs=min(episodes, 10),
        num_episodes=episodes,
    )
    return episode_returns(data)


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag, so training stops between two steps and checkpoints."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True


# Settings that define a run: a resumed run takes them from its checkpoint.
RUN_SETTINGS = (
    "task", "seed", "hidden_sizes", "actor_lr", "critic_lr", "alpha_lr", "tau", "gamma",
    "batch_size", "buffer_size", "start_steps", "updates_per_step", "snapshot_every",
    "eval_episodes",
)  # fmt: skip
STATS_EVERY = 1000  # env steps between two TensorBoard points of the losses (one host sync)


class SacRun:
    """One SAC training run: the networks, the replay buffer, the environment and the action
    log, one ``step()`` at a time, saved as a checkpoint and as actor snapshots."""

    def __init__(self, args: argparse.Namespace, device: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.args = args
        self.run_dir = Path(args.run_dir)
        self.snapshot_dir = self.run_dir / "snapshots"
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(args.seed)
        self.env = make_env(args.task)
        self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.act_dim = int(np.prod(self.env.action_space.shape))
        self.algorithm = build_sac(self.env, args, device)
        self.buffer = ReplayTensors(args.buffer_size, self.obs_dim, self.act_dim, device)
        self.update: FastUpdate | None = None  # built at the first update, after any resume
        self.stat_sum: torch.Tensor | None = None
        self.random_actions = np.random.default_rng(args.seed)  # before learning starts
        self.log = ActionLog.empty(self.act_dim, args.steps)
        self.index: dict[str, Any] = {
            "task": args.task,
            "hidden_sizes": args.hidden_sizes,
            "seed": args.seed,
            "eval_episodes": args.eval_episodes,
            "start_steps": args.start_steps,
            "return": "mean episode return with actions sampled from the SAC policy",
            "snapshots": [],
        }
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        self.log.episode_seeds.append(episode_seed(args.seed, 0))
        self.obs, _ = self.env.reset(seed=self.log.episode_seeds[0])
        self.episode_return = 0.0

    def temperature_optimizer(self) -> torch.optim.Optimizer:
        """SAC's temperature optimizer, which the algorithm's state_dict leaves out."""
        temperature = tianshou_adapter.automatic_temperature(self.algorithm.alpha)
        assert temperature is not None  # build_sac tunes the temperature
        return temperature.optimizer

    def resume(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a checkpoint: networks, optimizers and RNGs are loaded; the replay
        buffer and the running episode are rebuilt by replaying the action log."""
        self.algorithm.load_state_dict(checkpoint["algorithm"])
        self.temperature_optimizer().load_state_dict(checkpoint["alpha_optim"])  # not in the above
        self.index = checkpoint["index"]
        self.log = ActionLog.from_arrays(checkpoint["action_log"])
        replay = replay_action_log(self.args.task, self.log, progress=True, full_precision=True)
        if replay.return_error > 1e-6:
            print(
                f"warning: the replay differs from the run (return error {replay.return_error:.3g})"
            )
        self.env, self.obs, self.episode_return = replay.env, replay.obs, replay.open_episode_return
        data = replay.data
        if data is not None:  # the buffer keeps no time-outs: they bootstrap like any step
            self.buffer.extend(data["observations"], data["actions"], data["rewards"],
                               data["terminals"], data["next_observations"])  # fmt: skip
        self.random_actions.bit_generator.state = checkpoint["random_actions_rng"]
        set_rng_states(checkpoint["rng"])

    def step(self) -> None:
        """One env step (random actions during warm-up, then SAC's), then SAC's updates."""
        args, log = self.args, self.log
        if log.num_steps < args.start_steps:
            action = self.random_actions.uniform(-1.0, 1.0, self.act_dim)
        else:
            action = actor_actions(self.algorithm.policy.actor, self.obs[None], None)[0]
        action = to_env_action(action)
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        self.buffer.add(self.obs, action, reward, terminated, next_obs)  # truncated: bootstrap
        log.append(action)
        self.episode_return += float(reward)
        self.obs = next_obs
        if terminated or truncated:
            log.episode_lengths.append(log.num_steps - sum(log.episode_lengths))
            log.episode_returns.append(self.episode_return)
            self.writer.add_scalar("train/episode_return", self.episode_return, log.num_steps)
            self.episode_return = 0.0
            log.episode_seeds.append(episode_seed(args.seed, len(log.episode_seeds)))
            self.obs, _ = self.env.reset(seed=log.episode_seeds[-1])

        if log.num_steps >= args.start_steps:
            for _ in range(args.updates_per_step):
                values = self.run_update()
                self.stat_sum = values.clone() if self.stat_sum is None else self.stat_sum + values
            if log.num_steps % STATS_EVERY == 0 and self.stat_sum is not None:
                means = (self.stat_sum / (STATS_EVERY * args.updates_per_step)).tolist()
                for key, value in zip(SACStep.stat_names, means, strict=True):
                    self.writer.add_scalar(f"train/{key}", value, log.num_steps)
                self.stat_sum = None

    def run_update(self) -> torch.Tensor:
        """One SAC update (compiled unless --no-compile); eager if compilation fails."""
        if self.update is None:  # its Adam aliases the optimizers' state: load checkpoints first
            step = SACStep(self.algorithm)
            self.update = FastUpdate(self.algorithm, step, self.buffer, compile=self.args.compile)
        try:
            return self.update.run_step(self.args.batch_size)
        except CompilationFailed as err:
            print(f"--compile: compilation failed ({err}); running the same step eagerly")
            self.update = FastUpdate(self.algorithm, self.update.step, self.buffer, compile=False)
            return self.update.run_step(self.args.batch_size)

    def save_checkpoint(self) -> Path:
        payload = {
            "args": vars(self.args),
            "algorithm": self.algorithm.state_dict(),
            "alpha_optim": self.temperature_optimizer().state_dict(),
            "action_log": self.log.to_arrays(),
            "random_actions_rng": self.random_actions.bit_generator.state,
            "rng": rng_states(),
            "index": self.index,
            "tool_version": TOOL_VERSION,
        }
        with atomic_write(self.run_dir / CHECKPOINT) as tmp:
            torch.save(payload, tmp)
        # make's medium-replay reads the action log from the snapshot folder
        with atomic_write(self.snapshot_dir / ACTION_LOG) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **self.log.to_arrays())
        write_json(self.snapshot_dir / SNAPSHOT_INDEX, self.index)
        return self.run_dir / CHECKPOINT

    def save_snapshot(self) -> dict[str, Any]:
        """Evaluate the actor and keep its weights with the return it reached."""
        step, actor = self.log.num_steps, self.algorithm.policy.actor
        actor.eval()
        returns = evaluate_actor(
            actor, self.args.task, self.args.eval_episodes, seed=episode_seed(self.args.seed, step)
        )  # (evaluate_actor derives its own reset seeds from this one)
        actor.train()
        entry = {
            "step": step,
            "file": snapshot_file_name(step),
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
        }
        payload = {
            "actor": {k: v.detach().cpu().float().clone() for k, v in actor.state_dict().items()},
            "task": self.args.task,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "hidden_sizes": list(self.args.hidden_sizes),
            **entry,
        }
        with atomic_write(self.snapshot_dir / entry["file"]) as tmp:
            torch.save(payload, tmp)
        self.index["snapshots"] = [s for s in self.index["snapshots"] if s["step"] != step]
        self.index["snapshots"].append(entry)
        write_json(self.snapshot_dir / SNAPSHOT_INDEX, self.index)
        self.writer.add_scalar("eval/return_mean", entry["return_mean"], step)
        return entry


def rng_states() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserInputError(f"--resume-path {path} does not exist: give a {CHECKPOINT} of 'train'")
    try:
        # On the CPU (RNG states must stay there); load_state_dict moves the rest.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: any unpickling error
        raise UserInputError(f"{path} is not a readable checkpoint ({err})") from err


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    checkpoint = None
    if args.resume_path:
        path = Path(args.resume_path).expanduser()
        checkpoint = load_checkpoint(path)
        saved = checkpoint["args"]
        if args.task and gym_task_id(args.task) != saved["task"]:
            raise UserInputError(
                f"--task {args.task} differs from the checkpoint's {saved['task']}"
            )
        for key in RUN_SETTINGS:  # only --steps, the checkpointing and the device may change
            setattr(args, key, saved[key])
        args.run_dir = str(path.parent)
    else:
        args.task = gym_task_id(args.task or "Hopper-v5")
        args.run_dir = args.run_dir or f"log/make_d4rl/{short_name(args.task)}-sac-seed{args.seed}"
    make_directory(args.run_dir, "--run-dir")
    # one process per run directory; on an error it is held until this process ends
    lock = DirectoryLock(args.run_dir, "run directory")

    run = SacRun(args, device)
    if checkpoint is not None:
        run.resume(checkpoint)
        print(f"resumed {args.task} at env step {run.log.num_steps} from {args.resume_path}")
    stop = StopRequest()
    first_step, started_at = run.log.num_steps, time.time()
    try:
        with tqdm(total=args.steps, initial=first_step, unit="step", smoothing=0.02) as bar:
            while run.log.num_steps < args.steps and not stop.requested:
                run.step()
                step = run.log.num_steps
                # no snapshots of the untrained actor of the warm-up
                if step > args.start_steps and step % args.snapshot_every == 0:
                    entry = run.save_snapshot()
                    bar.write(f"step {step}: return {entry['return_mean']:.1f} "
                              f"± {entry['return_std']:.1f}")  # fmt: skip
                    bar.set_postfix(eval_return=f"{entry['return_mean']:.0f}")
                if step % args.checkpoint_every == 0:
                    run.save_checkpoint()
                bar.update(1)
    finally:
        stop.restore()
    checkpoint_path = run.save_checkpoint()
    run.writer.close()
    lock.release()
    speed = (run.log.num_steps - first_step) / (time.time() - started_at)
    print(f"{run.log.num_steps} env steps ({speed:.0f} SAC steps/s); checkpoint {checkpoint_path}")
    if stop.requested:
        print(f"stopped early: continue with --resume-path {checkpoint_path}")
        raise KeyboardInterrupt


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def export(args: argparse.Namespace) -> None:
    """Copy what ``make`` needs from a run into a small folder meant to be committed."""
    source = Path(args.run_dir).expanduser()
    source = source / "snapshots" if (source / "snapshots").is_dir() else source
    index = load_index(source, "--run-dir")
    check_directory(args.out, "--out")
    checkpoint = source.parent / CHECKPOINT
    if "start_steps" not in index and checkpoint.is_file():  # runs begun before it was indexed
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["args"]
        index["start_steps"] = saved["start_steps"]
    medium, expert = choose_medium_and_expert(index)
    log_path = source / ACTION_LOG
    if not log_path.is_file():
        raise UserInputError(f"{log_path} is missing: the run has not checkpointed yet")
    with np.load(log_path) as arrays:
        log = ActionLog.from_arrays(dict(arrays))
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    for entry in (medium, expert):
        with atomic_write(out / entry["file"]) as tmp:
            shutil.copyfile(source / entry["file"], tmp)
    with atomic_write(out / ACTION_LOG) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **log.to_arrays(upto=medium["step"]))
    write_json(out / SNAPSHOT_INDEX, index)
    write_json(out / CHECKSUMS, reproduction_checksums(out))
    print(
        f"exported to {out}: medium step {medium['step']} (return {medium['return_mean']:.1f}), "
        f"expert step {expert['step']} (return {expert['return_mean']:.1f}), "
        f"{medium['step']} logged actions for medium-replay"
    )


def data_checksum(data: dict[str, np.ndarray]) -> str:
    """sha256 over the D4RL arrays (keys, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for key in D4RL_KEYS:
        array = np.ascontiguousarray(data[key])
        digest.update(f"{key} {array.dtype} {array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def reproduction_checksums(snapshot_dir: Path) -> dict[str, Any]:
    """Checksums of the first transitions of each level, as ``make --seed 0 --workers 1
    --num-envs 1 --num-transitions 300`` writes them (medium-replay: the replay of the first
    300 logged actions), so a test can tell whether ``make`` still gives the same data."""
    index = load_index(snapshot_dir)
    medium, expert = choose_medium_and_expert(index)
    levels: dict[str, str] = {}
    for level, entry in (("random", None), ("medium", medium), ("expert", expert)):
        data = collect_in_parallel(
            index["task"],
            snapshot_dir,
            entry,
            seed=episode_seed(0, LEVELS.index(level)),
            num_transitions=CHECKSUM_TRANSITIONS,
            num_envs=1,
            workers=1,
        )
        levels[level] = data_checksum(data)
    with np.load(snapshot_dir / ACTION_LOG) as arrays:
        log = ActionLog.from_arrays(dict(arrays))
    log = ActionLog.from_arrays(log.to_arrays(upto=CHECKSUM_TRANSITIONS))
    levels["medium-replay"] = data_checksum(replay_action_log(index["task"], log).data)
    return {
        "what": f"sha256 of the first {CHECKSUM_TRANSITIONS} transitions of each level",
        "command": f"make --seed 0 --workers 1 --num-envs 1 --num-transitions "
        f"{CHECKSUM_TRANSITIONS} (medium-replay: the first {CHECKSUM_TRANSITIONS} logged actions)",
        "num_transitions": CHECKSUM_TRANSITIONS,
        "written_on": platform_description(),
        "levels": levels,
    }


def recorded_checksums(snapshot_dir: Path) -> list[dict[str, Any]]:
    """Every machine's checksums in checksums.json: the exporting machine's, then the others'."""
    recorded = json.loads((snapshot_dir / CHECKSUMS).read_text())
    return [recorded, *recorded.get(OTHER_MACHINES, [])]


def checksums(args: argparse.Namespace) -> None:
    """Check that ``make`` on this machine gives data that checksums.json records; with --add,
    record this machine's checksums there when they are new (a new kind of CPU)."""
    snapshot_dir = Path(args.snapshots).expanduser()
    if not (snapshot_dir / CHECKSUMS).is_file():
        raise UserInputError(f"{snapshot_dir / CHECKSUMS} is missing: run `export` first")
    here = reproduction_checksums(snapshot_dir)
    for entry in recorded_checksums(snapshot_dir):
        if entry["levels"] == here["levels"]:
            print(f"make reproduces the checksums written on {entry['written_on']}")
            return
    if not args.add:
        raise UserInputError(
            f"make on this machine ({here['written_on']}) gives data that {CHECKSUMS} does not "
            "record: if nothing in the maker changed, this is a new kind of CPU; add it with "
            "--add"
        )
    recorded = json.loads((snapshot_dir / CHECKSUMS).read_text())
    recorded.setdefault(OTHER_MACHINES, []).append(
        {"written_on": here["written_on"], "levels": here["levels"]}
    )
    write_json(snapshot_dir / CHECKSUMS, recorded)
    print(f"added the checksums of {here['written_on']} to {snapshot_dir / CHECKSUMS}")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), for speed and reproduction records."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def platform_description() -> str:
    cpu = f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()})"  # the kernels torch picks
    return f"{cpu}; mujoco {versions()['mujoco_version']}; torch {torch.__version__}"


# --------------------------------------------------------------------------------------------
# make
# --------------------------------------------------------------------------------------------


def size_tag(n: int) -> str:
    """1000000 -> 1m, 50000 -> 50k, 1234 -> 1234."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def write_dataset(path: Path, data: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
    """One D4RL-schema HDF5 file, gzip-compressed, written atomically.

    The file is built in memory (it is smaller than ``data``) and then written in one go: HDF5
    writing gzip chunks to a full disk crashes the process, a plain write reports it."""
    memory = io.BytesIO()
    with h5py.File(memory, "w") as f:
        for key in D4RL_KEYS:
            f.create_dataset(
                key, data=data[key], compression="gzip", compression_opts=4, shuffle=True
            )
        group = f.create_group("metadata")
        for key, value in metadata.items():
            group.attrs[key] = value
    with atomic_write(path) as tmp:
        tmp.write_bytes(memory.getbuffer())


def versions() -> dict[str, str]:
    import mujoco
    import tianshou

    return {
        "tool": f"examples/offline/make_d4rl_dataset.py {TOOL_VERSION}",
        "gymnasium_version": gym.__version__,
        "mujoco_version": mujoco.__version__,
        "tianshou_version": tianshou.__version__,
    }


def split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def collect_worker(job: dict[str, Any]) -> dict[str, np.ndarray]:
    """One worker's share of a dataset (runs in its own process when ``--workers`` > 1).

    The policy is described by ``job`` (a snapshot file, or None for uniform random
    actions) rather than passed as an object, so the job pickles cheaply.
    """
    torch.set_num_threads(1)  # the workers already use every core
    seed = job["seed"]
    if job["snapshot"] is None:
        rng = np.random.default_rng(seed)
        act_dim = job["act_dim"]

        def choose_actions(obs: np.ndarray) -> np.ndarray:
            return rng.uniform(-1.0, 1.0, (len(obs), act_dim)).astype(np.float32)

    else:
        actor = load_snapshot_actor(Path(job["snapshot_dir"]), job["snapshot"])
        generator = torch.Generator().manual_seed(seed)

        def choose_actions(obs: np.ndarray) -> np.ndarray:
            return actor_actions(actor, obs, generator)

    return collect(
        job["task_id"],
        choose_actions,
        seed=seed,
        num_envs=job["num_envs"],
        num_transitions=job["num_transitions"],
        progress=job["progress"],
    )


def collect_in_parallel(
    task_id: str,
    snapshot_dir: Path,
    snapshot: dict[str, Any] | None,
    *,
    seed: int,
    num_transitions: int,
    num_envs: int,
    workers: int,
) -> dict[str, np.ndarray]:
    """Split ``num_transitions`` over ``workers`` processes (each with ``num_envs`` envs and
    its own seed) and join their data in worker order. Each share ends with a cut episode."""
    workers = max(1, min(workers, num_transitions // EPISODE_STEPS or 1))
    jobs = [
        {
            "task_id": task_id,
            "snapshot_dir": str(snapshot_dir),
            "snapshot": snapshot,
            "act_dim": int(np.prod(make_env(task_id).action_space.shape)),
            "seed": episode_seed(seed, worker),
            "num_envs": num_envs,
            "num_transitions": share,
            "progress": workers == 1,
        }
        for worker, share in enumerate(split_evenly(num_transitions, workers))
    ]
    if workers == 1:
        parts = [collect_worker(jobs[0])]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # "spawn": a forked child would inherit torch's thread pool and could hang in it.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            parts = list(tqdm(pool.map(collect_worker, jobs), total=workers, unit="worker"))
    return {key: np.concatenate([part[key] for part in parts]) for key in D4RL_KEYS}


def make(args: argparse.Namespace) -> None:
    snapshot_dir = Path(args.snapshots).expanduser()
    index = load_index(snapshot_dir)
    check_directory(args.out, "--out")
    task_id = index["task"]
    if args.task and gym_task_id(args.task) != task_id:
        raise UserInputError(f"--task {args.task} differs from the snapshots' task {task_id}")
    medium, expert = choose_medium_and_expert(index)
    for entry in {"medium": medium, "expert": expert}.values():
        load_snapshot_actor(snapshot_dir, entry)  # fail now, not after minutes of collecting
    common_metadata = {
        "env_id": task_id,
        "seed": args.seed,
        "workers": args.workers,
        "envs_per_worker": args.num_envs,
        "expert_return": expert["return_mean"],
        "snapshot_index": json.dumps(index["snapshots"]),
        "not_official_d4rl": "made by this tool; not one of D4RL's published datasets",
        "command": " ".join(["make_d4rl_dataset.py", *sys.argv[1:]]),
        **versions(),
    }
    sampled = "actions sampled from the SAC policy's tanh-Gaussian, as during training"
    made: dict[str, dict[str, np.ndarray]] = {}  # medium/expert data, reused by medium-expert

    def policy_data(level: str, snapshot: dict[str, Any] | None) -> dict[str, np.ndarray]:
        if level not in made:
            # Each level has its own seed, so medium and expert never share resets.
            seed = episode_seed(args.seed, LEVELS.index(level))
            made[level] = timed(
                level,
                lambda: collect_in_parallel(
                    task_id,
                    snapshot_dir,
                    snapshot,
                    seed=seed,
                    num_transitions=args.num_transitions,
                    num_envs=args.num_envs,
                    workers=args.workers,
                ),
            )
        return made[level]

    def describe(entry: dict[str, Any]) -> dict[str, Any]:
        return {
            "policy": f"SAC snapshot {entry['file']} (env step {entry['step']})",
            "snapshot": entry["file"],
            "snapshot_step": entry["step"],
            "snapshot_return": entry["return_mean"],
            "noise": sampled,
        }

    for level in args.levels:
        if level == "random":
            data = policy_data("random", None)
            meta = {"policy": "uniform random actions in [-1, 1]", "noise": "uniform random"}
        elif level in ("medium", "expert"):
            entry = medium if level == "medium" else expert
            data, meta = policy_data(level, entry), describe(entry)
        elif level == "medium-expert":
            parts = [policy_data("medium", medium), policy_data("expert", expert)]
            data = {key: np.concatenate([part[key] for part in parts]) for key in D4RL_KEYS}
            meta = {
                "policy": "the medium dataset followed by the expert dataset",
                "snapshot": f"{medium['file']} {expert['file']}",
                "snapshot_step": np.array([medium["step"], expert["step"]]),
                "snapshot_return": np.array([medium["return_mean"], expert["return_mean"]]),
                "noise": sampled,
            }
        else:  # medium-replay
            data, meta = medium_replay(snapshot_dir, task_id, medium)
        returns = episode_returns(data)
        metadata = {
            **common_metadata,
            "level": level,
            **meta,
            "num_transitions": len(data["rewards"]),
            "num_episodes": len(returns),
            "return_mean": float(returns.mean()),
        }
        size = size_tag(len(data["rewards"]))
        path = Path(args.out).expanduser() / f"{short_name(task_id)}-made-{level}-{size}.hdf5"
        write_dataset(path, data, metadata)
        print(
            f"{path}: {len(data['rewards'])} transitions, {len(returns)} episodes, "
            f"mean return {returns.mean():.1f} ({path.stat().st_size / 2**20:.1f} MiB)"
        )


def medium_replay(snapshot_dir: Path, task_id: str, medium: dict[str, Any]):
    """SAC's replay buffer up to the medium snapshot, rebuilt from the action log."""
    log_path = snapshot_dir / ACTION_LOG
    if not log_path.is_file():
        raise UserInputError(f"{log_path} is missing: medium-replay needs the run's action log")
    try:
        with np.load(log_path) as arrays:
            log = ActionLog.from_arrays(dict(arrays))
    except (OSError, ValueError, KeyError) as err:
        raise UserInputError(f"{log_path} is not an action log of this tool ({err})") from err
    if log.num_steps < medium["step"]:
        raise UserInputError(
            f"{log_path} holds {log.num_steps} steps but the medium snapshot is at step "
            f"{medium['step']}: export again from a later checkpoint"
        )
    log = ActionLog.from_arrays(log.to_arrays(upto=medium["step"]))
    replay = timed("medium-replay", lambda: replay_action_log(task_id, log, progress=True))
    data, error = replay.data, replay.return_error
    if error > 1e-6:
        print(
            f"warning: the replay differs from the training run (episode return error "
            f"{error:.3g}); the data is valid physics but not SAC's buffer bit for bit"
        )
    meta = {
        "policy": f"SAC's replay buffer up to env step {medium['step']} (the medium snapshot)",
        "snapshot": medium["file"],
        "snapshot_step": medium["step"],
        "snapshot_return": medium["return_mean"],
        "noise": "uniform random actions for the first steps, then " + "sampled SAC actions",
        "replay_return_error": error,
    }
    return data, meta


def timed(what: str, make_data: Callable[[], Any]) -> Any:
    """Run ``make_data`` and print its speed in transitions per second."""
    started = time.time()
    result = make_data()
    data = result.data if isinstance(result, Replay) else result
    elapsed = time.time() - started
    size = len(data["rewards"])
    print(f"{what}: {size} transitions in {elapsed:.1f} s ({size / elapsed:.0f} transitions/s)")
    return result


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)

    t = modes.add_parser("train", help="train SAC online and keep policy snapshots")
    t.add_argument(
        "--task",
        default=None,
        help="Hopper-v5, HalfCheetah-v5, Walker2d-v5, Ant-v5 "
        "or a D4RL name such as hopper (default Hopper-v5)",
    )
    t.add_argument("--steps", type=positive_int, default=300_000, help="total env steps")
    t.add_argument("--run-dir", default=None, help="default log/make_d4rl/<env>-sac-seed<seed>")
    t.add_argument("--resume-path", default=None, help=f"a {CHECKPOINT} to continue from")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--hidden-sizes", type=int, nargs="+", default=[256, 256])
    t.add_argument("--actor-lr", type=float, default=1e-3)
    t.add_argument("--critic-lr", type=float, default=1e-3)
    t.add_argument("--alpha-lr", type=float, default=3e-4)
    t.add_argument("--tau", type=float, default=0.005)
    t.add_argument("--gamma", type=float, default=0.99)
    t.add_argument("--batch-size", type=positive_int, default=256)
    t.add_argument("--buffer-size", type=positive_int, default=1_000_000)
    t.add_argument("--start-steps", type=int, default=5000, help="uniform random actions first")
    t.add_argument("--updates-per-step", type=positive_int, default=1)
    t.add_argument("--snapshot-every", type=positive_int, default=10_000)
    t.add_argument("--checkpoint-every", type=positive_int, default=10_000)
    t.add_argument("--eval-episodes", type=positive_int, default=10)
    t.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    check_after_parsing(t)  # --device, --seed, --hidden-sizes: one line for a bad value
    t.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    t.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compile the SAC update (torch.compile; a minute on a CPU, then faster updates)",
    )

    e = modes.add_parser("export", help="copy the medium/expert snapshots and action log to commit")
    e.add_argument("--run-dir", required=True, help="a training run's folder (or its snapshots/)")
    e.add_argument("--out", required=True, help="e.g. examples/offline/snapshots/hopper")

    m = modes.add_parser("make", help="write D4RL-schema datasets from snapshots")
    m.add_argument("--snapshots", required=True, help="a folder with index.json (train or export)")
    m.add_argument("--task", default=None, help="optional check that the snapshots are for it")
    m.add_argument("--levels", nargs="+", choices=LEVELS, default=list(LEVELS))
    m.add_argument("--num-transitions", type=positive_int, default=1_000_000)
    m.add_argument("--num-envs", type=positive_int, default=8, help="environments per worker")
    m.add_argument(
        "--workers",
        type=positive_int,
        default=min(8, os.cpu_count() or 1),
        help="processes collecting in parallel (the data depends on this number too)",
    )
    m.add_argument("--seed", type=int, default=0)
    check_after_parsing(m)
    m.add_argument(
        "--out", default=DEFAULT_OUT_DIR, help=f"output folder (default {DEFAULT_OUT_DIR})"
    )
    c = modes.add_parser("checksums", help="check (or --add) this machine's make checksums")
    c.add_argument("--snapshots", required=True, help="an exported folder with checksums.json")
    c.add_argument("--add", action="store_true", help="record them if this CPU is new")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    {"train": train, "export": export, "make": make, "checksums": checksums}[args.mode](args)
