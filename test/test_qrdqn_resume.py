"""Online QR-DQN (examples/atari/atari_qrdqn.py) resumes exactly after kill -9.

The script runs on real Pong as subprocesses, shrunk (2 training envs, games cut after 30 steps
so that episodes end and restart within the run, a 120-transition buffer that wraps, a target
copy every 7 updates, exploration decaying within the run, a checkpoint every 50 env steps).
A run killed after a checkpoint within its first epoch and resumed with ``--resume-path DIR``
must continue at the checkpoint's env step and gradient step and end in the very state of an
uninterrupted run: parameters, target network, optimizer, counters, random states, the
training games and the replay buffer (data, fill state, sampling RNGs).

The parts are also checked alone: the training environments' saved state (emulator, no-op RNG,
wrappers) plays on exactly as the original, and the replay buffer's saved state (slow: it pays
Tianshou's numba compilation in this process).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tianshou_offline import tianshou_adapter
from tianshou_offline.atari.env import make_atari_env, restore_options, vector_env_states

REPO = Path(__file__).resolve().parents[1]
QRDQN = REPO / "examples" / "atari" / "atari_qrdqn.py"
TASK = "PongNoFrameskip-v4"
# numba compiles Tianshou's buffer functions in every new process (~10 s); plain Python is as
# exact and fast enough here (test_atari_e2e does the same)
SCRIPT_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_DISABLE_JIT": "1"}
RUN = [
    *("--task", TASK, "--device", "cpu", "--seed", "5", "--no-progress"),
    *("--training-num", "2", "--test-num", "1", "--max-episode-steps", "30"),
    *("--epoch", "2", "--epoch-num-steps", "100", "--checkpoint-every", "50"),
    *("--buffer-size", "120", "--batch-size", "16", "--target-update-freq", "7"),
    *("--eps-decay-steps", "150"),
]
ENV_STEPS, GRADIENT_STEPS = 200, 20  # 10 env steps per collection, then 1 update


def run_qrdqn(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(QRDQN), *args],
        cwd=cwd,
        env=SCRIPT_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pth", weights_only=False)


def assert_same(a, b, where: str = "") -> None:
    """Nested dicts / lists / tuples of tensors, arrays and plain values, equal bit for bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{index}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    else:
        assert a == b, where


def plain(value):
    """``value`` as nested dicts, lists and arrays that ``assert_same`` compares, part by part:
    two pickles of equal states can differ in bytes where objects were shared in one (before a
    restore) and are copies in the other (after it)."""
    from tianshou.data import Batch

    if isinstance(value, Batch):
        return {key: plain(item) for key, item in vars(value).items()}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, np.random.RandomState):
        return plain(list(value.get_state()))
    if isinstance(value, np.random.Generator):
        return plain(value.bit_generator.state)
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value
    if isinstance(value, torch.Tensor | int | float | str | bool | type(None)):
        return value
    return pickle.dumps(value)  # emulator states, deques of frames, numpy scalars, ...


def test_a_killed_run_resumes_at_the_same_step_and_ends_as_an_uninterrupted_one(tmp_path):
    whole = tmp_path / "whole"
    run_qrdqn(*RUN, "--run-dir", str(whole), cwd=tmp_path)

    killed = tmp_path / "killed"
    with open(tmp_path / "killed.out", "w") as out:
        process = subprocess.Popen(
            [sys.executable, str(QRDQN), *RUN, "--run-dir", str(killed)],
            cwd=tmp_path,
            env=SCRIPT_ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    # The checkpoint after env step 50 is complete when the buffer file of the one before
    # (env step 0) is gone: it is removed after checkpoint.pth is written.
    deadline = time.time() + 300
    while time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        files = {path.name for path in killed.glob("replay_buffer.*.pkl")}
        if files and "replay_buffer.0.pkl" not in files:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "summary.json").exists()
    at_kill = checkpoint(killed)["progress"]
    assert 0 < at_kill["env_step"] < ENV_STEPS, at_kill

    # --resume-path alone: the settings come from the checkpoint
    resumed = run_qrdqn("--resume-path", str(killed), "--no-progress", cwd=tmp_path)
    line = re.search(r"env step (\d+), gradient step (\d+)", resumed.stdout)
    assert line, resumed.stdout[-2000:]
    assert (int(line[1]), int(line[2])) == (at_kill["env_step"], at_kill["gradient_step"])

    # the same end: counters, parameters, optimizer, target network, random states, games
    end_whole, end_resumed = checkpoint(whole), checkpoint(killed)
    assert end_whole["progress"] == end_resumed["progress"]
    assert end_resumed["progress"]["env_step"] == ENV_STEPS
    assert end_resumed["progress"]["gradient_step"] == GRADIENT_STEPS
    assert end_whole["counters"] == end_resumed["counters"] == {"_iter": GRADIENT_STEPS}
    for key in ("algorithm", "rng", "history", "best_return"):
        assert_same(end_whole[key], end_resumed[key], key)
    for game, (a, b) in enumerate(
        zip(end_whole["env_states"], end_resumed["env_states"], strict=True)
    ):
        assert_same(plain(a), plain(b), f"training game {game}")
    # the replay buffer: data, fill state, running episodes, sampling RNGs
    buffer_name = f"replay_buffer.{ENV_STEPS}.pkl"
    assert end_whole["buffer_file"] == end_resumed["buffer_file"] == buffer_name
    buffers = [pickle.loads((run / buffer_name).read_bytes()) for run in (whole, killed)]
    assert_same(plain(buffers[0]), plain(buffers[1]), "replay buffer")
    assert sorted(p.name for p in killed.glob("*replay_buffer*")) == [buffer_name]
    # and the same summary
    summary_whole = json.loads((whole / "summary.json").read_text())
    summary_resumed = json.loads((killed / "summary.json").read_text())
    for key in ("env_steps", "gradient_steps", "epochs", "history", "best"):
        assert summary_whole[key] == summary_resumed[key], key
    assert summary_whole["final"]["returns"] == summary_resumed["final"]["returns"]


@pytest.mark.slow  # three more runs of the script (about 40 s)
def test_a_resumed_run_refuses_other_settings(tmp_path):
    """A finished run can be extended (--epoch), not changed (e.g. --batch-size)."""
    run = tmp_path / "run"
    run_qrdqn(*RUN, "--epoch", "1", "--run-dir", str(run), cwd=tmp_path)
    refused = subprocess.run(
        [sys.executable, str(QRDQN), "--resume-path", str(run), "--batch-size", "8"],
        cwd=tmp_path,
        env=SCRIPT_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "--batch-size 8" in lines[0] and "--batch-size 16" in lines[0]
    extended = run_qrdqn("--resume-path", str(run), "--epoch", "2", "--no-progress", cwd=tmp_path)
    assert "epoch 1/2 done, env step 100, gradient step 10" in extended.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["epochs"], summary["env_steps"]) == (2, ENV_STEPS)


@pytest.mark.parametrize("num_envs", [1, 2], ids=["in-process env", "subprocess envs"])
def test_saved_training_games_play_on_exactly(num_envs):
    """Restore the state of training envs into envs made with another seed: the same
    observations, rewards, ends and frame counters follow, across episode ends and resets."""

    def play(envs, actions) -> list:
        seen = []
        for action in actions:
            obs, rew, terminated, truncated, info = envs.step(action)
            seen += [obs, rew, terminated, truncated, [i["frame_number"] for i in info]]
            done = np.flatnonzero(terminated | truncated)
            if len(done):
                seen.append(envs.reset(env_id=done)[0])
        return seen

    def training_envs(seed: int):
        return make_atari_env(
            TASK, seed, num_envs, 1, max_episode_steps=30, resumable_training=True
        )[1]

    rng = np.random.default_rng(0)
    envs = training_envs(seed=0)
    envs.reset()
    play(envs, rng.integers(0, 6, (45, num_envs)))
    states = vector_env_states(envs)
    actions = rng.integers(0, 6, (70, num_envs))
    original = play(envs, actions)

    other = training_envs(seed=99)
    obs, _ = other.reset(**restore_options(states))
    assert np.array_equal(obs, states_obs(states))
    restored = play(other, actions)
    assert len(restored) == len(original)
    for step, (a, b) in enumerate(zip(original, restored, strict=True)):
        assert np.array_equal(np.asarray(a), np.asarray(b)), f"differs at item {step}"

    fresh = training_envs(seed=99)  # the check can fail: without the state, other games
    fresh.reset()
    assert not all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(original, play(fresh, actions), strict=False)
    )
    for vector in (envs, other, fresh):
        vector.close()


def states_obs(states: list[dict]) -> np.ndarray:
    return np.stack([state["last"][0] for state in states])


@pytest.mark.slow
def test_the_replay_buffer_state_round_trip():
    """A wrapped vector buffer with an episode in progress, pickled and restored into a new
    buffer: the same data, fill state, running episode and sampling from then on."""
    from tianshou.data import Batch, VectorReplayBuffer

    def new_buffer() -> VectorReplayBuffer:
        return VectorReplayBuffer(12, 2, stack_num=4, ignore_obs_next=True, save_only_last_obs=True)

    def add(buffer: VectorReplayBuffer, step: int) -> tuple:
        batch = Batch(
            obs=np.full((2, 4, 2, 2), step, dtype=np.uint8),
            act=np.array([step % 3, (step + 1) % 3]),
            rew=np.array([1.0, -1.0]),
            terminated=np.array([step % 5 == 4, False]),
            truncated=np.array([False, step % 7 == 6]),
            info=[{"n": step}, {"n": -step}],
        )
        return buffer.add(batch)

    original = new_buffer()
    tianshou_adapter.set_sampling_rng(original, np.random.RandomState(3))
    for step in range(9):  # 9 rows per 6-row sub-buffer: both wrapped, episodes unfinished
        add(original, step)
    saved = pickle.loads(pickle.dumps(tianshou_adapter.replay_buffer_state(original)))
    restored = new_buffer()
    tianshou_adapter.restore_replay_buffer_state(restored, saved)

    assert len(restored) == len(original) == 12
    for step in range(9, 14):  # the same episode returns and lengths come out of add
        assert_same(add(original, step), add(restored, step), f"add {step}")
    for key in ("obs", "act", "rew", "terminated", "truncated", "done"):
        assert np.array_equal(getattr(original, key), getattr(restored, key)), key
    for _ in range(3):
        (a, idx_a), (b, idx_b) = original.sample(5), restored.sample(5)
        assert np.array_equal(idx_a, idx_b) and np.array_equal(a.obs, b.obs)
    # the sub-buffers see the restored data (views of it, not copies)
    assert np.shares_memory(restored.buffers[1].obs, restored.obs)
    with pytest.raises(ValueError, match="sub-buffers"):
        tianshou_adapter.restore_replay_buffer_state(VectorReplayBuffer(12, 3, stack_num=4), saved)
