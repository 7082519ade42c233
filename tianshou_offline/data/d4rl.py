"""D4RL-format offline data for Tianshou: environments, datasets, scores.

D4RL (https://github.com/Farama-Foundation/D4RL) is no longer maintained and needs the old
``gym`` and ``mujoco-py``. This module keeps its data format and numbers and drops the package:

* ``make_env`` / ``gym_task_id``: D4RL's MuJoCo tasks ("HalfCheetah-v2", ...) as gymnasium's
  MuJoCo environments with exactly the observation and action sizes of D4RL's data;
* ``load_d4rl_buffer``: a D4RL dataset name, a D4RL-schema ``.hdf5`` file or a Minari dataset
  as a Tianshou ``ReplayBuffer`` holding the transitions that ``d4rl.qlearning_dataset`` makes;
* ``dataset_path`` / ``download_d4rl``: D4RL's download cache (``$D4RL_DATASET_DIR``);
* ``normalized_score``: D4RL's score, 0 for a random policy and 100 for D4RL's expert;
* ``normalize_obs`` and ``monte_carlo_returns``: dataset statistics some algorithms need.

Every problem with the user's input raises ``UserInputError`` with one line that says what to do.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium
import h5py
import numpy as np
from numba import njit

from tianshou_offline.errors import UserInputError
from tianshou_offline.files import check_directory, download

if TYPE_CHECKING:  # tianshou (torch) takes seconds to import; only building the buffer needs it
    from tianshou.data import ReplayBuffer
    from tianshou.utils import RunningMeanStd

MAKE_DATASET_HINT = "python examples/offline/make_d4rl_dataset.py --help"

# ----------------------------------------------------------------------------------------------
# Environments
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _D4RLEnv:
    """One of D4RL's four MuJoCo locomotion environments and how gymnasium reproduces it."""

    gym_name: str  # gymnasium's name without the version, e.g. "HalfCheetah"
    obs_dim: int  # observation size in D4RL's data
    act_dim: int
    random_score: float  # D4RL's reference returns (d4rl/infos.py REF_MIN_SCORE, REF_MAX_SCORE)
    expert_score: float
    # keyword arguments for gymnasium's -v5 environment that make it behave like D4RL's
    v5_kwargs: dict[str, Any] = field(default_factory=dict)
    zero_dims: int = 0  # trailing observation dims that are always 0 in D4RL's data
    note: str = ""  # what differs from plain -v5, for the line make_env prints


# D4RL's data came from gym's v2 environments on mujoco-py (d4rl/gym_mujoco/gym_envs.py). One
# difference remains: on the step where Hopper, Walker2d or Ant falls, v5 gives no survival bonus
# (v2 gave 1), so an episode that ends by falling scores 1 less.
_D4RL_ENVS = {
    "halfcheetah": _D4RLEnv("HalfCheetah", 17, 6, -280.178953, 12135.0),
    "hopper": _D4RLEnv("Hopper", 11, 3, -20.272305, 3234.3),
    "walker2d": _D4RLEnv(
        "Walker2d",
        17,
        6,
        1.629008,
        4592.3,
        # v5's model gives both feet friction 1.9; gym's v2 model, which gymnasium still ships as
        # walker2d.xml, has 0.9 on the right foot like the environment that made D4RL's data.
        v5_kwargs={"xml_file": "walker2d.xml"},
        note="v2 foot friction from walker2d.xml",
    ),
    "ant": _D4RLEnv(
        "Ant",
        111,
        8,
        -325.6,
        3879.7,
        # D4RL's Ant observations are 27 state dims + 84 contact-force dims, and mujoco-py 2
        # reported those forces as 0 (D4RL issue #143: every ant dataset has zeros there), so
        # the contact cost in its reward was 0 too. Modern MuJoCo computes real forces, which a
        # policy trained on zeros has never seen: leave them out and append 84 zeros.
        v5_kwargs={"include_cfrc_ext_in_observation": False, "contact_cost_weight": 0.0},
        zero_dims=84,
        note="27 state dims + 84 contact-force dims that are 0, as in D4RL's data",
    ),
}
_LEGACY_VERSIONS = ("v0", "v1", "v2", "v3")  # the gym versions D4RL users write


def _d4rl_env_key(name: str) -> str | None:
    """The key of D4RL's environment that ``name`` starts with, e.g. "HalfCheetah-v5",
    "halfcheetah" and "halfcheetah-medium-v2" -> "halfcheetah"."""
    key = name.lower().split("-")[0]
    return key if key in _D4RL_ENVS else None


def _d4rl_env_of_task(task: str) -> _D4RLEnv | None:
    """D4RL's environment if ``task`` names one ("Hopper-v3", "hopper-medium-v2"), else None."""
    key = _d4rl_env_key(task)
    if key is None:
        return None
    parts = task.lower().split("-")
    is_gym_name = len(parts) == 2 and parts[1] in _LEGACY_VERSIONS
    is_dataset_name = task.lower() in _D4RL_DATASET_FILES
    return _D4RL_ENVS[key] if is_gym_name or is_dataset_name else None


def _known_tasks() -> list[str]:
    return [f"{env.gym_name}-{version}" for env in _D4RL_ENVS.values() for version in ("v2", "v3")]


def gym_task_id(task: str) -> str:
    """The gymnasium id that stands in for ``task``.

    D4RL's "Hopper-v2"/"-v3" (or a D4RL dataset name such as "hopper-medium-v2") -> "Hopper-v5"
    ("-v4" on a gymnasium without v5); an id gymnasium has registered is returned unchanged.
    """
    d4rl_env = _d4rl_env_of_task(task)
    if d4rl_env is not None:
        for version in ("v5", "v4"):
            if f"{d4rl_env.gym_name}-{version}" in gymnasium.registry:
                return f"{d4rl_env.gym_name}-{version}"
        raise UserInputError(
            f"gymnasium {gymnasium.__version__} has no {d4rl_env.gym_name}-v5 or -v4 "
            "environment; install gymnasium[mujoco] >= 1.0"
        )
    if task in gymnasium.registry:
        return task
    candidates = list(dict.fromkeys(_known_tasks() + list(gymnasium.registry)))
    close = difflib.get_close_matches(task, candidates, n=3)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise UserInputError(
        f"unknown task {task!r}: use one of D4RL's tasks {', '.join(_known_tasks())} "
        f"or an id gymnasium has registered.{hint}"
    )


class _AppendZeros(gymnasium.ObservationWrapper):
    """Append constant zeros to each observation (dims that are always 0 in D4RL's data)."""

    def __init__(self, env: gymnasium.Env, n_zeros: int) -> None:
        super().__init__(env)
        inner = env.observation_space
        assert isinstance(inner, gymnasium.spaces.Box) and len(inner.shape) == 1
        self._zeros = np.zeros(n_zeros, dtype=inner.dtype)
        self.observation_space = gymnasium.spaces.Box(
            low=np.concatenate([inner.low, self._zeros]),
            high=np.concatenate([inner.high, self._zeros]),
            dtype=inner.dtype,
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.concatenate([observation, self._zeros])


def _size(space: gymnasium.Space) -> str:
    if isinstance(space, gymnasium.spaces.Discrete):
        return f"{space.n}-valued discrete"
    return "x".join(str(d) for d in space.shape) + "-dim"


def make_env(task: str, seed: int | None = None, *, quiet: bool = False) -> gymnasium.Env:
    """The gymnasium environment for ``task`` (see ``gym_task_id``).

    For D4RL's tasks its observation and action spaces have D4RL's sizes. Prints one line saying
    what stands in for what (unless ``quiet``). ``seed`` seeds the first reset and the action space.
    """
    gym_id = gym_task_id(task)
    d4rl_env = _d4rl_env_of_task(task)
    if d4rl_env is None:
        env = gymnasium.make(gym_id)
        how = "used as is:"
    else:
        # -v4 (older gymnasium) has neither these arguments nor contact forces by default
        env = gymnasium.make(gym_id, **(d4rl_env.v5_kwargs if gym_id.endswith("-v5") else {}))
        if d4rl_env.zero_dims:
            env = _AppendZeros(env, d4rl_env.zero_dims)
        assert env.observation_space.shape == (d4rl_env.obs_dim,), env.observation_space
        assert env.action_space.shape == (d4rl_env.act_dim,), env.action_space
        how = "same"
    if not quiet:
        spaces = f"{_size(env.observation_space)} observations, {_size(env.action_space)} actions"
        note = f"; {d4rl_env.note}" if d4rl_env is not None and d4rl_env.note else ""
        print(f"task {task} -> gymnasium {gym_id} ({how} {spaces}{note})", flush=True)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


# ----------------------------------------------------------------------------------------------
# D4RL's dataset names, download cache and URLs (d4rl/infos.py, d4rl/offline_env.py)
# ----------------------------------------------------------------------------------------------

D4RL_URL_BASE = "http://rail.eecs.berkeley.edu/datasets/offline_rl"  # env D4RL_URL_BASE overrides


def _d4rl_dataset_files() -> dict[str, str]:
    """D4RL's MuJoCo dataset names -> the file's path below D4RL's URL base."""
    files = {}
    for env in _D4RL_ENVS:
        # v0 files have short names; medium-replay was called "mixed" ("walker_mixed" for walker2d)
        v0_stems = {
            "random": f"{env}_random",
            "medium": f"{env}_medium",
            "expert": f"{env}_expert",
            "medium-replay": f"{'walker' if env == 'walker2d' else env}_mixed",
            "medium-expert": f"{env}_medium_expert",
        }
        for kind, stem in v0_stems.items():
            files[f"{env}-{kind}-v0"] = f"gym_mujoco/{stem}.hdf5"
        for version in ("v1", "v2"):
            for kind in ("random", "medium", "expert", "medium-replay", "medium-expert"):
                stem = f"{env}_{kind.replace('-', '_')}-{version}"
                files[f"{env}-{kind}-{version}"] = f"gym_mujoco_{version}/{stem}.hdf5"
            stem = f"{env}_full_replay-{version}"
            files[f"{env}-full-replay-{version}"] = f"gym_mujoco_{version}/{stem}.hdf5"
    files["ant-random-expert-v0"] = "gym_mujoco/ant_random_expert.hdf5"
    return files


_D4RL_DATASET_FILES = _d4rl_dataset_files()


def _dataset_file(name: str) -> str:
    try:
        return _D4RL_DATASET_FILES[name.lower()]
    except KeyError:
        close = difflib.get_close_matches(name.lower(), list(_D4RL_DATASET_FILES), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise UserInputError(
            f"unknown D4RL dataset {name!r}: {hint}D4RL's MuJoCo datasets are named "
            "<halfcheetah|hopper|walker2d|ant>-<random|medium|expert|medium-replay|medium-expert"
            "|full-replay>-<v0|v1|v2>; a path to an .hdf5 file or minari:<dataset id> also works"
        ) from None


def dataset_path(name: str) -> Path:
    """Where D4RL keeps dataset ``name``: $D4RL_DATASET_DIR (default ~/.d4rl/datasets)/<file>."""
    cache_dir = Path(os.environ.get("D4RL_DATASET_DIR", "~/.d4rl/datasets")).expanduser()
    return cache_dir / Path(_dataset_file(name)).name


def _dataset_url(name: str) -> str:
    base = os.environ.get("D4RL_URL_BASE", D4RL_URL_BASE).rstrip("/")
    return f"{base}/{_dataset_file(name)}"


def download_d4rl(name: str) -> Path:
    """The cached file of D4RL dataset ``name``, downloaded first if it is not there yet.

    An interrupted download leaves no file behind (the next call starts over).
    """
    dest = dataset_path(name)
    if dest.is_file():
        return dest
    check_directory(dest.parent, "$D4RL_DATASET_DIR" if "D4RL_DATASET_DIR" in os.environ else None)
    url = _dataset_url(name)
    print(f"downloading D4RL dataset {name} from {url} to {dest}", flush=True)
    offline = (
        f"Without network, download {url} elsewhere and copy it to {dest}, or make a "
        f"D4RL-format dataset here ({MAKE_DATASET_HINT}) and pass its .hdf5 path instead."
    )
    return download(url, dest, resume=False, what_to_do_offline=offline)


# ----------------------------------------------------------------------------------------------
# Loading: file or Minari dataset -> checked arrays -> transitions -> ReplayBuffer
# ----------------------------------------------------------------------------------------------

_REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
_OPTIONAL_KEYS = ("timeouts", "next_observations")
_D4RL_MAX_EPISODE_STEPS = 1000  # every D4RL MuJoCo task; used only for files without timeouts


def load_d4rl_buffer(spec: str, env: gymnasium.Env | None = None) -> ReplayBuffer:
    """The transitions of a D4RL-format dataset in a full ReplayBuffer, in the file's order.

    ``spec`` is a D4RL dataset name ("hopper-medium-replay-v2", downloaded once into
    ``dataset_path(name)``), a path to an .hdf5 file with D4RL's keys (observations, actions,
    rewards, terminals; optionally timeouts, next_observations), or "minari:<dataset id>" from the
    local Minari store ($MINARI_DATASETS_PATH).

    Transitions follow ``d4rl.qlearning_dataset``: only terminals set ``terminated``; a timeout is
    not a terminal. Without next_observations in the file, a row's next observation is the next
    row's, so the last row of each episode (a timeout) and the file's last row are dropped, like
    qlearning_dataset does (a terminal row keeps the next row as obs_next, which the terminal
    flag masks). With next_observations every row is kept, and an episode also ends where the next
    row does not start from this row's next observation. The last kept transition of an episode
    that did not terminate gets ``truncated=True``, so ``done`` marks every episode end.
    With ``env``, the observation and action sizes must match it.
    """
    if spec.startswith("minari:"):
        source = spec
        columns = _read_minari(spec.removeprefix("minari:"))
        _check_finite(columns, source, row_name="transition")
    else:
        path = _hdf5_path(spec)
        source = str(path)
        rows = _read_d4rl_file(path)
        _check_rows(rows, source)
        max_steps = _D4RL_MAX_EPISODE_STEPS
        if env is not None and env.spec is not None and env.spec.max_episode_steps:
            max_steps = env.spec.max_episode_steps
        columns = _qlearning_transitions(rows, max_steps)
    if env is not None:
        _check_sizes(columns, env, source)
        _check_action_bounds(columns["act"], env, source)
    if len(columns["obs"]) == 0:
        raise UserInputError(f"{source} has no complete transition (each episode has one row)")
    return _to_buffer(columns)


def _hdf5_path(spec: str) -> Path:
    """The file ``spec`` names: a path as given, or a D4RL name's cache file (downloaded once)."""
    looks_like_path = spec.endswith((".hdf5", ".h5")) or "/" in spec or os.sep in spec
    if not looks_like_path and not Path(spec).exists():
        return download_d4rl(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        raise UserInputError(
            f"dataset {path} is a directory; give a D4RL-format .hdf5 file (e.g. one in it)"
        )
    if not path.is_file():
        cache_dir = dataset_path("halfcheetah-expert-v2").parent
        raise UserInputError(
            f"dataset file {path} not found: give an existing .hdf5 file, a D4RL dataset name "
            f"such as halfcheetah-expert-v2 (downloaded into {cache_dir}), or make a dataset "
            f"with {MAKE_DATASET_HINT}"
        )
    return path


def _read_d4rl_file(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a D4RL-schema HDF5 file (only the keys used here)."""
    try:
        with h5py.File(path, "r") as file:
            for key in _REQUIRED_KEYS:
                if not isinstance(file.get(key), h5py.Dataset):
                    raise UserInputError(
                        f"{path} has no {key!r} array; a D4RL-format file needs "
                        f"{', '.join(_REQUIRED_KEYS)} (and may have {', '.join(_OPTIONAL_KEYS)})"
                    )
            present = [k for k in _OPTIONAL_KEYS if isinstance(file.get(k), h5py.Dataset)]
            return {key: file[key][()] for key in [*_REQUIRED_KEYS, *present]}
    except OSError as err:  # not HDF5, truncated, or damaged
        raise UserInputError(
            f"cannot read {path} as an HDF5 file ({err}); it is damaged or incomplete: "
            "delete it and download or make it again"
        ) from err


def _check_rows(rows: dict[str, np.ndarray], source: str) -> None:
    """Shapes and values of a D4RL file's arrays; flattens (N, 1) rewards and flags like D4RL."""
    for key, array in rows.items():
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise UserInputError(
                f"{key!r} in {source} holds {array.dtype} values, not numbers; fix or remake "
                f"the dataset"
            )
    for key in ("rewards", "terminals", "timeouts"):
        if key in rows and rows[key].ndim == 2 and rows[key].shape[1] == 1:
            rows[key] = rows[key][:, 0]
    expected_ndim = {"observations": 2, "next_observations": 2, "actions": 2}
    for key, array in rows.items():
        ndim = expected_ndim.get(key, 1)
        if array.ndim != ndim:
            shape = "(rows, size)" if ndim == 2 else "(rows,)"
            raise UserInputError(f"{key!r} in {source} has shape {array.shape}; expected {shape}")
    lengths = {key: len(array) for key, array in rows.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{key} {n}" for key, n in lengths.items())
        raise UserInputError(f"the arrays in {source} have different lengths: {listed} rows")
    if len(rows["observations"]) == 0:
        raise UserInputError(f"{source} has no rows")
    next_shape = rows["next_observations"].shape if "next_observations" in rows else None
    if next_shape is not None and next_shape != rows["observations"].shape:
        raise UserInputError(
            f"next_observations in {source} have shape {rows['next_observations'].shape} but "
            f"observations have {rows['observations'].shape}"
        )
    _check_finite(rows, source, row_name="row")


def _check_finite(arrays: dict[str, np.ndarray], source: str, row_name: str) -> None:
    for key, array in arrays.items():
        if not np.issubdtype(array.dtype, np.floating):
            continue
        bad = ~np.isfinite(array).reshape(len(array), -1).all(axis=1)
        if bad.any():
            raise UserInputError(
                f"{key!r} in {source} has NaN or infinite values, first in {row_name} "
                f"{int(np.argmax(bad))}; fix or remake the dataset"
            )


def _check_sizes(columns: dict[str, np.ndarray], env: gymnasium.Env, source: str) -> None:
    name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    for key, what, space in (
        ("obs", "observations", env.observation_space),
        ("act", "actions", env.action_space),
    ):
        data_shape = columns[key].shape[1:]
        env_shape = space.shape if not isinstance(space, gymnasium.spaces.Discrete) else ()
        if data_shape != env_shape:
            raise UserInputError(
                f"{what} in {source} have shape {data_shape} but environment {name} has "
                f"{env_shape}: pick the task that matches the dataset"
            )


# how far beyond the action space's bounds data may lie and still count as inside (rounding)
_ACTION_BOUND_TOLERANCE = 1e-4


def _check_action_bounds(actions: np.ndarray, env: gymnasium.Env, source: str) -> None:
    """Refuse actions the environment could never take: the policy would learn to output them
    and the environment clip them, silently. Within a rounding tolerance they are clipped."""
    space = env.action_space
    if not isinstance(space, gymnasium.spaces.Box) or len(actions) == 0:
        return
    low, high = space.low.astype(np.float32), space.high.astype(np.float32)
    tolerance = _ACTION_BOUND_TOLERANCE * np.maximum(1.0, high - low)
    outside = ((actions < low - tolerance) | (actions > high + tolerance)).any(axis=1)
    if outside.any():
        first = int(np.argmax(outside))
        raise UserInputError(
            f"actions in {source} lie outside the action bounds [{low.min():g}, {high.max():g}] "
            f"of {env.spec.id if env.spec else 'the environment'} in {int(outside.sum())} of "
            f"{len(actions)} transitions (first {first}, values {actions.min():g} to "
            f"{actions.max():g}); pick the task that matches the dataset, or rescale its actions"
        )
    np.clip(actions, low, high, out=actions)


def _step_limit_ends(terminals: np.ndarray, max_steps: int) -> np.ndarray:
    """Rows that qlearning_dataset takes for an episode's time-limit step in a file without
    timeouts, reproducing its step counter exactly (so the same rows are dropped).

    The counter starts at 0, goes back to 0 after a time-limit row, and to 1 after a terminal
    row (a quirk of D4RL's loop); a row is a time-limit row when the counter is max_steps - 1.
    Between terminals the counter is (start + position) % max_steps, so only the episodes that
    end in a terminal need a Python loop.
    """
    n = len(terminals)
    ends = np.zeros(n, dtype=bool)
    start, counter_at_start = 0, 0
    for stop in [*np.flatnonzero(terminals[:-1]), n - 1]:
        counter = (counter_at_start + np.arange(stop - start + 1)) % max_steps
        ends[start : stop + 1] = counter == max_steps - 1
        counter_at_start = 0 if ends[stop] else 1
        start = stop + 1
    return ends


def _qlearning_transitions(rows: dict[str, np.ndarray], max_steps: int) -> dict[str, np.ndarray]:
    """D4RL rows -> (obs, act, rew, terminated, truncated, obs_next) as qlearning_dataset does."""
    observations = rows["observations"].astype(np.float32, copy=False)
    terminals = rows["terminals"].astype(bool)
    n = len(terminals)
    if "next_observations" in rows:
        next_observations = rows["next_observations"].astype(np.float32, copy=False)
        # Every row is a transition. An episode ends at a terminal, at a timeout, at the end of
        # the file, or where the next row does not continue from this row's next observation.
        episode_ends = np.ones(n, dtype=bool)
        episode_ends[:-1] = (next_observations[:-1] != observations[1:]).any(axis=1)
        if "timeouts" in rows:
            episode_ends |= rows["timeouts"].astype(bool)
        keep = slice(None)
        obs, obs_next = observations, next_observations
        truncated = episode_ends & ~terminals
    else:
        # A row's next observation is the next row's observation, so rows without a next row in
        # their episode are dropped: time-limit rows and the file's last row.
        if "timeouts" in rows:
            dropped = rows["timeouts"].astype(bool)
        else:
            dropped = _step_limit_ends(terminals, max_steps)
        dropped[-1] = True
        keep = np.flatnonzero(~dropped)
        obs, obs_next = observations[keep], observations[keep + 1]
        # the last kept row before a dropped row ends its episode
        truncated = dropped[keep + 1] & ~terminals[keep]
    return {
        "obs": obs,
        "act": rows["actions"][keep].astype(np.float32, copy=False),
        "rew": rows["rewards"][keep].astype(np.float32, copy=False),
        "terminated": terminals[keep],
        "truncated": truncated,
        "obs_next": obs_next,
    }


def _read_minari(dataset_id: str) -> dict[str, np.ndarray]:
    """A Minari dataset's episodes as transitions (Minari stores T+1 observations per episode)."""
    import minari  # slow to import; only needed here
    from minari.storage.datasets_root_dir import get_dataset_path

    try:
        dataset = minari.load_dataset(dataset_id)
    except FileNotFoundError:
        store = get_dataset_path()
        local = list(minari.list_local_datasets())
        close = difflib.get_close_matches(dataset_id, local, n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise UserInputError(
            f"Minari dataset {dataset_id!r} is not in the local store {store} "
            f"(MINARI_DATASETS_PATH); run `minari download {dataset_id}` on a machine with "
            f"network and copy {store / dataset_id} there.{hint}"
        ) from None
    except (ValueError, KeyError, OSError) as err:
        raise UserInputError(f"cannot read Minari dataset {dataset_id!r}: {err}") from err
    for what, space in (
        ("observation", dataset.observation_space),
        ("action", dataset.action_space),
    ):
        if not isinstance(space, gymnasium.spaces.Box):
            raise UserInputError(
                f"Minari dataset {dataset_id!r} has a {type(space).__name__} {what} space; "
                "only Box (array) spaces are supported"
            )
    keys = ("obs", "act", "rew", "terminated", "truncated", "obs_next")
    pieces: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    for episode in dataset.iterate_episodes():
        terminated = np.asarray(episode.terminations, dtype=bool)
        truncated = np.asarray(episode.truncations, dtype=bool)
        if len(truncated) and not (terminated[-1] or truncated[-1]):
            truncated[-1] = True  # recording stopped mid-episode: still an episode end
        pieces["obs"].append(episode.observations[:-1])
        pieces["obs_next"].append(episode.observations[1:])
        pieces["act"].append(episode.actions)
        pieces["rew"].append(episode.rewards)
        pieces["terminated"].append(terminated)
        pieces["truncated"].append(truncated)
    if not pieces["obs"]:
        raise UserInputError(f"Minari dataset {dataset_id!r} has no episodes")
    columns = {key: np.concatenate(parts) for key, parts in pieces.items()}
    for key in ("obs", "obs_next", "act", "rew"):
        columns[key] = columns[key].astype(np.float32, copy=False)
    return columns


def _to_buffer(columns: dict[str, np.ndarray]) -> ReplayBuffer:
    from tianshou.data import ReplayBuffer

    buffer = ReplayBuffer.from_data(
        obs=columns["obs"],
        act=columns["act"],
        rew=columns["rew"],
        terminated=columns["terminated"],
        truncated=columns["truncated"],
        done=columns["terminated"] | columns["truncated"],
        obs_next=columns["obs_next"],
    )
    # from_data fills the buffer to capacity (size and next write position are right) but leaves
    # last_index at 0, which prev()/next() (used by n-step returns) take for the newest row.
    buffer.last_index = np.array([len(buffer) - 1])
    return buffer


# ----------------------------------------------------------------------------------------------
# Scores and dataset statistics
# ----------------------------------------------------------------------------------------------


def normalized_score(task: str, returns: np.ndarray | float) -> np.ndarray | float | None:
    """D4RL's normalized score 100 * (return - random) / (expert - random) for the MuJoCo
    environment that ``task`` names ("HalfCheetah-v2", "HalfCheetah-v5", "halfcheetah",
    "halfcheetah-medium-v2", ...); None for environments D4RL has no reference returns for."""
    key = _d4rl_env_key(task)
    if key is None:
        return None
    env = _D4RL_ENVS[key]
    scores = 100.0 * (np.asarray(returns, dtype=np.float64) - env.random_score)
    scores /= env.expert_score - env.random_score
    return float(scores) if np.ndim(returns) == 0 else scores


def normalize_obs(buffer: ReplayBuffer) -> tuple[ReplayBuffer, RunningMeanStd]:
    """Normalize obs and obs_next in ``buffer`` (in place) with the mean and variance of its
    observations, exactly as ``RunningMeanStd.norm`` does (so also clipped to +-clip_max).

    Returns the buffer and the statistics, for ``VectorEnvNormObs(update_obs_rms=False)
    .set_obs_rms(...)`` at evaluation and for checkpoints.
    """
    from tianshou.utils import RunningMeanStd

    obs = buffer.obs
    obs_rms = RunningMeanStd()
    # float64 statistics of the whole dataset at once (update() would compute them in float32)
    obs_rms.mean = obs.mean(axis=0, dtype=np.float64)
    obs_rms.var = obs.var(axis=0, dtype=np.float64)
    obs_rms.count = len(obs)
    for key in ("obs", "obs_next"):
        raw = getattr(buffer, key)
        normalized = np.empty(raw.shape, dtype=np.float32)
        chunk = 1 << 16  # bounded float64 temporaries, even for 1M x 111 Ant observations
        for start in range(0, len(raw), chunk):
            normalized[start : start + chunk] = obs_rms.norm(raw[start : start + chunk])
        buffer.set_array_at_key(normalized, key)
    return buffer, obs_rms


@njit(cache=False)
def _returns_to_go(rewards: np.ndarray, episode_ends: np.ndarray, gamma: float) -> np.ndarray:
    returns = np.empty(len(rewards))
    running = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        if episode_ends[i]:
            running = 0.0
        running = rewards[i] + gamma * running
        returns[i] = running
    return returns


def monte_carlo_returns(buffer: ReplayBuffer, gamma: float) -> np.ndarray:
    """Discounted return-to-go of each transition within its episode, in buffer order.

    For buffers from ``load_d4rl_buffer`` (episodes stored in order, ``done`` at each episode's
    last transition). An episode that ends by time limit or at the end of the data is summed as
    far as it goes, with no value estimate for the rest (CORL's Cal-QL does the same).
    """
    n = len(buffer)
    rewards = np.asarray(buffer.rew[:n], dtype=np.float64)
    episode_ends = np.asarray(buffer.done[:n], dtype=np.bool_)
    return _returns_to_go(rewards, episode_ends, float(gamma))
