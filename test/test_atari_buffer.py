"""The Atari buffer file format: exact round trips, frame stacking at sampling, bad input."""

import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from tianshou.data import Batch, ReplayBuffer

from tianshou_offline.data.atari_buffer import (
    AtariBufferWriter,
    load_atari_buffer,
    save_atari_buffer,
    write_subset,
)
from tianshou_offline.errors import UserInputError

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "atari" / "atari_buffer.py"
NUM_ACTIONS = 4


def make_episodes(lengths, ends, seed=0):
    """Transitions of consecutive episodes; ``ends[i]`` is "terminated", "truncated" or "open"."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    data = {
        "frames": rng.integers(0, 256, size=(n, 84, 84), dtype=np.uint8),
        "act": rng.integers(0, NUM_ACTIONS, size=n),
        "rew": rng.normal(size=n).astype(np.float32),
        "terminated": np.zeros(n, bool),
        "truncated": np.zeros(n, bool),
    }
    last_rows = np.cumsum(lengths) - 1
    for row, end in zip(last_rows, ends):
        if end != "open":
            data[end][row] = True
    return data


def write(path, data, chunk_sizes=(3, 1, 100), **kwargs):
    """Write ``data`` with appends of varying size, as a streaming producer would."""
    options = {"num_actions": NUM_ACTIONS, "task": "BreakoutNoFrameskip-v4", "source": "test"}
    options.update(kwargs)
    with AtariBufferWriter(path, **options) as writer:
        start = 0
        for i in range(len(data["act"])):
            size = chunk_sizes[i % len(chunk_sizes)]
            if start >= len(data["act"]):
                break
            writer.append(**{key: value[start : start + size] for key, value in data.items()})
            start += size


def expected_stack(frames, episode_starts, t):
    """[f_{t-3}, ..., f_t] with the episode's first frame repeated before its start."""
    start = episode_starts[t]
    return np.stack([frames[max(start, t - k)] for k in (3, 2, 1, 0)])


def episode_starts_of(done):
    starts = np.zeros(len(done), int)
    for t in range(1, len(done)):
        starts[t] = t if done[t - 1] else starts[t - 1]
    return starts


def check_buffer_matches(buffer, data):
    n = len(data["act"])
    done = data["terminated"] | data["truncated"]
    assert len(buffer) == n
    assert buffer.stack_num == 4
    np.testing.assert_array_equal(buffer.obs, data["frames"])
    np.testing.assert_array_equal(buffer.act, data["act"])
    np.testing.assert_array_equal(buffer.rew, data["rew"])
    np.testing.assert_array_equal(buffer.terminated, data["terminated"])
    np.testing.assert_array_equal(buffer.truncated, data["truncated"])
    np.testing.assert_array_equal(buffer.done, done)
    starts = episode_starts_of(done)
    batch = buffer[np.arange(n)]
    assert batch.obs.shape == (n, 4, 84, 84)
    for t in range(n):
        np.testing.assert_array_equal(batch.obs[t], expected_stack(data["frames"], starts, t))
        # no stored o_{t+1}: the next row's stack, or o_t itself at an episode end
        next_t = t if done[t] else t + 1
        np.testing.assert_array_equal(
            batch.obs_next[t], expected_stack(data["frames"], starts, next_t)
        )


def test_round_trip_is_exact_and_stacks_within_episodes(tmp_path):
    data = make_episodes([5, 2, 1, 7], ["terminated", "truncated", "terminated", "terminated"])
    path = tmp_path / "buf.hdf5"
    write(path, data, expected_size=4)  # a too-small size hint only preallocates
    buffer = load_atari_buffer(path, num_actions=NUM_ACTIONS, task="BreakoutNoFrameskip-v4")
    check_buffer_matches(buffer, data)
    # episode start: the first frame four times; second step: three times, then the new frame
    obs = buffer[np.array([5, 6])].obs
    np.testing.assert_array_equal(obs[0], np.stack([data["frames"][5]] * 4))
    np.testing.assert_array_equal(obs[1], data["frames"][[5, 5, 5, 6]])
    with h5py.File(path) as file:
        assert file.attrs["format"] == "tianshou-offline-atari"
        assert file.attrs["version"] == 1 and file.attrs["stack_num"] == 4
        assert file.attrs["num_actions"] == NUM_ACTIONS and file.attrs["source"] == "test"
        assert file["frames"].compression is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buf.hdf5"]  # no temp file left


def test_unfinished_last_episode_is_marked_truncated_and_gzip_reads_back(tmp_path):
    data = make_episodes([3, 4], ["terminated", "open"])
    write(tmp_path / "buf.hdf5", data, compression="gzip", seed=7, policy={"name": "qrdqn"})
    buffer = load_atari_buffer(tmp_path / "buf.hdf5")
    data["truncated"][-1] = True
    check_buffer_matches(buffer, data)
    with h5py.File(tmp_path / "buf.hdf5") as file:
        assert file.attrs["seed"] == 7 and file.attrs["policy"] == '{"name": "qrdqn"}'


def test_several_files_concatenate_without_stacking_across_them(tmp_path):
    first = make_episodes([4, 3], ["terminated", "open"], seed=1)
    second = make_episodes([2, 5], ["truncated", "terminated"], seed=2)
    write(tmp_path / "a.hdf5", first)
    write(tmp_path / "b.hdf5", second)
    buffer = load_atari_buffer([tmp_path / "a.hdf5", str(tmp_path / "b.hdf5")])
    first["truncated"][-1] = True  # the first file's open episode ends with the file
    both = {key: np.concatenate([first[key], second[key]]) for key in first}
    check_buffer_matches(buffer, both)


def test_max_transitions_keeps_the_first_rows(tmp_path):
    first = make_episodes([4, 3], ["terminated", "terminated"], seed=1)
    second = make_episodes([6], ["terminated"], seed=2)
    write(tmp_path / "a.hdf5", first)
    write(tmp_path / "b.hdf5", second)
    buffer = load_atari_buffer([tmp_path / "a.hdf5", tmp_path / "b.hdf5"], max_transitions=9)
    both = {key: np.concatenate([first[key], second[key]])[:9].copy() for key in first}
    both["truncated"][-1] = True  # cut mid-episode
    check_buffer_matches(buffer, both)
    assert len(load_atari_buffer(tmp_path / "a.hdf5", max_transitions=100)) == 7


def fill_tianshou_buffer(buffer, data, stacked):
    """Add transitions one by one as a Collector would (obs stacked (4, 84, 84) if ``stacked``)."""
    starts = episode_starts_of(data["terminated"] | data["truncated"])
    for t in range(len(data["act"])):
        obs = expected_stack(data["frames"], starts, t) if stacked else data["frames"][t]
        batch = Batch(
            obs=obs,
            act=data["act"][t],
            rew=data["rew"][t],
            terminated=data["terminated"][t],
            truncated=data["truncated"][t],
            obs_next=obs,
            info={},
        )
        buffer.add(batch)


@pytest.mark.parametrize("save_only_last_obs", [False, True])
def test_save_atari_buffer_keeps_time_order_of_a_wrapped_buffer(tmp_path, save_only_last_obs):
    data = make_episodes([6, 5, 4], ["terminated", "truncated", "open"])
    buffer = ReplayBuffer(10, 4, ignore_obs_next=True, save_only_last_obs=save_only_last_obs)
    fill_tianshou_buffer(buffer, data, stacked=True)  # 15 adds into 10 slots: wrapped
    assert buffer._insertion_idx == 5
    save_atari_buffer(tmp_path / "b.hdf5", buffer, num_actions=NUM_ACTIONS, task="Pong", source="t")
    loaded = load_atari_buffer(tmp_path / "b.hdf5", num_actions=NUM_ACTIONS)
    kept = {key: value[5:].copy() for key, value in data.items()}  # the 10 newest transitions
    kept["truncated"][-1] = True
    check_buffer_matches(loaded, kept)


class TwoSubBuffers(ReplayBuffer):
    """Stands in for VectorReplayBuffer, which save_atari_buffer reads through its ``.buffers``.

    A real VectorReplayBuffer JIT-compiles numba code on creation (about 14 s here), too slow
    for this test file's budget; it was checked by hand to give the same result.
    """

    def __init__(self, *buffers):
        super().__init__(sum(b.maxsize for b in buffers))
        self.__dict__["buffers"] = list(buffers)


def test_save_sub_buffers_in_turn_and_load_pickle(tmp_path):
    first = make_episodes([3, 2], ["terminated", "open"], seed=3)
    second = make_episodes([4], ["terminated"], seed=4)
    subs = [ReplayBuffer(10, 4, ignore_obs_next=True, save_only_last_obs=True) for _ in "ab"]
    fill_tianshou_buffer(subs[0], first, stacked=True)
    fill_tianshou_buffer(subs[1], second, stacked=True)
    first["truncated"][-1] = True
    both = {key: np.concatenate([first[key], second[key]]) for key in first}
    buffer = TwoSubBuffers(*subs)
    save_atari_buffer(tmp_path / "v.hdf5", buffer, num_actions=NUM_ACTIONS, task="Pong", source="t")
    check_buffer_matches(load_atari_buffer(tmp_path / "v.hdf5"), both)
    with open(tmp_path / "v.pkl", "wb") as f:
        pickle.dump(subs[0], f)
    check_buffer_matches(load_atari_buffer(tmp_path / "v.pkl", num_actions=NUM_ACTIONS), first)


def test_writer_leaves_nothing_when_the_block_fails(tmp_path):
    data = make_episodes([3], ["terminated"])
    with pytest.raises(RuntimeError):
        with AtariBufferWriter(tmp_path / "x.hdf5", num_actions=4, task="Pong", source="t") as w:
            w.append(**data)
            raise RuntimeError("producer crashed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="actions must lie in"):
        with AtariBufferWriter(tmp_path / "x.hdf5", num_actions=2, task="Pong", source="t") as w:
            w.append(**data | {"act": np.array([0, 1, 2])})
    assert list(tmp_path.iterdir()) == []


def make_bad_file(path, change):
    data = make_episodes([4], ["terminated"])
    write(path, data)
    with h5py.File(path, "a") as file:
        change(file)


def replace_dataset(name, value):
    def change(file):
        del file[name]
        file[name] = value

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.attrs.__delitem__("num_actions"), r"missing attribute 'num_actions'"),
        (lambda f: f.__delitem__("rew"), r"missing dataset 'rew'"),
        (lambda f: f.attrs.__setitem__("format", "d4rl"), r"has format 'd4rl'"),
        (replace_dataset("frames", np.zeros((4, 4, 84, 84), np.uint8)), r"'frames' must be uint8"),
        (replace_dataset("frames", np.zeros((4, 84, 84), np.float32)), r"'frames' must be uint8"),
        (replace_dataset("act", np.zeros(3, np.int64)), r"'act' has shape \(3,\) but 'frames'"),
        (replace_dataset("act", np.array([0, 1, 4, 2])), r"action 4 at transition 2 is out of"),
    ],
)
def test_bad_files_are_user_errors(tmp_path, change, message):
    make_bad_file(tmp_path / "bad.hdf5", change)
    with pytest.raises(UserInputError, match=message):
        load_atari_buffer(tmp_path / "bad.hdf5")


def test_missing_corrupt_and_mismatched_files(tmp_path):
    with pytest.raises(UserInputError, match=r"buffer file .*nope.hdf5 does not exist"):
        load_atari_buffer(tmp_path / "nope.hdf5")
    (tmp_path / "text.hdf5").write_text("not hdf5 at all")
    with pytest.raises(UserInputError, match=r"text.hdf5 is not a readable HDF5 file"):
        load_atari_buffer(tmp_path / "text.hdf5")
    write(tmp_path / "good.hdf5", make_episodes([3000], ["terminated"]))
    blob = (tmp_path / "good.hdf5").read_bytes()
    (tmp_path / "cut.hdf5").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserInputError, match=r"cut.hdf5 is (not a readable HDF5 file|corrupt)"):
        load_atari_buffer(tmp_path / "cut.hdf5")
    with pytest.raises(
        UserInputError, match=r"has 4 actions but PongNoFrameskip-v4 has 6 \(the buffer was "
    ):
        load_atari_buffer(tmp_path / "good.hdf5", num_actions=6, task="PongNoFrameskip-v4")
    with pytest.raises(UserInputError, match=r"on BreakoutNoFrameskip-v4, not on ALE/Qbert"):
        load_atari_buffer(tmp_path / "good.hdf5", num_actions=4, task="ALE/Qbert-v5")
    (tmp_path / "junk.pkl").write_bytes(b"junk")
    with pytest.raises(UserInputError, match=r"junk.pkl is not a readable pickle"):
        load_atari_buffer(tmp_path / "junk.pkl")


def test_subset_function_and_command_line(tmp_path):
    data = make_episodes([4, 6], ["terminated", "terminated"])
    write(tmp_path / "full.hdf5", data, seed=3)
    write_subset(tmp_path / "full.hdf5", tmp_path / "small.hdf5", 6)
    subset = {key: value[:6].copy() for key, value in data.items()}
    subset["truncated"][-1] = True
    check_buffer_matches(load_atari_buffer(tmp_path / "small.hdf5"), subset)
    with h5py.File(tmp_path / "small.hdf5") as file:
        assert file.attrs["seed"] == 3 and file.attrs["subset_of"].endswith("full.hdf5")

    command = [sys.executable, str(SCRIPT), "subset", str(tmp_path / "full.hdf5")]
    ok = subprocess.run([*command, str(tmp_path / "cli.hdf5"), "--size", "6"], capture_output=True)
    assert ok.returncode == 0, ok.stderr
    check_buffer_matches(load_atari_buffer(tmp_path / "cli.hdf5"), subset)
    too_big = subprocess.run(
        [*command, str(tmp_path / "big.hdf5"), "--size", "11"], capture_output=True, text=True
    )
    assert too_big.returncode == 2
    assert too_big.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'full.hdf5'} has only 10 transitions, cannot take 11"
    ]
    assert not (tmp_path / "big.hdf5").exists()
