"""Convert DeepMind RL Unplugged Atari shards to this collection's Atari buffer files.

No TensorFlow: the GZIP-compressed TFRecord files are read by ``data.tfrecord`` (every CRC is
checked), the ``tf.train.Example`` records are parsed with the ``protobuf`` package, and the PNG
frames are decoded with OpenCV.

    python examples/offline/convert_rl_unplugged_atari.py --task Breakout --run-id 1 --shard-id 1
    python examples/offline/convert_rl_unplugged_atari.py --task Pong --shard-id 0-4 --num-workers 2

The data
--------
RL Unplugged Atari (https://arxiv.org/abs/2006.13888) holds the 50M transitions that Dopamine's
DQN (sticky actions) saw while training, per game and run (1-5), split into 100 shards of about
500k transitions: ``<game>/run_<run_id>-<shard_id:05d>-of-00100``, downloaded from
``$RL_UNPLUGGED_URL_BASE`` (default https://storage.googleapis.com/rl_unplugged/atari) into
``--dataset-dir`` unless already there. Each record is one transition with features ``o_t`` and
``o_tp1`` (4 PNG-encoded 84x84 grayscale frames each, oldest first), ``a_t``, ``a_tp1``,
``r_t`` (reward after a_t), ``d_t`` (discount after a_t: 0 when the game ended), ``episode_id``
and ``episode_return``. Episodes are cut at 108,000 steps (discount stays 1 there).

How records become buffer rows (see ``data.atari_buffer`` for the file format)
-----------------------------------------------------------------------------
Row t of ``<buffer-dir>/<game>/run_<run_id>-<shard_id:05d>-of-00100.hdf5`` is record t:
``frames[t]`` = the newest frame of o_t, ``act`` = a_t, ``rew`` = r_t as recorded (not
clipped), ``terminated`` = (d_t == 0). A new episode starts at record t+1 when record t is
terminal, when the ``episode_id`` changes, or when record t+1's o_t does not continue record t's
(its second-newest frame is not record t's newest frame: missing records); record t is then
marked ``truncated`` unless it is terminal; so is the shard's last record.

At sampling, ``load_atari_buffer`` stacks ``frames[t-3..t]`` within an episode and repeats an
episode's first frame before its start. So inside an episode the stacked obs equals the
recorded o_t exactly. At an episode start the recorded o_t is zero-padded by Dopamine
(``[0, 0, 0, f0]``), while the buffer gives ``[f0, f0, f0, f0]`` -- what Tianshou's frame-stack
wrapper feeds the agent after ``reset``, so training and evaluation see the same kind of input.
A shard that starts mid-episode loses the (up to 3) frames before its first record: its first
three rows see the first frame repeated instead. o_tp1 is not stored: for a non-final row it is
the next row's stacked obs (exact), for a terminal row it does not matter, and for a truncated
row (episode cut or shard end) the buffer's obs_next is o_t, the format's one approximation.

Speed
-----
Consecutive records share 7 of their 8 frames, so only the newest frame of each o_t is
decoded (once per distinct frame); the other 7 PNGs are checked by their headers only. The
shard is streamed: a thread inflates it (zlib runs without the GIL) while the main thread
checks CRCs, parses the protobufs (``protobuf``'s C parser: about 13 us a record, as fast as a
hand-written wire-format parser in Python measured) and decides the episode boundaries;
``--num-workers`` processes decode batches of 2048 PNGs (cv2.imdecode, about 50 us a frame,
the largest cost) straight into shared memory, from which the main thread writes the file.
See benchmarks/README.md ("RL Unplugged converter") for measured times.

Bad input (a truncated or corrupt file, a CRC mismatch, a record without a needed feature, a
frame that is not an 84x84 grayscale PNG, an action out of range) stops the conversion with one
line naming the file and the record index, exit code 2; the output file appears only when the
whole shard converted.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import cv2
import numpy as np
from google.protobuf.message import DecodeError

from tianshou_offline.data.atari_buffer import AtariBufferWriter
from tianshou_offline.data.tfrecord import Example, TFRecordError, read_gzip_tfrecords
from tianshou_offline.errors import UserInputError
from tianshou_offline.files import check_directory, download, make_directory

DEFAULT_URL_BASE = "https://storage.googleapis.com/rl_unplugged/atari"
NUM_SHARDS = 100
RUN_IDS = range(1, 6)
# The 45 games of RL Unplugged Atari: the 9 tuning games, then the 36 testing games.
GAMES = tuple(
    (
        "BeamRider DemonAttack DoubleDunk IceHockey MsPacman Pooyan RoadRunner Robotank Zaxxon "
        "Alien Amidar Assault Asterix Atlantis BankHeist BattleZone Boxing Breakout Carnival "
        "Centipede ChopperCommand CrazyClimber Enduro FishingDerby Freeway Frostbite Gopher "
        "Gravitar Hero Jamesbond Kangaroo Krull KungFuMaster NameThisGame Phoenix Pong Qbert "
        "Riverraid Seaquest SpaceInvaders StarGunner TimePilot UpNDown VideoPinball WizardOfWor "
        "YarsRevenge"
    ).split()
)
FEATURES = ("o_t", "o_tp1", "a_t", "a_tp1", "r_t", "d_t", "episode_id", "episode_return")
FRAME_SHAPE = (84, 84)
# Every 84x84 8-bit grayscale PNG starts with the signature and this IHDR chunk header.
PNG_PREFIX = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + (84).to_bytes(4, "big") * 2 + b"\x08\x00"
# A bad PNG is reported once, with its record index, by this script; OpenCV should not add its
# own warnings (this also runs in every worker process, which imports this module).
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
BATCH_SIZE = 2048  # records per decoding job: amortizes the inter-process overhead
MAX_JOBS_IN_FLIGHT = 6  # decoding jobs queued ahead of the writer
FRAME_BYTES = FRAME_SHAPE[0] * FRAME_SHAPE[1]
SLOT_BYTES = BATCH_SIZE * FRAME_BYTES  # the frames of one batch: 14 MB


def shard_name(run_id: int, shard_id: int) -> str:
    return f"run_{run_id}-{shard_id:05d}-of-{NUM_SHARDS:05d}"


def game_name(task: str) -> str:
    """'Breakout', 'BreakoutNoFrameskip-v4' and 'ALE/Breakout-v5' all name 'Breakout'."""
    name = task.split("/")[-1].split("-v")[0].removesuffix("NoFrameskip")
    for game in GAMES:
        if game.lower() == name.lower():
            return game
    raise UserInputError(
        f"unknown RL Unplugged Atari game {task!r}; choose one of {', '.join(GAMES)}"
    )


def num_actions_of(game: str) -> int:
    """Size of the game's minimal action set, used by Dopamine and by the NoFrameskip envs."""
    import ale_py

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.loadROM(ale_py.roms.get_rom_path(re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()))
    return len(ale.getMinimalActionSet())


def parse_shard_ids(values: Iterable[str]) -> list[int]:
    """'1 2 3', '1-3' or a mix of both; each id in [0, 99]."""
    shard_ids: list[int] = []
    for value in values:
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", value)
        if not match:
            raise UserInputError(f"--shard-id {value!r}: give numbers (3) or ranges (0-9)")
        first, last = int(match[1]), int(match[2] or match[1])
        if not 0 <= first <= last < NUM_SHARDS:
            raise UserInputError(f"--shard-id {value!r}: shard ids run from 0 to {NUM_SHARDS - 1}")
        shard_ids.extend(i for i in range(first, last + 1) if i not in shard_ids)
    return shard_ids


class BadRecord(Exception):
    """A record of the shard is unusable; ``index`` is its position in the shard (0-based)."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"record {index}: {reason}")
        self.index = index


@dataclass
class RecordBatch:
    """Consecutive records: the PNG of each o_t's newest frame, and the other buffer columns."""

    first_index: int
    pngs: list[bytes] = field(default_factory=list)
    act: list[int] = field(default_factory=list)
    rew: list[float] = field(default_factory=list)
    terminated: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)


@dataclass
class ShardStats:
    transitions: int = 0
    episodes: int = 0  # episode starts in the file (the first record starts one)
    terminals: int = 0  # records with d_t == 0
    discontinuities: int = 0  # same episode id, but o_t does not continue the previous record
    worker_cpu_seconds: float = 0.0  # CPU time of the decoding worker processes


def decode_png(png: bytes) -> np.ndarray | None:
    """The 84x84 grayscale frame of a PNG, or None if it is not one."""
    frame = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    return frame if frame is not None and frame.shape == FRAME_SHAPE else None


def decode_frames_into(frames: np.ndarray, pngs: list[bytes]) -> int | None:
    """Decode PNGs into ``frames[:len(pngs)]``; return the position of the first bad one."""
    for position, png in enumerate(pngs):
        frame = decode_png(png)
        if frame is None:
            return position
        frames[position] = frame
    return None


_worker_memory: dict[str, SharedMemory] = {}  # a worker's attachment to the frame slots


def decode_into_slot(memory_name: str, slot: int, pngs: list[bytes]) -> tuple[int | None, float]:
    """Run in a worker process: decode a batch into a slot of the shared frame memory.

    Returns the position of the first bad PNG (if any) and the CPU seconds spent, so that the
    main process can report the total CPU time.
    """
    start = time.process_time()
    if memory_name not in _worker_memory:
        _worker_memory[memory_name] = SharedMemory(memory_name)
    frames = _slot_frames(_worker_memory[memory_name], slot)
    return decode_frames_into(frames, pngs), time.process_time() - start


def _slot_frames(memory: SharedMemory, slot: int) -> np.ndarray:
    """The frames array of one slot (room for a batch) of the shared memory."""
    shape = (SLOT_BYTES // FRAME_BYTES, *FRAME_SHAPE)
    return np.ndarray(shape, np.uint8, memory.buf, offset=slot * SLOT_BYTES)


class FrameDecoder:
    """Decodes batches of PNGs in worker processes (or inline with 0 workers), in order.

    The workers write the frames straight into slots of a shared memory block, from which the
    main process writes them to the file: 14 MB a batch that need not go through pipes.
    ``submit`` may run ``MAX_JOBS_IN_FLIGHT`` batches ahead of ``result``.
    """

    def __init__(self, num_workers: int) -> None:
        self.num_slots = MAX_JOBS_IN_FLIGHT + 1
        self.memory = SharedMemory(create=True, size=self.num_slots * SLOT_BYTES)
        self.slots = [_slot_frames(self.memory, slot) for slot in range(self.num_slots)]
        # forkserver: workers start from a clean process, not a fork of one with open files
        context = multiprocessing.get_context("forkserver")
        self.pool = context.Pool(num_workers) if num_workers > 0 else None
        self.next_slot = 0
        self.worker_cpu_seconds = 0.0

    def submit(self, pngs: list[bytes]) -> tuple[int, object]:
        slot, self.next_slot = self.next_slot, (self.next_slot + 1) % self.num_slots
        if self.pool is None:
            return slot, decode_frames_into(self.slots[slot], pngs)
        job = self.pool.apply_async(decode_into_slot, (self.memory.name, slot, pngs))
        return slot, job

    def result(self, job: tuple[int, object], size: int) -> tuple[np.ndarray, int | None]:
        """The decoded frames of a submitted batch (a view, valid until its slot is reused)."""
        slot, outcome = job
        if self.pool is not None:
            outcome, cpu_seconds = outcome.get()
            self.worker_cpu_seconds += cpu_seconds
        return self.slots[slot][:size], outcome

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
        del self.slots  # the memory can only be closed once no array uses it
        self.memory.close()
        self.memory.unlink()


def _same_pixels(png_a: bytes, png_b: bytes) -> bool:
    """Equal PNG bytes mean equal frames (the usual case); otherwise compare the pixels."""
    if png_a == png_b:
        return True
    frame_a, frame_b = decode_png(png_a), decode_png(png_b)
    return frame_a is not None and frame_b is not None and np.array_equal(frame_a, frame_b)


def _explain_bad_example(data: bytes, index: int) -> BadRecord:
    """Say precisely what is wrong with a record that failed the quick checks."""
    features = Example.FromString(data).features.feature
    missing = [key for key in FEATURES if key not in features]
    if missing:
        return BadRecord(index, f"missing feature(s) {', '.join(missing)}")
    expected = {"o_t": ("bytes_list", 4), "o_tp1": ("bytes_list", 4), "a_t": ("int64_list", 1)}
    expected.update({key: ("float_list", 1) for key in ("r_t", "d_t")})
    expected["episode_id"] = ("int64_list", 1)
    for key, (kind, count) in expected.items():
        found = len(getattr(features[key], kind).value)
        if found != count:
            return BadRecord(
                index, f"feature {key!r} must hold {count} {kind} value(s), not {found}"
            )
    return BadRecord(index, "a frame of o_t or o_tp1 is not an 84x84 8-bit grayscale PNG")


def parse_records(
    records: Iterable[bytes], num_actions: int, stats: ShardStats
) -> Iterator[RecordBatch]:
    """Parse and check the records, find the episode boundaries, and group them into batches.

    Whether record t is truncated depends on record t+1, so a full batch is held back until
    the first record of the next one has been seen.
    """
    batch, held = RecordBatch(first_index=0), None
    previous_newest, previous_episode, previous_terminal = b"", 0, False
    index = -1
    for index, data in enumerate(records):
        # The fast path (about 13 us a record): read the features used, then check them all at
        # once; only a bad record is examined again to say what is wrong with it.
        try:
            features = Example.FromString(data).features.feature
        except DecodeError as err:
            raise BadRecord(index, f"not a tf.train.Example protobuf ({err})") from err
        o_t = list(features["o_t"].bytes_list.value)
        o_tp1 = features["o_tp1"].bytes_list.value
        actions = features["a_t"].int64_list.value
        rewards = features["r_t"].float_list.value
        discounts = features["d_t"].float_list.value
        episodes = features["episode_id"].int64_list.value
        well_formed = (
            len(o_t) == 4
            and len(o_tp1) == 4
            and len(actions) == len(rewards) == len(discounts) == len(episodes) == 1
            and "a_tp1" in features
            and "episode_return" in features
            and all(png.startswith(PNG_PREFIX) for png in o_t)
            and all(png.startswith(PNG_PREFIX) for png in o_tp1)
        )
        if not well_formed:
            raise _explain_bad_example(data, index)
        action, reward, episode = actions[0], rewards[0], episodes[0]
        terminal = discounts[0] == 0.0
        if not 0 <= action < num_actions:
            raise BadRecord(index, f"action {action} is out of range [0, {num_actions})")

        if index == 0:
            starts_episode = True
        elif previous_terminal or episode != previous_episode:
            starts_episode = True
        elif _same_pixels(o_t[2], previous_newest):
            starts_episode = False
        else:  # records are missing in between: the frames do not continue
            starts_episode = True
            stats.discontinuities += 1
        if starts_episode:
            stats.episodes += 1
            if index > 0 and not previous_terminal:
                (batch if batch.act else held).truncated[-1] = True
        if held is not None:  # its last row's flags are final now
            yield held
            held = None

        batch.pngs.append(o_t[3])
        batch.act.append(action)
        batch.rew.append(reward)
        batch.terminated.append(terminal)
        batch.truncated.append(False)
        stats.terminals += terminal
        previous_newest, previous_episode, previous_terminal = o_t[3], episode, terminal
        if len(batch.act) == BATCH_SIZE:
            held, batch = batch, RecordBatch(first_index=index + 1)
    stats.transitions = index + 1
    last = batch if batch.act else held
    if last is not None and not previous_terminal:
        last.truncated[-1] = True  # the shard ends inside an episode
    for remaining in (held, batch):
        if remaining is not None and remaining.act:
            yield remaining


def convert_shard(
    source: Path,
    destination: Path,
    *,
    game: str,
    num_actions: int,
    decoder: FrameDecoder,
    **provenance: object,
) -> ShardStats:
    """Convert one shard file; ``destination`` appears only if the whole shard is good."""
    stats = ShardStats()
    in_flight: collections.deque = collections.deque()  # (batch, decoding job), oldest first
    worker_cpu_at_start = decoder.worker_cpu_seconds
    try:
        with AtariBufferWriter(
            destination,
            num_actions=num_actions,
            task=game,
            source="rl_unplugged",
            source_file=source.name,
            **provenance,
        ) as writer:

            def write_oldest() -> None:
                batch, job = in_flight.popleft()
                frames, bad_position = decoder.result(job, len(batch.act))
                if bad_position is not None:
                    raise BadRecord(
                        batch.first_index + bad_position,
                        "the newest frame of o_t is not a decodable 84x84 grayscale PNG",
                    )
                writer.append(frames, batch.act, batch.rew, batch.terminated, batch.truncated)

            for batch in parse_records(read_gzip_tfrecords(source), num_actions, stats):
                in_flight.append((batch, decoder.submit(batch.pngs)))
                while len(in_flight) > MAX_JOBS_IN_FLIGHT:
                    write_oldest()
            while in_flight:
                write_oldest()
            if stats.transitions == 0:
                raise BadRecord(0, "the shard holds no records")
    except (TFRecordError, BadRecord) as err:
        raise UserInputError(
            f"{source}: {err}; no output written (delete the file to download it again)"
        ) from err
    finally:
        for _, job in in_flight:  # let jobs still running finish before their slots are reused
            decoder.result(job, 0)
    stats.worker_cpu_seconds = decoder.worker_cpu_seconds - worker_cpu_at_start
    return stats


def shard_path(dataset_dir: Path, game: str, run_id: int, shard_id: int) -> Path:
    """The shard file, downloaded first (resumable) unless it is already there."""
    path = dataset_dir / game / shard_name(run_id, shard_id)
    if path.is_file():
        return path
    url_base = os.environ.get("RL_UNPLUGGED_URL_BASE", DEFAULT_URL_BASE).rstrip("/")
    url = f"{url_base}/{game}/{shard_name(run_id, shard_id)}"
    return download(
        url,
        path,
        resume=True,
        what_to_do_offline=f"Without network access, fetch {url} elsewhere and put it at {path}.",
    )


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert RL Unplugged Atari shards into Atari buffer files (atari_buffer.py).",
        epilog="A shard that starts in the middle of an episode: its first record's o_t holds "
        "up to 3 earlier frames, which the buffer file does not keep (it stores one frame a "
        "row), so the first 3 rows stack the shard's first frame repeated in their place.",
    )
    parser.add_argument("--task", required=True, help="game: Breakout or BreakoutNoFrameskip-v4")
    parser.add_argument("--run-id", type=int, default=1, help="training run, 1 to 5")
    parser.add_argument(
        "--shard-id", nargs="+", default=["0"], help="shard ids 0-99: e.g. 1, 1 2 3 or 0-9"
    )
    parser.add_argument("--dataset-dir", type=Path, default=Path("~/.rl_unplugged/datasets"))
    parser.add_argument("--buffer-dir", type=Path, default=Path("~/.rl_unplugged/buffers"))
    parser.add_argument(
        "--num-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes decoding PNGs besides the main process (0: decode in the main process)",
    )
    parser.add_argument("--overwrite", action="store_true", help="convert shards already converted")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[tuple[Path, ShardStats, float]]:
    args = get_args(argv)
    game = game_name(args.task)
    if args.run_id not in RUN_IDS:
        raise UserInputError(f"--run-id {args.run_id}: runs are numbered 1 to 5")
    if args.num_workers < 0:
        raise UserInputError("--num-workers must be 0 or more")
    shard_ids = parse_shard_ids(args.shard_id)
    num_actions = num_actions_of(game)
    dataset_dir, buffer_dir = args.dataset_dir.expanduser(), args.buffer_dir.expanduser()
    check_directory(dataset_dir / game, "--dataset-dir")  # before any download or decoding
    make_directory(buffer_dir / game, "--buffer-dir")
    results = []
    decoder = None
    try:
        for shard_id in shard_ids:
            destination = buffer_dir / game / f"{shard_name(args.run_id, shard_id)}.hdf5"
            if destination.exists() and not args.overwrite:
                print(f"{destination} exists, skipped (--overwrite converts it again)", flush=True)
                continue
            source = shard_path(dataset_dir, game, args.run_id, shard_id)
            decoder = decoder or FrameDecoder(args.num_workers)
            start, start_cpu = time.perf_counter(), time.process_time()
            stats = convert_shard(
                source,
                destination,
                game=game,
                num_actions=num_actions,
                decoder=decoder,
                run_id=args.run_id,
                shard_id=shard_id,
            )
            seconds = time.perf_counter() - start
            main_cpu_seconds = time.process_time() - start_cpu
            cpu_seconds = main_cpu_seconds + stats.worker_cpu_seconds
            print(
                f"{destination}: {stats.transitions} transitions, {stats.episodes} episodes "
                f"({stats.terminals} ended by the game, {stats.discontinuities} gaps), "
                f"{seconds:.1f} s ({stats.transitions / seconds:.0f} transitions/s; "
                f"{cpu_seconds:.1f} CPU-seconds = {main_cpu_seconds:.1f} main process + "
                f"{stats.worker_cpu_seconds:.1f} in {args.num_workers} workers)",
                flush=True,
            )
            results.append((destination, stats, seconds))
    finally:
        if decoder is not None:
            decoder.close()
    return results
