"""make_d4rl_dataset.py: D4RL-schema files from the committed Hopper snapshots, resumable SAC
training, medium-replay rebuilt from the action log, and the bundled dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch

from tianshou_offline import dataset_maker as tool
from tianshou_offline.errors import UserInputError

OFFLINE_DIR = Path(__file__).resolve().parents[1] / "examples" / "offline"
HOPPER_SNAPSHOTS = OFFLINE_DIR / "snapshots" / "hopper"
BUNDLED = OFFLINE_DIR / "data" / "hopper-made-medium-50k.hdf5"
NUM_TRANSITIONS = 3000
# D4RL's keys; the official files also hold float32 observations and bool flags.
SCHEMA = {
    "observations": (np.float32, 11),
    "actions": (np.float32, 3),
    "rewards": (np.float32, None),
    "terminals": (np.bool_, None),
    "timeouts": (np.bool_, None),
    "next_observations": (np.float32, 11),
    "infos/qpos": (np.float64, 6),
    "infos/qvel": (np.float64, 6),
}


def read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    with h5py.File(path, "r") as f:
        data = {key: f[key][()] for key in SCHEMA}
        metadata = dict(f["metadata"].attrs)
    return data, metadata


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("made")
    tool.main(
        ["make", "--snapshots", str(HOPPER_SNAPSHOTS), "--levels", "random", "medium", "expert",
         "medium-expert", "--num-transitions", str(NUM_TRANSITIONS), "--num-envs", "4",
         "--workers", "1", "--seed", "3", "--out", str(out)]
    )  # fmt: skip
    return {level: out / f"hopper-made-{level}-3k.hdf5" for level in ("random", "medium", "expert")}


def test_file_names_are_never_official_d4rl_names(made):
    assert sorted(p.name for p in made["random"].parent.iterdir()) == [
        "hopper-made-expert-3k.hdf5",
        "hopper-made-medium-3k.hdf5",
        "hopper-made-medium-expert-6k.hdf5",
        "hopper-made-random-3k.hdf5",
    ]


@pytest.mark.parametrize("level", ["random", "medium", "expert"])
def test_schema_and_metadata(made, level):
    data, metadata = read(made[level])
    for key, (dtype, width) in SCHEMA.items():
        expected_shape = (NUM_TRANSITIONS,) if width is None else (NUM_TRANSITIONS, width)
        assert data[key].shape == expected_shape, key
        assert data[key].dtype == dtype, key
    assert metadata["env_id"] == "Hopper-v5"
    assert metadata["level"] == level
    assert metadata["num_transitions"] == NUM_TRANSITIONS
    assert metadata["seed"] == 3
    assert metadata["tool"].startswith("examples/offline/make_d4rl_dataset.py")
    assert "not one of D4RL" in metadata["not_official_d4rl"]
    np.testing.assert_allclose(metadata["return_mean"], tool.episode_returns(data).mean())
    if level != "random":
        index = tool.load_index(HOPPER_SNAPSHOTS)
        medium, expert = tool.choose_medium_and_expert(index)
        assert metadata["snapshot"] == (medium if level == "medium" else expert)["file"]


@pytest.mark.parametrize("level", ["random", "expert"])
def test_episodes_flags_and_physics_are_consistent(made, level):
    data, _ = read(made[level])
    ends = np.flatnonzero(data["terminals"] | data["timeouts"])
    assert ends[-1] == NUM_TRANSITIONS - 1  # the last episode is cut, and marked as a timeout
    assert not (data["terminals"] & data["timeouts"]).any()
    lengths = np.diff(np.concatenate([[-1], ends]))
    assert lengths.max() <= tool.EPISODE_STEPS
    # Within an episode, each next observation is the following observation, bit for bit.
    inside = np.setdiff1d(np.arange(NUM_TRANSITIONS - 1), ends)
    np.testing.assert_array_equal(
        data["next_observations"][inside], data["observations"][inside + 1]
    )
    # Hopper's observation is qpos without the x position, then the clipped qvel.
    rebuilt = np.concatenate([data["infos/qpos"][:, 1:], np.clip(data["infos/qvel"], -10, 10)], 1)
    np.testing.assert_array_equal(rebuilt.astype(np.float32), data["observations"])
    # Stepping the simulator from each stored state with the stored action reproduces the
    # reward, the next observation and the terminal flag (a timeout is never a termination).
    env = gym.make("Hopper-v5").unwrapped
    env.reset(seed=0)
    for i in np.concatenate([ends, np.arange(0, NUM_TRANSITIONS, 7)]):
        env.set_state(data["infos/qpos"][i], data["infos/qvel"][i])
        next_obs, reward, terminated, _, _ = env.step(data["actions"][i])
        np.testing.assert_array_equal(next_obs.astype(np.float32), data["next_observations"][i])
        assert np.float32(reward) == data["rewards"][i]
        assert terminated == data["terminals"][i], i
    # Timeouts: at the 1000-step cut of an episode, or at the end of the file.
    timeouts = np.flatnonzero(data["timeouts"])
    for i in timeouts[:-1]:
        assert lengths[np.searchsorted(ends, i)] == tool.EPISODE_STEPS


def test_expert_data_clearly_beats_random_data(made):
    random_return = read(made["random"])[1]["return_mean"]
    medium_return = read(made["medium"])[1]["return_mean"]
    expert_return = read(made["expert"])[1]["return_mean"]
    assert random_return < 40  # Hopper falls within ~20 steps under uniform random actions
    assert expert_return > 3 * random_return + 150
    assert medium_return > 2 * random_return


def test_medium_expert_is_medium_then_expert(made):
    both, metadata = read(made["random"].parent / "hopper-made-medium-expert-6k.hdf5")
    medium, _ = read(made["medium"])
    expert, _ = read(made["expert"])
    for key in SCHEMA:
        np.testing.assert_array_equal(both[key], np.concatenate([medium[key], expert[key]]))
    assert metadata["level"] == "medium-expert"


def test_train_resumes_exactly_and_medium_replay_rebuilds_its_buffer(tmp_path):
    tiny = ["train", "--task", "hopper", "--hidden-sizes", "16", "--batch-size", "16",
            "--buffer-size", "2000", "--start-steps", "150", "--snapshot-every", "100",
            "--checkpoint-every", "1000", "--eval-episodes", "2", "--seed", "5",
            "--no-compile"]  # fmt: skip
    tool.main(tiny + ["--steps", "200", "--run-dir", str(tmp_path / "one-leg")])
    tool.main(tiny + ["--steps", "170", "--run-dir", str(tmp_path / "two-legs")])
    leg1 = torch.load(tmp_path / "two-legs" / "checkpoint.pt", weights_only=False)
    assert leg1["action_log"]["actions"].shape == (170, 3)
    tool.main(
        tiny + ["--steps", "200", "--resume-path", str(tmp_path / "two-legs" / "checkpoint.pt")]
    )

    one = torch.load(tmp_path / "one-leg" / "checkpoint.pt", weights_only=False)
    two = torch.load(tmp_path / "two-legs" / "checkpoint.pt", weights_only=False)
    # Same actions, same networks, same snapshots: the interruption left no trace.
    assert two["action_log"]["actions"].shape == (200, 3)
    np.testing.assert_array_equal(one["action_log"]["actions"], two["action_log"]["actions"])
    for key, value in one["algorithm"].items():
        if key != "_optimizers":
            torch.testing.assert_close(two["algorithm"][key], value, rtol=0, atol=0)
    assert one["index"] == two["index"]
    assert [s["step"] for s in two["index"]["snapshots"]] == [200]  # none during warm-up

    # medium-replay: the logged actions replayed from the logged seeds give back the run.
    tool.main(["export", "--run-dir", str(tmp_path / "two-legs"), "--out", str(tmp_path / "ex")])
    tool.main(["make", "--snapshots", str(tmp_path / "ex"), "--levels", "medium-replay",
               "--out", str(tmp_path / "made")])  # fmt: skip
    data, metadata = read(tmp_path / "made" / "hopper-made-medium-replay-200.hdf5")
    assert metadata["replay_return_error"] == 0.0
    np.testing.assert_array_equal(data["actions"], one["action_log"]["actions"][:200])
    # Episode boundaries and returns are those of the training run.
    log = one["action_log"]
    finished = np.cumsum(log["episode_lengths"])
    finished = finished[finished <= 200]
    ends = np.flatnonzero(data["terminals"] | data["timeouts"])
    np.testing.assert_array_equal(ends[: len(finished)] + 1, finished)
    np.testing.assert_allclose(
        tool.episode_returns(data)[: len(finished)],
        log["episode_returns"][: len(finished)],
        rtol=1e-5,
    )


def _sac_run(tmp_path: Path, name: str, compile: bool) -> tool.SacRun:
    args = tool.parse_args(
        ["train", "--task", "Hopper-v5", "--hidden-sizes", "32", "32", "--batch-size", "64",
         "--seed", "2", "--run-dir", str(tmp_path / name),
         "--compile" if compile else "--no-compile"]
    )  # fmt: skip
    args.task = tool.gym_task_id(args.task)
    run = tool.SacRun(args, "cpu")
    rng = np.random.default_rng(0)
    for _ in range(300):  # the same random transitions in both buffers
        run.buffer.add(rng.normal(size=11), rng.uniform(-1, 1, 3), rng.normal(), rng.random() < 0.1,
                       rng.normal(size=11))  # fmt: skip
    return run


def test_compiled_sac_step_equals_the_eager_step(tmp_path):
    torch._dynamo.reset()
    runs = {}
    for compile in (False, True):
        torch.manual_seed(7)  # the same batches and policy noise on both paths
        run = _sac_run(tmp_path, f"compile-{compile}", compile)
        losses = [run.run_update() for _ in range(5)]
        assert run.update.compile == compile  # compiled for real, no silent eager fallback
        runs[compile] = (run, torch.stack(losses))
    (eager, eager_losses), (compiled, compiled_losses) = runs[False], runs[True]
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=1e-5, atol=1e-5)
    eager_state, compiled_state = eager.algorithm.state_dict(), compiled.algorithm.state_dict()
    for key, value in eager_state.items():
        if key != "_optimizers":
            torch.testing.assert_close(compiled_state[key], value, rtol=1e-5, atol=1e-5)
    # and the step moved the networks: five real updates, not a no-op
    fresh = _sac_run(tmp_path, "fresh", False).algorithm.state_dict()
    moved = [
        k for k, v in fresh.items() if k != "_optimizers" and not torch.equal(v, eager_state[k])
    ]
    assert any("critic" in k for k in moved) and any("actor" in k for k in moved)
    assert any("_log_alpha" in k for k in moved)


def test_train_continues_the_same_run_after_kill_9(tmp_path):
    """A run killed with SIGKILL after a checkpoint, resumed, ends where an uninterrupted run
    ends: same actions, networks, optimizer moments and snapshots."""
    import os
    import signal
    import subprocess
    import sys
    import time

    common = ["train", "--task", "hopper", "--hidden-sizes", "16", "--batch-size", "16",
              "--start-steps", "100", "--snapshot-every", "150", "--checkpoint-every", "50",
              "--eval-episodes", "1", "--seed", "3", "--no-compile"]  # fmt: skip
    script = str(OFFLINE_DIR / "make_d4rl_dataset.py")  # the command line, as users run it
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, script, *common, "--steps", "300", "--run-dir", str(whole)],
                   check=True, capture_output=True)  # fmt: skip
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, script, *common, "--steps", "100000", "--run-dir", str(killed)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline:
        if (killed / "checkpoint.pt").exists():
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    checkpoint = torch.load(killed / "checkpoint.pt", weights_only=False)
    assert 0 < len(checkpoint["action_log"]["actions"]) < 300, "killed too late to test resume"
    subprocess.run(
        [sys.executable, script, *common, "--steps", "300", "--resume-path",
         str(killed / "checkpoint.pt")], check=True, capture_output=True,
    )  # fmt: skip
    one = torch.load(whole / "checkpoint.pt", weights_only=False)
    two = torch.load(killed / "checkpoint.pt", weights_only=False)
    np.testing.assert_array_equal(one["action_log"]["actions"], two["action_log"]["actions"])
    for key, value in one["algorithm"].items():
        if key != "_optimizers":
            torch.testing.assert_close(two["algorithm"][key], value, rtol=0, atol=0)
    for opt_one, opt_two in zip(one["algorithm"]["_optimizers"], two["algorithm"]["_optimizers"]):
        for state_one, state_two in zip(opt_one["state"].values(), opt_two["state"].values()):
            for name in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(state_two[name], state_one[name], rtol=0, atol=0)
    assert one["index"]["snapshots"] == two["index"]["snapshots"]


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(UserInputError, match="no index.json"):
        tool.main(["make", "--snapshots", str(tmp_path), "--out", str(tmp_path / "out")])
    with pytest.raises(UserInputError, match="unknown task 'pong'"):
        tool.main(["train", "--task", "pong", "--run-dir", str(tmp_path / "run")])
    with pytest.raises(UserInputError, match="does not exist"):
        tool.main(["train", "--resume-path", str(tmp_path / "missing.pt")])
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_d4rl_names_map_to_gymnasium_v5():
    assert tool.gym_task_id("hopper") == "Hopper-v5"
    assert tool.gym_task_id("halfcheetah-medium-v2") == "HalfCheetah-v5"
    assert tool.gym_task_id("Walker2d-v3") == "Walker2d-v5"
    assert tool.gym_task_id("ant") == "Ant-v5"
    with pytest.raises(UserInputError, match="not a task this tool trains"):
        tool.gym_task_id("Pendulum-v1")


def test_bundled_dataset_is_small_documented_and_better_than_random():
    assert BUNDLED.is_file(), "make it with the command in examples/offline/data/README.md"
    assert BUNDLED.stat().st_size <= 10 * 2**20
    data, metadata = read(BUNDLED)
    assert len(data["rewards"]) == metadata["num_transitions"] == 50_000
    assert metadata["level"] == "medium" and metadata["env_id"] == "Hopper-v5"
    assert metadata["snapshot"] in {
        s["file"] for s in tool.load_index(HOPPER_SNAPSHOTS)["snapshots"]
    }
    assert tool.episode_returns(data).mean() > 10 * 20  # uniform random actions give about 18
    assert str(BUNDLED.name) in (OFFLINE_DIR / "data" / "README.md").read_text()


@pytest.mark.parametrize("task", ["halfcheetah", "hopper", "walker2d"])
def test_make_reproduces_the_committed_checksums(task, tmp_path):
    """`make` from the committed snapshots gives the same first transitions, bit for bit, as on
    one of the machines checksums.json records (the exporting one first: `export` writes it)."""
    snapshots = OFFLINE_DIR / "snapshots" / task
    recorded = tool.recorded_checksums(snapshots)
    n = recorded[0]["num_transitions"]
    tool.main(
        ["make", "--snapshots", str(snapshots), "--levels", "random", "medium", "expert",
         "--num-transitions", str(n), "--num-envs", "1", "--workers", "1", "--seed", "0",
         "--out", str(tmp_path)]
    )  # fmt: skip
    made = {}
    for level in ("random", "medium", "expert"):
        with h5py.File(tmp_path / f"{task}-made-{level}-{n}.hdf5", "r") as f:
            made[level] = tool.data_checksum({key: f[key][()] for key in tool.D4RL_KEYS})
    with np.load(snapshots / tool.ACTION_LOG) as arrays:
        log = tool.ActionLog.from_arrays(tool.ActionLog.from_arrays(dict(arrays)).to_arrays(upto=n))
    replayed = tool.replay_action_log(tool.load_index(snapshots)["task"], log).data
    made["medium-replay"] = tool.data_checksum(replayed)
    machines = [entry["written_on"] for entry in recorded]
    assert any(entry["levels"] == made for entry in recorded), (
        tool.platform_description(),
        machines,
    )
    # Uniform random actions and the replayed action log do not go through torch: every machine
    # gives the same data for them.
    for level in ("random", "medium-replay"):
        assert {entry["levels"][level] for entry in recorded} == {made[level]}
    # The checksum sees a change of one bit.
    replayed["rewards"][0] = np.nextafter(replayed["rewards"][0], np.float32(np.inf))
    assert tool.data_checksum(replayed) != made["medium-replay"]


def test_checksums_refuses_an_unrecorded_machine_and_adds_it(tmp_path, capsys):
    """`checksums` tells a new kind of CPU (or a changed maker) from a known one; --add adds it."""
    snapshots = tmp_path / "hopper"
    shutil.copytree(OFFLINE_DIR / "snapshots" / "hopper", snapshots)
    recorded = json.loads((snapshots / tool.CHECKSUMS).read_text())
    for entry in [recorded, *recorded.get(tool.OTHER_MACHINES, [])]:
        entry["levels"]["medium"] = "0" * 64  # as if no recorded machine made this data
    (snapshots / tool.CHECKSUMS).write_text(json.dumps(recorded))
    with pytest.raises(UserInputError, match="does not record: .* add it with --add"):
        tool.main(["checksums", "--snapshots", str(snapshots)])
    tool.main(["checksums", "--snapshots", str(snapshots), "--add"])
    added = tool.recorded_checksums(snapshots)[-1]
    assert added["written_on"] == tool.platform_description()
    assert added["levels"]["random"] == recorded["levels"]["random"]  # machine-independent
    capsys.readouterr()
    tool.main(["checksums", "--snapshots", str(snapshots)])
    assert "make reproduces the checksums written on" in capsys.readouterr().out


def test_a_log_cut_where_an_episode_ends_replays_without_the_next_seed():
    """HalfCheetah's medium snapshot (40k env steps) falls where its 40th episode ends: the cut
    log has no seed for an episode that never started, and replays to exactly those episodes."""
    env = tool.make_env("Hopper-v5")
    rng = np.random.default_rng(0)
    log = tool.ActionLog.empty(act_dim=3, capacity=64)
    for episode in range(2):  # two short episodes of random actions (Hopper falls within ~50)
        log.episode_seeds.append(100 + episode)
        env.reset(seed=log.episode_seeds[-1])
        episode_return, done = 0.0, False
        while not done:
            action = rng.uniform(-1, 1, size=3).astype(np.float16)
            log.append(action)
            _, reward, terminated, truncated, _ = env.step(action.astype(np.float32))
            episode_return += float(reward)
            done = terminated or truncated
        log.episode_lengths.append(log.num_steps - sum(log.episode_lengths))
        log.episode_returns.append(episode_return)

    cut = tool.ActionLog.from_arrays(log.to_arrays(upto=log.episode_lengths[0]))
    assert cut.episode_seeds == [100]  # the second episode had not started at the cut
    replay = tool.replay_action_log("Hopper-v5", cut)
    assert len(replay.data["rewards"]) == log.episode_lengths[0] and replay.return_error == 0.0
    assert replay.data["terminals"][-1] or replay.data["timeouts"][-1]
    # a log whose actions go on past its last seed is still refused
    broken = tool.ActionLog.from_arrays(log.to_arrays())
    broken.episode_seeds = broken.episode_seeds[:1]
    with pytest.raises(UserInputError, match="more episodes than seeds"):
        tool.replay_action_log("Hopper-v5", broken)
