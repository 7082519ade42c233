"""RL Unplugged Atari conversion without TensorFlow: shards written by the project's own writer
(rl_unplugged_synthetic.py) are converted and checked frame by frame, corrupt shards give one
message naming the file and record, and shards download (and resume) over HTTP."""

import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from tianshou_offline.data import rl_unplugged as converter
from tianshou_offline.data.atari_buffer import load_atari_buffer
from tianshou_offline.data.rl_unplugged_writer import (
    ZERO_FRAME,
    Episode,
    encode_png,
    episode_records,
    write_shard,
)
from tianshou_offline.data.tfrecord import (
    encode_example,
    frame_record,
    masked_crc32c,
    read_gzip_tfrecords,
)
from tianshou_offline.errors import UserInputError

SCRIPT = (
    Path(__file__).resolve().parents[1] / "examples" / "offline" / "convert_rl_unplugged_atari.py"
)
GAME = "Breakout"  # 4 actions
SHARD_0 = "run_1-00000-of-00100"


def make_episode(rng, length, terminal, episode_id):
    """An episode of random frames; returns it and its frames f_0..f_T for the checks."""
    frames = rng.integers(0, 256, size=(length + 1, 84, 84), dtype=np.uint8)
    episode = Episode.from_frames(
        frames,
        actions=rng.integers(0, 4, length),
        rewards=rng.normal(size=length).astype(np.float32),
        terminal=terminal,
        episode_id=episode_id,
    )
    return episode, frames


def records_of(steps):
    """Serialized records of (episode, frames, step) triples, in the given order."""
    return [next(episode_records(episode, [t])) for episode, _, t in steps]


def expected_columns(steps):
    """What the converter must write for these records (see the converter's docstring)."""
    rows = len(steps)
    columns = {
        "frames": np.stack([frames[t] for _, frames, t in steps]),
        "act": np.array([episode.actions[t] for episode, _, t in steps]),
        "rew": np.array([episode.rewards[t] for episode, _, t in steps], np.float32),
        "terminated": np.array(
            [episode.terminal and t == len(episode.actions) - 1 for episode, _, t in steps]
        ),
    }
    starts = np.ones(rows, bool)
    for i in range(1, rows):
        (previous, _, previous_t), (episode, _, t) = steps[i - 1], steps[i]
        starts[i] = columns["terminated"][i - 1] or episode is not previous or t != previous_t + 1
    next_starts = np.append(starts[1:], True)
    columns["truncated"] = next_starts & ~columns["terminated"]
    columns["starts"] = starts
    return columns


def check_converted(buffer, steps):
    expected = expected_columns(steps)
    for key in ("act", "rew", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(buffer, key), expected[key], err_msg=key)
    np.testing.assert_array_equal(buffer.obs, expected["frames"])
    stacked = buffer[np.arange(len(steps))].obs
    segment_start = 0
    for row, (episode, frames, t) in enumerate(steps):
        if expected["starts"][row]:
            segment_start = row
        rows = [max(segment_start, row - k) for k in (3, 2, 1, 0)]
        np.testing.assert_array_equal(stacked[row], expected["frames"][rows])
        if row - segment_start >= t >= 3:  # the full history is in the file: exactly o_t
            np.testing.assert_array_equal(stacked[row], frames[t - 3 : t + 1])
        if t == 0:  # recorded o_t is zero-padded; the buffer repeats f_0 like the env wrapper
            np.testing.assert_array_equal(stacked[row], np.stack([frames[0]] * 4))


def convert(tmp_path, *shard_ids, workers=0, extra=()):
    return converter.main(
        [
            *("--task", GAME, "--run-id", "1", "--shard-id", *shard_ids),
            *("--dataset-dir", str(tmp_path / "datasets"), "--buffer-dir", str(tmp_path / "buf")),
            *("--num-workers", str(workers), *extra),
        ]
    )


def shard_file(tmp_path, shard_id=0):
    path = tmp_path / "datasets" / GAME / converter.shard_name(1, shard_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def buffer_file(tmp_path, shard_id=0):
    return tmp_path / "buf" / GAME / f"{converter.shard_name(1, shard_id)}.hdf5"


@pytest.fixture
def two_shards(tmp_path):
    """Shard 0: full episodes (terminal, cut at a time limit, a gap of missing records);
    shard 1 starts in the middle of an episode. Returns the (episode, frames, step) lists."""
    rng = np.random.default_rng(0)
    first, first_frames = make_episode(rng, 7, True, 11)
    cut, cut_frames = make_episode(rng, 5, False, -(2**62))  # ids are bit-cast uint64
    gappy, gappy_frames = make_episode(rng, 9, True, 13)
    last, last_frames = make_episode(rng, 8, False, 14)
    shard_0 = (
        [(first, first_frames, t) for t in range(7)]
        + [(cut, cut_frames, t) for t in range(5)]
        + [(gappy, gappy_frames, t) for t in (0, 1, 2, 3, 4, 7, 8)]  # 5 and 6 are missing
        + [(last, last_frames, t) for t in range(3)]  # the shard ends mid-episode
    )
    shard_1 = [(last, last_frames, t) for t in range(3, 8)]  # ... and the next starts there
    write_shard(shard_file(tmp_path, 0), records_of(shard_0))
    write_shard(shard_file(tmp_path, 1), records_of(shard_1))
    return shard_0, shard_1


def test_converts_frame_by_frame_across_batches_and_shards(tmp_path, two_shards, monkeypatch):
    shard_0, shard_1 = two_shards
    monkeypatch.setattr(converter, "BATCH_SIZE", 4)  # boundaries fall on batch edges too
    results = convert(tmp_path, "0-1")
    stats = [result[1] for result in results]
    assert [s.transitions for s in stats] == [len(shard_0), len(shard_1)]
    assert [(s.episodes, s.terminals, s.discontinuities) for s in stats] == [(5, 2, 1), (1, 0, 0)]
    check_converted(load_atari_buffer(buffer_file(tmp_path, 0), num_actions=4), shard_0)
    check_converted(load_atari_buffer(buffer_file(tmp_path, 1), num_actions=4), shard_1)
    # both shards as one buffer: the same rows, never stacked across the shard boundary
    both = load_atari_buffer(
        [buffer_file(tmp_path, 0), buffer_file(tmp_path, 1)], num_actions=4, task="Breakout"
    )
    expected_0, expected_1 = expected_columns(shard_0), expected_columns(shard_1)
    for key in ("frames", "act", "rew", "terminated", "truncated"):
        stored = both.obs if key == "frames" else getattr(both, key)
        np.testing.assert_array_equal(stored, np.concatenate([expected_0[key], expected_1[key]]))
    first_of_shard_1 = both[np.array([len(shard_0)])].obs[0]
    np.testing.assert_array_equal(first_of_shard_1, np.stack([expected_1["frames"][0]] * 4))


def test_worker_processes_give_the_same_file(tmp_path, two_shards):
    convert(tmp_path, "0", workers=0)
    inline = load_atari_buffer(buffer_file(tmp_path), num_actions=4)
    convert(tmp_path, "0", workers=2, extra=["--overwrite"])
    pooled = load_atari_buffer(buffer_file(tmp_path), num_actions=4)
    for key in ("obs", "act", "rew", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(pooled, key), getattr(inline, key))
    check_converted(pooled, two_shards[0])


def test_existing_output_is_skipped(tmp_path, two_shards, capsys):
    convert(tmp_path, "1")
    assert convert(tmp_path, "1") == []
    assert "exists, skipped" in capsys.readouterr().out


def test_frames_that_are_equal_but_encoded_differently_still_continue(tmp_path):
    """Continuity is decided by pixels: a re-encoded PNG of the same frame is no gap."""
    rng = np.random.default_rng(1)
    episode, frames = make_episode(rng, 6, True, 5)
    recoded = cv2.imencode(".png", frames[2], [cv2.IMWRITE_PNG_COMPRESSION, 0])[1].tobytes()
    assert recoded != episode.pngs[2]
    records = records_of([(episode, frames, t) for t in range(6)])
    episode.pngs = [recoded if i == 2 else png for i, png in enumerate(episode.pngs)]
    records[3] = next(episode_records(episode, [3]))  # its o_t holds the re-encoded f_2
    write_shard(shard_file(tmp_path), records)
    ((_, stats, _),) = convert(tmp_path, "0")
    assert (stats.episodes, stats.discontinuities) == (1, 0)


# ---- bad input: one message naming the file and the record, exit code 2, no output ----


def good_records(count=6, seed=2):
    episode, frames = make_episode(np.random.default_rng(seed), count, True, 1)
    return records_of([(episode, frames, t) for t in range(count)])


def example_without(record_features, key):
    return encode_example({k: v for k, v in record_features.items() if k != key})


def features_of(step=1, seed=2, **changes):
    episode, frames = make_episode(np.random.default_rng(seed), 6, True, 1)
    zero = encode_png(ZERO_FRAME)
    stack = [episode.pngs[i] if i >= 0 else zero for i in range(step - 3, step + 1)]
    features = {
        "o_t": stack,
        "o_tp1": stack[1:] + [episode.pngs[step + 1]],
        "a_t": [1],
        "a_tp1": [2],
        "r_t": [0.0],
        "d_t": [1.0],
        "episode_id": [1],
        "episode_return": [0.0],
    }
    features.update(changes)
    return features


def gzip_bytes(raw):
    return gzip.compress(raw, compresslevel=6)


def bad_shards():
    """(name, file bytes, expected message) for each kind of corruption."""
    records = good_records()
    framed = [frame_record(record) for record in records]
    shard = gzip_bytes(b"".join(framed))

    flipped = bytearray(framed[2])
    flipped[40] ^= 0xFF  # inside record 2's data
    small = encode_png(np.zeros((80, 80), np.uint8))
    not_png = converter.PNG_PREFIX + b"junk"  # the right header, then garbage
    return [
        ("truncated_gzip", shard[: len(shard) * 2 // 3], r"record \d: the GZIP stream ends early"),
        (
            "crc_mismatch",
            gzip_bytes(b"".join(framed[:2]) + bytes(flipped) + b"".join(framed[3:])),
            r"record 2: CRC mismatch in the record data",
        ),
        (
            "missing_feature",
            gzip_bytes(b"".join(framed[:3]) + frame_record(example_without(features_of(), "d_t"))),
            r"record 3: missing feature\(s\) d_t",
        ),
        (
            "png_wrong_size",
            gzip_bytes(framed[0] + frame_record(encode_example(features_of(o_t=[small] * 4)))),
            r"record 1: a frame of o_t or o_tp1 is not an 84x84 8-bit grayscale PNG",
        ),
        (
            "undecodable_png",
            gzip_bytes(
                b"".join(framed[:4]) + frame_record(encode_example(features_of(o_t=[not_png] * 4)))
            ),
            r"record 4: the newest frame of o_t is not a decodable 84x84 grayscale PNG",
        ),
        (
            "action_out_of_range",
            gzip_bytes(framed[0] + frame_record(encode_example(features_of(a_t=[4])))),
            r"record 1: action 4 is out of range \[0, 4\)",
        ),
        (
            "scalar_list",
            gzip_bytes(frame_record(encode_example(features_of(r_t=[0.0, 1.0])))),
            r"record 0: feature 'r_t' must hold 1 float_list value\(s\), not 2",
        ),
        ("not_gzip", b"this is not a shard\n" * 10, r"record 0: not a GZIP file"),
        ("empty", b"", r"record 0: the file is empty"),
        (
            "not_tfrecord",
            gzip_bytes(b"plain text, gzip-compressed\n" * 10),
            r"record 0: CRC mismatch in the record length \(not a TFRecord file or corrupt\)",
        ),
        (
            "not_example",
            gzip_bytes(frame_record(b"\xff\xff\xff")),
            r"record 0: not a tf.train.Example",
        ),
    ]


@pytest.mark.parametrize("name, content, message", bad_shards(), ids=[b[0] for b in bad_shards()])
def test_bad_shard_gives_one_message_and_no_output(tmp_path, name, content, message):
    source = shard_file(tmp_path)
    source.write_bytes(content)
    with pytest.raises(UserInputError, match=rf"^{source}: {message}") as caught:
        convert(tmp_path, "0", workers=0)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "buf" / GAME).exists() or list((tmp_path / "buf" / GAME).iterdir()) == []


def test_bad_shard_on_the_command_line_exits_2(tmp_path):
    """Through the real command line with worker processes: the PNG the workers fail on."""
    name, content, message = next(b for b in bad_shards() if b[0] == "undecodable_png")
    shard_file(tmp_path).write_bytes(content)
    command = [sys.executable, str(SCRIPT), "--task", "BreakoutNoFrameskip-v4", "--shard-id", "0"]
    command += ["--dataset-dir", str(tmp_path / "datasets")]
    command += ["--buffer-dir", str(tmp_path / "buf")]
    result = subprocess.run([*command, "--num-workers", "2"], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {shard_file(tmp_path)}: record 4: ")
    assert list((tmp_path / "buf" / GAME).iterdir()) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(UserInputError, match="unknown RL Unplugged Atari game 'Tetris'"):
        converter.main(["--task", "Tetris"])
    with pytest.raises(UserInputError, match="shard ids run from 0 to 99"):
        converter.main(["--task", "Pong", "--shard-id", "98-100"])
    with pytest.raises(UserInputError, match="runs are numbered 1 to 5"):
        converter.main(["--task", "Pong", "--run-id", "6"])
    assert converter.parse_shard_ids(["3", "0-2", "2"]) == [3, 0, 1, 2]
    assert converter.game_name("ALE/MsPacman-v5") == "MsPacman"


def test_tfrecord_reader_checks_and_streams(tmp_path):
    records = [bytes([i]) * (i * 1000) for i in range(1, 30)]
    path = tmp_path / "many.gz"
    two_members = gzip_bytes(b"".join(map(frame_record, records[:10])))
    two_members += gzip_bytes(b"".join(map(frame_record, records[10:])))  # like `cat a.gz b.gz`
    path.write_bytes(two_members)
    assert list(read_gzip_tfrecords(path, chunk_size=777)) == records
    # CRC32C (Castagnoli) of the standard check string is 0xE3069283; masked by hand:
    # rotate right by 15 -> 0x2507C60D, plus 0xA282EAD8 -> 0xC78AB0E5
    assert masked_crc32c(b"123456789") == 0xC78AB0E5


# ---- downloads from a local HTTP server (Range requests for resuming) ----


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with "Range: bytes=N-" support; can break the first transfer midway."""

    ranges: list = []
    break_after: int | None = None

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        requested = self.headers.get("Range")
        type(self).ranges.append(requested)
        start = int(requested.removeprefix("bytes=").rstrip("-")) if requested else 0
        self.send_response(206 if requested else 200)
        if requested:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if type(self).break_after is not None:
            body, type(self).break_after = body[: type(self).break_after], None
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    RangeHandler.ranges, RangeHandler.break_after = [], None
    handler = lambda *a, **k: RangeHandler(*a, directory=str(served), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RL_UNPLUGGED_URL_BASE", f"http://127.0.0.1:{httpd.server_address[1]}/")
    yield served
    httpd.shutdown()
    httpd.server_close()


def test_download_then_convert(tmp_path, server):
    (server / GAME).mkdir()
    write_shard(server / GAME / SHARD_0, good_records())
    convert(tmp_path, "0")
    assert shard_file(tmp_path).read_bytes() == (server / GAME / SHARD_0).read_bytes()
    assert len(load_atari_buffer(buffer_file(tmp_path), num_actions=4)) == 6


def test_interrupted_download_resumes_to_the_exact_bytes(tmp_path, server):
    (server / GAME).mkdir()
    write_shard(server / GAME / SHARD_0, good_records(count=60), compresslevel=0)
    original = (server / GAME / SHARD_0).read_bytes()
    RangeHandler.break_after = len(original) // 3
    with pytest.raises(UserInputError, match="run the command again to resume"):
        convert(tmp_path, "0")
    part = shard_file(tmp_path).with_name(SHARD_0 + ".part")
    assert part.stat().st_size == len(original) // 3 and not shard_file(tmp_path).exists()
    convert(tmp_path, "0")
    assert RangeHandler.ranges == [None, f"bytes={len(original) // 3}-"]
    assert shard_file(tmp_path).read_bytes() == original
    assert len(load_atari_buffer(buffer_file(tmp_path), num_actions=4)) == 60


def test_no_network_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RL_UNPLUGGED_URL_BASE", "http://127.0.0.1:9/rl_unplugged/atari")
    with pytest.raises(UserInputError, match=rf"put it at {shard_file(tmp_path)}"):
        convert(tmp_path, "0")


# ---- end to end: an offline Atari script trains on a converted shard ----


def test_atari_bcq_trains_a_few_steps_on_a_converted_shard(tmp_path):
    rng = np.random.default_rng(3)
    steps = []
    for episode_id, length in enumerate((30, 25)):
        episode, frames = make_episode(rng, length, True, episode_id)
        steps += [(episode, frames, t) for t in range(length)]
    write_shard(shard_file(tmp_path), records_of(steps))
    convert(tmp_path, "0")
    command = [sys.executable, str(SCRIPT.with_name("atari_bcq.py"))]
    command += ["--task", "BreakoutNoFrameskip-v4", "--buffer-from-rl-unplugged"]
    command += ["--load-buffer-name", str(buffer_file(tmp_path))]
    command += ["--epoch", "1", "--epoch-num-steps", "3", "--batch-size", "4", "--test-num", "1"]
    command += ["--max-episode-steps", "10", "--device", "cpu", "--no-progress"]
    command += ["--run-dir", str(tmp_path / "run")]
    # Tianshou's numba functions would take a minute to compile; run them as Python here.
    environment = {**os.environ, "NUMBA_DISABLE_JIT": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"loaded 55 transitions from {buffer_file(tmp_path)}" in result.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["gradient_steps"] == 3
