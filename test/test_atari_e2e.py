"""End to end on real Atari (Pong): expert -> recorded buffer -> the four offline scripts.

The scripts run as subprocesses with the README's commands, shrunk: a few hundred environment
steps, episodes capped with --max-episode-steps, a few gradient steps. What the algorithms
learn is checked in test_discrete_offline_learning.py; here every file the scripts promise must
appear with the right contents, and bad input must end in one clear line and exit code 2.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from example_scripts import load_script
from tianshou.algorithm.modelfree.qrdqn import QRDQNPolicy
from tianshou.data import Collector, VectorReplayBuffer

from tianshou_offline.atari.env import check_atari_task, make_atari_env, make_gym_atari_env
from tianshou_offline.atari.networks import NatureCNN, QuantileNet
from tianshou_offline.data import atari_buffer
from tianshou_offline.data.atari_buffer import load_atari_buffer, save_atari_buffer
from tianshou_offline.errors import UserInputError
from tianshou_offline.run.atari import load_atari_data

atari_il = load_script("atari_il")

REPO = Path(__file__).resolve().parents[1]
QRDQN = REPO / "examples" / "atari" / "atari_qrdqn.py"
OFFLINE = REPO / "examples" / "offline"
TASK = "PongNoFrameskip-v4"
PONG_ACTIONS = 6
EXPERT_DIR = Path("log") / TASK / "qrdqn"  # relative to the directory the scripts run in

# Data generation: 2 envs x 150 steps, episodes cut after 100 steps.
RECORD_SIZE, RECORD_ENVS, RECORD_EPISODE_STEPS = 300, 2, 100


# Tianshou compiles its buffer and return functions with numba in every new process: about 10 s
# of CPU per script here, more than all the work a smoke run does. Plain Python is as exact and
# fast enough for a few hundred transitions (the in-process CartPole tests use the compiled code).
SCRIPT_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_DISABLE_JIT": "1"}


def start_script(script: Path, *args: str, cwd: Path) -> tuple[subprocess.Popen, Path]:
    """Start a script with its stdout and stderr going to files (a full pipe would block it)."""
    log = cwd / f"{script.stem}-{len(list(cwd.glob('*.out')))}"
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        process = subprocess.Popen(
            [sys.executable, str(script), *args], cwd=cwd, env=SCRIPT_ENV, stdout=out, stderr=err
        )
    return process, log


def finish(started: tuple[subprocess.Popen, Path]) -> subprocess.CompletedProcess:
    """Wait for a started script; return its exit code and output."""
    process, log = started
    process.wait(timeout=900)
    output = log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text()
    return subprocess.CompletedProcess(process.args, process.returncode, *output)


def run_script(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return finish(start_script(script, *args, cwd=cwd))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train a (very short) QRDQN expert and record a buffer with it, as in the README."""
    workdir = tmp_path_factory.mktemp("atari")
    trained = run_script(
        QRDQN,
        *("--task", TASK, "--device", "cpu", "--training-num", "1", "--test-num", "1"),
        *("--max-episode-steps", "50", "--epoch", "1", "--epoch-num-steps", "100"),
        *("--buffer-size", "1000"),
        cwd=workdir,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    recorded = run_script(
        QRDQN,
        *("--task", TASK, "--watch", "--resume-path", str(EXPERT_DIR / "policy.pth")),
        *("--eps-test", "0.2", "--buffer-size", str(RECORD_SIZE)),
        *("--save-buffer-name", "expert.hdf5", "--device", "cpu"),
        *("--test-num", str(RECORD_ENVS), "--max-episode-steps", str(RECORD_EPISODE_STEPS)),
        cwd=workdir,
    )
    assert recorded.returncode == 0, recorded.stderr[-3000:]
    return workdir


def test_qrdqn_trains_a_policy_and_records_a_buffer(workdir: Path) -> None:
    # The best policy is the policy network alone (no target network or optimizer), with the
    # task and script it belongs to.
    policy_file = torch.load(workdir / EXPERT_DIR / "policy.pth", weights_only=False)
    assert set(policy_file) == {"policy", "extra_state", "task", "script"}
    assert policy_file["task"] == TASK and policy_file["script"] == "atari_qrdqn.py"
    assert not any(name.startswith("model_old") for name in policy_file["policy"])
    assert len(list((workdir / EXPERT_DIR).glob("0-*/events.out.tfevents.*"))) == 1

    # The bare name expert.hdf5 went next to the policy; --buffer-size transitions in it.
    buffer = load_atari_buffer(workdir / EXPERT_DIR / "expert.hdf5", num_actions=PONG_ACTIONS)
    assert len(buffer) == RECORD_SIZE
    # Each env recorded 150 steps: a 100-step episode cut by --max-episode-steps, then 50
    # steps of one cut by the end of the recording. (A Pong game lasts far longer.)
    steps_per_env = RECORD_SIZE // RECORD_ENVS
    expected_cuts = [
        env * steps_per_env + end
        for env in range(RECORD_ENVS)
        for end in (RECORD_EPISODE_STEPS - 1, steps_per_env - 1)
    ]
    assert np.flatnonzero(buffer.truncated).tolist() == expected_cuts
    assert not buffer.terminated.any()
    assert buffer.obs.shape == (RECORD_SIZE, 84, 84) and buffer.obs.dtype == np.uint8
    assert len(np.unique(buffer.act)) > 1  # 20% random actions at least
    first = buffer[np.array([0])].obs[0]
    assert all(np.array_equal(frame, first[0]) for frame in first)  # stack after a reset


# The offline scripts' smoke runs: one epoch of 3 gradient steps, games cut after 20 steps.
OFFLINE_RUN = (
    *("--task", TASK, "--load-buffer-name", str(EXPERT_DIR / "expert.hdf5")),
    *("--epoch", "1", "--epoch-num-steps", "3"),
    *("--max-episode-steps", "20", "--device", "cpu", "--no-progress", "--seed", "7"),
)


def test_offline_scripts_train_and_evaluate_on_the_recorded_buffer(workdir: Path) -> None:
    common = (*OFFLINE_RUN, "--test-num", "1")
    runs = {
        algo: start_script(OFFLINE / f"atari_{algo}.py", *common, cwd=workdir)
        for algo in ("il", "bcq", "cql", "crr")
    }
    for algo, process in runs.items():
        result = finish(process)
        assert result.returncode == 0, f"atari_{algo}.py failed:\n{result.stderr[-3000:]}"
        final_line = r"final evaluation over 1 episodes: return -?\d+\.\d ± \d+\.\d"
        assert re.search(final_line, result.stdout)
        (run_dir,) = (workdir / "log" / TASK / algo).glob("7-*")
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["gradient_steps"] == 3
        assert summary["final"]["episodes"] == 1
        for name in ("checkpoint.pth", "policy_best.pth", "policy_last.pth"):
            assert (run_dir / name).is_file(), f"atari_{algo}.py wrote no {name}"


def test_an_offline_script_evaluates_in_the_background(workdir: Path) -> None:
    """--eval-in-background: the worker process builds the Pong test envs (two, in subprocesses
    of its own) and buffer from atari_task.eval_setup and plays the initial and the epoch's
    evaluation, with the BCQ policy's evaluation epsilon."""
    run_dir = workdir / "bcq-in-background"
    result = run_script(
        OFFLINE / "atari_bcq.py",
        *OFFLINE_RUN,
        *("--test-num", "2", "--eval-in-background", "--run-dir", str(run_dir)),
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Epoch #1 (evaluated in the background)" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [entry["gradient_step"] for entry in summary["history"]] == [0, 3]
    assert summary["final"]["episodes"] == 2
    assert (run_dir / "policy_best.pth").is_file()


def test_buffer_of_another_game_is_refused_with_exit_code_2(workdir: Path) -> None:
    result = run_script(
        OFFLINE / "atari_cql.py",
        *("--task", "BreakoutNoFrameskip-v4", "--device", "cpu", "--test-num", "1"),
        *("--load-buffer-name", str(EXPERT_DIR / "expert.hdf5")),
        cwd=workdir,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: buffer {EXPERT_DIR / 'expert.hdf5'} has 6 actions but BreakoutNoFrameskip-v4 "
        f"has 4 (the buffer was recorded on {TASK})"
    )


def test_missing_buffer_file_says_how_to_make_one(tmp_path: Path) -> None:
    args = atari_il.get_args(["--load-buffer-name", str(tmp_path / "nope.hdf5")])
    with pytest.raises(UserInputError, match=r"nope\.hdf5 does not exist; record one with"):
        load_atari_data(args, num_actions=PONG_ACTIONS)


@pytest.mark.parametrize("task", ["Pong", "CartPole-v1", "ALE/Pong-v5"])
def test_non_atari_or_frame_skipping_task_is_refused(task: str) -> None:
    with pytest.raises(UserInputError, match="PongNoFrameskip-v4"):
        check_atari_task(task)


def test_training_env_ends_episodes_at_lost_lives_without_resetting_the_game() -> None:
    env = make_gym_atari_env("BreakoutNoFrameskip-v4", training=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    lives = env.unwrapped.ale.lives()
    rng = np.random.default_rng(0)
    terminated = False
    while not terminated:
        obs, reward, terminated, truncated, _ = env.step(int(rng.integers(4)))
        assert not truncated
    assert env.unwrapped.ale.lives() == lives - 1  # one life lost, the game goes on
    obs, _ = env.reset()
    assert env.unwrapped.ale.lives() == lives - 1


def test_recorded_frames_round_trip_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stacks rebuilt from the stored single frames equal the env's own 4-frame stacks."""
    monkeypatch.setattr(atari_buffer, "SAVE_CHUNK", 7)  # written in many small parts
    _, _, envs = make_atari_env(TASK, 3, 0, 2, max_episode_steps=40)
    torch.manual_seed(0)
    policy = QRDQNPolicy(
        model=QuantileNet(NatureCNN(), PONG_ACTIONS, num_quantiles=2),
        action_space=envs.action_space[0],
        eps_inference=0.5,
    )
    as_seen = VectorReplayBuffer(200, buffer_num=2)  # keeps the whole (4, 84, 84) stacks
    Collector(policy, envs, as_seen, exploration_noise=True).collect(
        n_step=200, reset_before_collect=True
    )
    save_atari_buffer(
        tmp_path / "b.hdf5", as_seen, num_actions=PONG_ACTIONS, task=TASK, source="test"
    )
    loaded = load_atari_buffer(tmp_path / "b.hdf5", num_actions=PONG_ACTIONS, task=TASK)

    # the file holds sub-buffer after sub-buffer, each in time order
    expected = np.concatenate([sub.obs[: len(sub)] for sub in as_seen.buffers])
    assert len(loaded) == 200 and len(np.unique(expected[:, -1], axis=0)) > 10
    np.testing.assert_array_equal(loaded[np.arange(200)].obs, expected)
    expected_next = np.concatenate([sub.obs_next[: len(sub)] for sub in as_seen.buffers])
    within_episodes = ~loaded.done.astype(bool)
    np.testing.assert_array_equal(
        loaded[np.arange(200)].obs_next[within_episodes], expected_next[within_episodes]
    )


def test_atari_bcq_resumed_after_kill_9_across_a_target_copy_is_the_same_run(workdir: Path):
    """Target copies every 4 updates, 6 per epoch: the kill comes between two copies, and the
    resumed run must copy at the same updates (the counter is checkpointed), ending with
    bit-identical parameters and the same evaluations."""
    args = (*OFFLINE_RUN, "--test-num", "1", "--target-update-freq", "4")
    args = (*args, "--epoch", "3", "--epoch-num-steps", "6")
    whole = run_script(OFFLINE / "atari_bcq.py", *args, "--run-dir", "whole", cwd=workdir)
    assert whole.returncode == 0, whole.stderr[-3000:]
    process, log = start_script(OFFLINE / "atari_bcq.py", *args, "--run-dir", "killed", cwd=workdir)
    checkpoint = workdir / "killed" / "checkpoint.pth"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert torch.load(checkpoint, weights_only=False)["epoch"] < 3
    resumed = run_script(
        OFFLINE / "atari_bcq.py", *args, "--resume-path", str(checkpoint), cwd=workdir
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    one, two = (
        torch.load(workdir / d / "policy_last.pth", weights_only=False)["algorithm"]
        for d in ("whole", "killed")
    )
    assert one["_extra_state"]["counters"] == two["_extra_state"]["counters"] == {"_iter": 18}
    for key, value in one.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(two[key], value, rtol=0, atol=0, msg=key)
    histories = [
        [
            h["return_mean"]
            for h in json.loads((workdir / d / "summary.json").read_text())["history"]
        ]
        for d in ("whole", "killed")
    ]
    assert histories[0] == histories[1] and len(histories[0]) == 4
