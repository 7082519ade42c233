#!/usr/bin/env python3
"""Time convert_rl_unplugged_atari.py on a full-size synthetic RL Unplugged shard.

The shard (default 500k records, like a real one) is written by the project's own writer
(examples/offline/rl_unplugged_synthetic.py) from real Atari frames: a pool of frames played
by a random policy in ale-py with sticky actions, preprocessed like DQN's (grayscale, 84x84),
so the PNGs have realistic sizes (SpaceInvaders: about 1.7 KB). Episodes of 300-3000 steps
walk through the pool; most end with the game (d_t = 0), some are cut. The shard is cached in
--work-dir, so later runs only time the conversion, which runs as the real command line.

    python benchmarks/bench_convert_rl_unplugged.py --num-workers 0 1 2
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np

from tianshou_offline.data.rl_unplugged_writer import (
    Episode,
    encode_png,
    episode_records,
    write_shard,
)

REPO = Path(__file__).resolve().parents[1]

CONVERTER = REPO / "examples" / "offline" / "convert_rl_unplugged_atari.py"
SEED_TRANSITIONS_PER_SECOND = 140  # the TensorFlow-based seed: about 1 hour per 500k shard


def play_frames(game: str, count: int, seed: int = 0) -> np.ndarray:
    """``count`` preprocessed frames from a random policy with sticky actions, frame skip 4."""
    import ale_py

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", 0.25)
    ale.loadROM(ale_py.roms.get_rom_path(game))
    actions = ale.getMinimalActionSet()
    rng = np.random.default_rng(seed)
    frames = np.empty((count, 84, 84), np.uint8)
    for i in range(count):
        action = actions[rng.integers(len(actions))]
        for _ in range(4):
            ale.act(action)
        if ale.game_over():
            ale.reset_game()
        frames[i] = cv2.resize(ale.getScreenGrayscale(), (84, 84), interpolation=cv2.INTER_AREA)
    return frames


def synthetic_episodes(pngs: list[bytes], num_records: int, seed: int = 0):
    """Episodes with ``num_records`` steps in all, their frames taken in turn from ``pngs``."""
    rng = np.random.default_rng(seed)
    offset, episode_id, steps_left = 0, 1 << 40, num_records
    while steps_left:
        length = min(int(rng.integers(300, 3000)), steps_left)
        ids = (offset + np.arange(length + 1)) % len(pngs)
        yield Episode(
            pngs=[pngs[i] for i in ids],
            actions=rng.integers(0, 6, length),
            rewards=(rng.random(length) < 0.02).astype(np.float32) * 10,
            terminal=bool(rng.random() < 0.9) and length < steps_left,
            episode_id=episode_id,
        )
        offset += length + 1
        episode_id += 1
        steps_left -= length


def make_shard(path: Path, game: str, num_records: int, pool_size: int) -> None:
    start = time.perf_counter()
    frames = play_frames(game, pool_size)
    pngs = [encode_png(frame) for frame in frames]
    print(
        f"{pool_size} {game} frames, mean PNG size {np.mean([len(p) for p in pngs]):.0f} bytes "
        f"({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    episodes = synthetic_episodes(pngs, num_records)
    records = (record for episode in episodes for record in episode_records(episode))
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".writing")
    count = write_shard(part, records)
    part.rename(path)
    print(
        f"wrote {count} records, {path.stat().st_size / 1e9:.2f} GB, to {path} "
        f"({time.perf_counter() - start:.0f} s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--game", default="SpaceInvaders", help="RL Unplugged game name")
    parser.add_argument("--pool-size", type=int, default=4000, help="distinct frames played")
    parser.add_argument("--num-workers", type=int, nargs="+", default=[os.cpu_count() or 1])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench_rl_unplugged"))
    args = parser.parse_args()

    ale_game = "".join("_" + c.lower() if c.isupper() else c for c in args.game).lstrip("_")
    dataset_dir = args.work_dir / f"datasets-{args.records}"
    shard = dataset_dir / args.game / "run_1-00000-of-00100"
    if not shard.exists():
        make_shard(shard, ale_game, args.records, args.pool_size)
    rows = []
    for workers in args.num_workers:
        command = [
            sys.executable,
            str(CONVERTER),
            *("--task", args.game, "--run-id", "1", "--shard-id", "0"),
            *("--dataset-dir", str(dataset_dir), "--buffer-dir", str(args.work_dir / "buffers")),
            *("--num-workers", str(workers), "--overwrite"),
        ]
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        print(result.stdout, end="", flush=True)
        # the converter reports the CPU time of its main process plus its decoding workers
        cpu_seconds = float(re.search(r"([\d.]+) CPU-seconds", result.stdout)[1])
        output = args.work_dir / "buffers" / args.game / "run_1-00000-of-00100.hdf5"
        with h5py.File(output) as file:
            transitions = len(file["act"])
            assert transitions == args.records, transitions
        rows.append((transitions, seconds, cpu_seconds, workers, load_before))

    print(f"\nmachine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print("load: the 1-minute load average before the run (other processes on the machine)")
    header = ("transitions", "seconds", "transitions/s", "CPU-seconds", "workers", "load")
    print(" ".join(f"{name:>13}" for name in header))
    for transitions, seconds, cpu_seconds, workers, load in rows:
        values = (transitions, f"{seconds:.1f}", f"{transitions / seconds:.0f}")
        values += (f"{cpu_seconds:.1f}", workers, f"{load:.1f}")
        print(" ".join(f"{value:>13}" for value in values))
    seed_seconds = args.records / SEED_TRANSITIONS_PER_SECOND
    values = (args.records, f"{seed_seconds:.0f}", SEED_TRANSITIONS_PER_SECOND)
    print(" ".join(f"{value:>13}" for value in values), " seed (TensorFlow, ~1 h a shard)")


if __name__ == "__main__":
    main()
