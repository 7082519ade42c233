"""examples/offline/d4rl_data.py: tasks, D4RL-format loading, download cache, Minari, scores."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gymnasium
import h5py
import numpy as np
import pytest

from tianshou_offline.data import d4rl as d4rl_data
from tianshou_offline.data.d4rl import (
    dataset_path,
    download_d4rl,
    gym_task_id,
    load_d4rl_buffer,
    make_env,
    monte_carlo_returns,
    normalize_obs,
    normalized_score,
)
from tianshou_offline.errors import UserInputError

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# A small D4RL-schema file with every kind of episode end
# ----------------------------------------------------------------------------------------------
# rows 0-2: an episode that ends with a terminal at row 2
# rows 3-5: an episode cut by the time limit (timeout at row 5)
# rows 6-7: an episode the file ends in
N_ROWS = 8
TERMINALS = np.array([0, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
TIMEOUTS = np.array([0, 0, 0, 0, 0, 1, 0, 0], dtype=bool)
OBS = np.stack([np.arange(N_ROWS), 10 + np.arange(N_ROWS)], axis=1).astype(np.float32)
ACT = (np.arange(N_ROWS, dtype=np.float32) / 10)[:, None]
REW = np.arange(N_ROWS, dtype=np.float32)
# true next observations where an episode ends (the file's next row belongs to another episode)
NEXT_OBS = np.concatenate([OBS[1:], [[77, 77]]]).astype(np.float32)
NEXT_OBS[2] = [22, 22]
NEXT_OBS[5] = [55, 55]


def write_d4rl(path: Path, **arrays: np.ndarray) -> Path:
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file[key] = value
    return path


def small_file(tmp_path: Path, name: str = "small.hdf5", **overrides) -> Path:
    """The small file, with arrays replaced (or left out where an override is None)."""
    arrays = dict(
        observations=OBS, actions=ACT, rewards=REW, terminals=TERMINALS, timeouts=TIMEOUTS
    )
    arrays.update(overrides)
    return write_d4rl(tmp_path / name, **{k: v for k, v in arrays.items() if v is not None})


def assert_buffer(buffer, obs, obs_next, act, rew, terminated, truncated) -> None:
    assert len(buffer) == len(obs)
    np.testing.assert_array_equal(buffer.obs, obs)
    np.testing.assert_array_equal(buffer.obs_next, obs_next)
    np.testing.assert_array_equal(buffer.act, act)
    np.testing.assert_array_equal(buffer.rew, rew)
    np.testing.assert_array_equal(buffer.terminated, terminated)
    np.testing.assert_array_equal(buffer.truncated, truncated)
    np.testing.assert_array_equal(buffer.done, np.asarray(terminated) | np.asarray(truncated))


def test_without_next_observations_matches_qlearning_dataset(tmp_path):
    buffer = load_d4rl_buffer(str(small_file(tmp_path)))
    # row 5 (timeout) and row 7 (file end) have no next row in their episode: dropped
    kept = [0, 1, 2, 3, 4, 6]
    assert_buffer(
        buffer,
        obs=OBS[kept],
        obs_next=OBS[[1, 2, 3, 4, 5, 7]],
        act=ACT[kept],
        rew=REW[kept],
        terminated=[0, 0, 1, 0, 0, 0],
        truncated=[0, 0, 0, 0, 1, 1],  # last kept step of the timeout episode and of the file
    )
    assert buffer.obs.dtype == np.float32 and buffer.terminated.dtype == bool
    # the buffer is full, in file order, and next() stays inside an episode
    assert buffer.last_index[0] == len(buffer) - 1
    np.testing.assert_array_equal(buffer.next(np.array([0, 2, 3, 4, 5])), [1, 2, 4, 4, 5])
    batch, indices = buffer.sample(4)
    np.testing.assert_array_equal(batch.obs, buffer.obs[indices])


def test_with_next_observations_keeps_every_row(tmp_path):
    expected = dict(
        obs=OBS,
        obs_next=NEXT_OBS,
        act=ACT,
        rew=REW,
        terminated=TERMINALS,
        truncated=[0, 0, 0, 0, 0, 1, 0, 1],  # timeout row and the file's last row
    )
    with_timeouts = small_file(tmp_path, next_observations=NEXT_OBS)
    assert_buffer(load_d4rl_buffer(str(with_timeouts)), **expected)
    # without timeouts, the episode ends where the next row does not continue the observations
    no_timeouts = small_file(
        tmp_path, "no_timeouts.hdf5", next_observations=NEXT_OBS, timeouts=None
    )
    assert_buffer(load_d4rl_buffer(str(no_timeouts)), **expected)


def test_column_vectors_and_timeout_on_terminal_row(tmp_path):
    # rewards and flags stored as (N, 1), like some D4RL files; a row that is both terminal and
    # timeout is dropped by qlearning_dataset (the timeout wins)
    terminals = TERMINALS.copy()
    timeouts = TIMEOUTS.copy()
    timeouts[2] = True
    path = small_file(
        tmp_path, rewards=REW[:, None], terminals=terminals[:, None], timeouts=timeouts[:, None]
    )
    buffer = load_d4rl_buffer(str(path))
    np.testing.assert_array_equal(buffer.obs[:, 0], [0, 1, 3, 4, 6])
    np.testing.assert_array_equal(buffer.obs_next[:, 0], [1, 2, 4, 5, 7])
    np.testing.assert_array_equal(buffer.terminated, [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(buffer.truncated, [0, 1, 0, 1, 1])


def reference_qlearning(obs, terminals, max_steps):
    """qlearning_dataset's rules for a file without timeouts, one row at a time."""
    kept, step = [], 0
    for i in range(len(obs) - 1):
        if step == max_steps - 1:  # the time-limit step: no next observation, dropped
            step = 0
            continue
        kept.append(i)
        step = 0 if terminals[i] else step
        step += 1
    return np.array(kept)


def test_without_timeouts_uses_the_step_limit_like_d4rl(tmp_path):
    rng = np.random.default_rng(3)
    n, max_steps = 1500, 200  # Pendulum-v1 has a 200-step limit
    obs = rng.standard_normal((n, 3)).astype(np.float32)
    terminals = rng.random(n) < 0.003  # episodes of both kinds: terminal and 200-step limit
    path = write_d4rl(
        tmp_path / "pendulum.hdf5",
        observations=obs,
        actions=rng.uniform(-2, 2, (n, 1)).astype(np.float32),
        rewards=rng.standard_normal(n).astype(np.float32),
        terminals=terminals,
    )
    buffer = load_d4rl_buffer(str(path), gymnasium.make("Pendulum-v1"))
    kept = reference_qlearning(obs, terminals, max_steps)
    assert n - 1 - len(kept) >= 2 and terminals[kept].sum() >= 2  # both kinds of episode end
    np.testing.assert_array_equal(buffer.obs, obs[kept])
    np.testing.assert_array_equal(buffer.obs_next, obs[kept + 1])
    np.testing.assert_array_equal(buffer.terminated, terminals[kept])


# ----------------------------------------------------------------------------------------------
# Bad input: one clear message each
# ----------------------------------------------------------------------------------------------


def error_of(spec, env=None) -> str:
    with pytest.raises(UserInputError) as info:
        load_d4rl_buffer(spec, env)
    return str(info.value)


def test_missing_file_says_where_and_how_to_make_one(tmp_path):
    message = error_of(str(tmp_path / "nope.hdf5"))
    assert f"{tmp_path / 'nope.hdf5'} not found" in message
    assert "make_d4rl_dataset.py" in message


def test_missing_key_is_named(tmp_path):
    assert "no 'rewards' array" in error_of(str(small_file(tmp_path, rewards=None)))


def test_different_lengths(tmp_path):
    message = error_of(str(small_file(tmp_path, actions=ACT[:-1])))
    assert "different lengths" in message and "actions 7" in message and "observations 8" in message


def test_sizes_must_match_the_environment(tmp_path):
    pendulum = gymnasium.make("Pendulum-v1")  # 3-dim observations, 1-dim actions
    message = error_of(str(small_file(tmp_path)), pendulum)
    assert "observations" in message and "(2,)" in message and "(3,)" in message
    three_dim = np.concatenate([OBS, OBS[:, :1]], axis=1)
    path = small_file(tmp_path, observations=three_dim, actions=ACT.repeat(2, axis=1))
    message = error_of(str(path), pendulum)
    assert "actions" in message and "(2,)" in message and "(1,)" in message


def test_nan_and_inf_name_key_and_first_row(tmp_path):
    obs = OBS.copy()
    obs[4, 1] = np.nan
    obs[6, 0] = np.nan
    assert "'observations'" in (message := error_of(str(small_file(tmp_path, observations=obs))))
    assert "first in row 4" in message
    rewards = REW.copy()
    rewards[3] = np.inf
    message = error_of(str(small_file(tmp_path, rewards=rewards)))
    assert "'rewards'" in message and "first in row 3" in message


def test_unreadable_and_truncated_hdf5(tmp_path):
    not_hdf5 = tmp_path / "text.hdf5"
    not_hdf5.write_text("this is not HDF5\n")
    assert "cannot read" in error_of(str(not_hdf5))
    good = small_file(tmp_path)
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    message = error_of(str(truncated))
    assert "cannot read" in message and "damaged or incomplete" in message


def test_unknown_dataset_name_suggests_close_names():
    message = error_of("halfcheetah-expret-v2")
    assert "unknown D4RL dataset" in message and "halfcheetah-expert-v2" in message


def test_error_exits_2_without_traceback(tmp_path):
    code = (
        "from tianshou_offline.errors import run_main;"
        "from tianshou_offline.data.d4rl import load_d4rl_buffer;"
        f"run_main(lambda: load_d4rl_buffer({str(tmp_path / 'missing.hdf5')!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: dataset file") and "not found" in result.stderr


# ----------------------------------------------------------------------------------------------
# Download cache
# ----------------------------------------------------------------------------------------------


@contextmanager
def http_server(handler) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_download_puts_the_file_in_d4rl_cache(tmp_path, monkeypatch):
    served = tmp_path / "served"
    (served / "gym_mujoco_v2").mkdir(parents=True)
    small_file(served / "gym_mujoco_v2").rename(served / "gym_mujoco_v2/hopper_medium-v2.hdf5")
    cache = tmp_path / "cache"
    monkeypatch.setenv("D4RL_DATASET_DIR", str(cache))

    def handler(*args, **kwargs):
        return QuietHandler(*args, directory=str(served), **kwargs)

    with http_server(handler) as url:
        monkeypatch.setenv("D4RL_URL_BASE", url)
        path = download_d4rl("hopper-medium-v2")
    assert path == cache / "hopper_medium-v2.hdf5" == dataset_path("hopper-medium-v2")
    assert path.read_bytes() == (served / "gym_mujoco_v2/hopper_medium-v2.hdf5").read_bytes()
    # by name, the cached file is loaded (the server is gone: no second download)
    assert len(load_d4rl_buffer("hopper-medium-v2")) == 6


def test_interrupted_download_leaves_no_file(tmp_path, monkeypatch):
    payload = b"x" * 5000

    class CutOff(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(2 * len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.close_connection = True

        def log_message(self, *args) -> None:
            pass

    cache = tmp_path / "cache"
    monkeypatch.setenv("D4RL_DATASET_DIR", str(cache))
    with http_server(CutOff) as url:
        monkeypatch.setenv("D4RL_URL_BASE", url)
        with pytest.raises(UserInputError) as info:
            download_d4rl("walker2d-expert-v2")
    assert "walker2d_expert-v2.hdf5" in str(info.value)
    assert "download" in str(info.value)
    assert list(cache.iterdir()) == []


def test_no_network_message(tmp_path, monkeypatch):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("D4RL_URL_BASE", f"http://127.0.0.1:{port}")
    with pytest.raises(UserInputError) as info:
        load_d4rl_buffer("ant-medium-replay-v0")
    message = str(info.value)
    assert "could not download" in message
    assert f"copy it to {tmp_path / 'cache' / 'ant_mixed.hdf5'}" in message
    assert "make_d4rl_dataset.py" in message
    assert not (tmp_path / "cache" / "ant_mixed.hdf5").exists()


def test_dataset_names_and_cache_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    # file names as D4RL's URLs have them (d4rl/infos.py)
    assert dataset_path("halfcheetah-expert-v2") == tmp_path / "halfcheetah_expert-v2.hdf5"
    assert dataset_path("hopper-medium-replay-v1") == tmp_path / "hopper_medium_replay-v1.hdf5"
    assert dataset_path("walker2d-medium-replay-v0") == tmp_path / "walker_mixed.hdf5"
    assert dataset_path("ant-full-replay-v2") == tmp_path / "ant_full_replay-v2.hdf5"
    monkeypatch.delenv("D4RL_URL_BASE", raising=False)
    assert d4rl_data._dataset_url("halfcheetah-medium-expert-v2") == (
        "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/"
        "halfcheetah_medium_expert-v2.hdf5"
    )


# ----------------------------------------------------------------------------------------------
# Minari
# ----------------------------------------------------------------------------------------------


def write_minari_dataset(root: Path, dataset_id: str, episodes: list[dict]) -> None:
    """A dataset in Minari 0.5's on-disk layout: <id>/data/metadata.json + main_data.hdf5."""
    data_dir = root / dataset_id / "data"
    data_dir.mkdir(parents=True)
    box = {"type": "Box", "dtype": "float32", "shape": [2], "low": [-1e9] * 2, "high": [1e9] * 2}
    act_box = {"type": "Box", "dtype": "float32", "shape": [1], "low": [-1.0], "high": [1.0]}
    metadata = {
        "dataset_id": dataset_id,
        "minari_version": "0.5.4",
        "data_format": "hdf5",
        "observation_space": json.dumps(box),
        "action_space": json.dumps(act_box),
        "total_episodes": len(episodes),
        "total_steps": sum(len(ep["rewards"]) for ep in episodes),
    }
    (data_dir / "metadata.json").write_text(json.dumps(metadata))
    with h5py.File(data_dir / "main_data.hdf5", "w") as file:
        for index, episode in enumerate(episodes):
            group = file.create_group(f"episode_{index}")
            group.attrs["id"] = index
            group.attrs["total_steps"] = len(episode["rewards"])
            for key, value in episode.items():
                group[key] = value


def test_minari_dataset_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    obs_a = np.arange(8, dtype=np.float32).reshape(4, 2)  # 3 steps, ends in a terminal
    obs_b = 100 + np.arange(6, dtype=np.float32).reshape(3, 2)  # 2 steps, truncated
    episodes = [
        dict(
            observations=obs_a,
            actions=np.array([[0.1], [0.2], [0.3]], np.float32),
            rewards=np.array([1.0, 2.0, 3.0]),
            terminations=np.array([False, False, True]),
            truncations=np.array([False, False, False]),
        ),
        dict(
            observations=obs_b,
            actions=np.array([[0.4], [0.5]], np.float32),
            rewards=np.array([4.0, 5.0]),
            terminations=np.array([False, False]),
            truncations=np.array([False, True]),
        ),
    ]
    write_minari_dataset(tmp_path, "test/tiny-v0", episodes)
    buffer = load_d4rl_buffer("minari:test/tiny-v0")
    assert_buffer(
        buffer,
        obs=np.concatenate([obs_a[:-1], obs_b[:-1]]),
        obs_next=np.concatenate([obs_a[1:], obs_b[1:]]),
        act=np.array([[0.1], [0.2], [0.3], [0.4], [0.5]], np.float32),
        rew=[1, 2, 3, 4, 5],
        terminated=[0, 0, 1, 0, 0],
        truncated=[0, 0, 0, 0, 1],
    )
    message = error_of("minari:test/tiny-v1")
    assert "not in the local store" in message and "minari download test/tiny-v1" in message
    assert "test/tiny-v0" in message  # the close local name


# ----------------------------------------------------------------------------------------------
# Tasks, scores, statistics
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, gym_id, obs_dim, act_dim",
    [
        ("HalfCheetah-v2", "HalfCheetah-v5", 17, 6),
        ("Hopper-v3", "Hopper-v5", 11, 3),
        ("Walker2d-v2", "Walker2d-v5", 17, 6),
        ("Ant-v3", "Ant-v5", 111, 8),
    ],
)
def test_d4rl_tasks_have_d4rl_spaces(task, gym_id, obs_dim, act_dim):
    assert gym_task_id(task) == gym_id
    env = make_env(task, seed=0, quiet=True)
    assert env.spec.id == gym_id
    assert env.observation_space.shape == (obs_dim,) and env.action_space.shape == (act_dim,)
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    obs, _ = env.reset(seed=1)
    next_obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == next_obs.shape == (obs_dim,)
    if task.startswith("Ant"):  # D4RL's 84 contact-force dims, always 0 in its data
        assert (next_obs[:27] != 0).any() and (next_obs[27:] == 0).all()
    if task.startswith("Walker2d"):  # gym v2's model: right foot friction 0.9
        assert env.unwrapped.fullpath.endswith("/walker2d.xml")


def test_task_mapping_line_pass_through_and_unknown(capsys):
    make_env("HalfCheetah-v2")
    assert capsys.readouterr().out == (
        "task HalfCheetah-v2 -> gymnasium HalfCheetah-v5 "
        "(same 17-dim observations, 6-dim actions)\n"
    )
    assert gym_task_id("hopper-medium-replay-v2") == "Hopper-v5"
    assert gym_task_id("Pendulum-v1") == "Pendulum-v1"
    assert gym_task_id("Hopper-v5") == "Hopper-v5"
    with pytest.raises(UserInputError) as info:
        gym_task_id("HalfCheeta-v2")
    assert "unknown task 'HalfCheeta-v2'" in str(info.value)
    assert "Walker2d-v2" in str(info.value) and "Did you mean HalfCheetah-v2" in str(info.value)


def test_normalized_score_uses_d4rl_reference_returns():
    # (return - random) / (expert - random) with d4rl/infos.py's reference returns
    assert normalized_score("HalfCheetah-v2", 12135.0) == pytest.approx(100.0)
    assert normalized_score("halfcheetah", 5000.0) == pytest.approx(
        100 * (5000 + 280.178953) / (12135.0 + 280.178953)
    )
    assert normalized_score("Hopper-v5", -20.272305) == pytest.approx(0.0)
    np.testing.assert_allclose(
        normalized_score("walker2d-medium-v2", np.array([1.629008, 4592.3, 2296.964504])),
        [0.0, 100.0, 50.0],
    )
    assert normalized_score("Ant-v2", 1777.05) == pytest.approx(50.0)
    assert normalized_score("Pendulum-v1", 100.0) is None
    assert normalized_score("antmaze-umaze-v2", 1.0) is None


def test_normalize_obs_matches_running_mean_std(tmp_path):
    buffer = load_d4rl_buffer(str(small_file(tmp_path, next_observations=NEXT_OBS)))
    buffer, obs_rms = normalize_obs(buffer)
    np.testing.assert_allclose(obs_rms.mean, OBS.mean(axis=0))
    np.testing.assert_allclose(obs_rms.var, OBS.var(axis=0))
    np.testing.assert_allclose(buffer.obs, obs_rms.norm(OBS), rtol=1e-6)
    np.testing.assert_allclose(buffer.obs_next, obs_rms.norm(NEXT_OBS), rtol=1e-6)
    np.testing.assert_allclose(buffer.obs.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(buffer.obs.std(axis=0), 1.0, rtol=1e-5)


def test_monte_carlo_returns_per_episode(tmp_path):
    buffer = load_d4rl_buffer(str(small_file(tmp_path)))
    # kept rewards [0, 1, 2 | 3, 4 | 6]: terminal episode, time-limit episode, file end
    returns = monte_carlo_returns(buffer, gamma=0.5)
    np.testing.assert_allclose(returns, [0 + 0.5 * 2, 1 + 0.5 * 2, 2, 3 + 0.5 * 4, 4, 6])
