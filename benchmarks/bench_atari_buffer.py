#!/usr/bin/env python3
"""Memory and load time of a full-size Atari buffer, measured on the project's own code path.

Writes an N-transition buffer (default 1M, the seed's expert size) with ``AtariBufferWriter``,
then, in a fresh process each time, loads it with ``load_atari_buffer`` (what the offline Atari
scripts call) from a cold page cache (the file's pages dropped with ``posix_fadvise``) and from
a warm one, and reports the load time, how much the process grew, its peak RSS, the time to
sample a batch of 32 stacked observations, and the frames as a torch tensor.

    python benchmarks/bench_atari_buffer.py --transitions 1000000 --work-dir /tmp/atari-bench

The file is ~7 GB for 1M transitions; it is kept in ``--work-dir`` for reruns (``--keep``) or
removed at the end. Frames are random bytes (the file is uncompressed, so content does not
change its size or read speed); episodes are 2,000 steps long.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

PAGE = os.sysconf("SC_PAGE_SIZE")
EPISODE_LENGTH = 2000
NUM_ACTIONS = 6


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def write_buffer(path: Path, transitions: int, seed: int = 0) -> float:
    from tianshou_offline.data.atari_buffer import AtariBufferWriter

    rng = np.random.default_rng(seed)
    block = 1 << 16
    started = time.perf_counter()
    with AtariBufferWriter(
        path,
        num_actions=NUM_ACTIONS,
        task="PongNoFrameskip-v4",
        source="bench_atari_buffer.py (random frames)",
        expected_size=transitions,
    ) as writer:
        frames = rng.integers(0, 256, (block, 84, 84), dtype=np.uint8)
        for start in range(0, transitions, block):
            n = min(block, transitions - start)
            index = np.arange(start, start + n)
            writer.append(
                np.roll(frames[:n], start // block, axis=0),
                act=rng.integers(0, NUM_ACTIONS, n),
                rew=rng.choice([-1.0, 0.0, 1.0], n),
                terminated=(index + 1) % EPISODE_LENGTH == 0,
                truncated=np.zeros(n, dtype=bool),
            )
    return time.perf_counter() - started


def drop_from_page_cache(path: Path) -> None:
    """Evict the file's pages, so the next read comes from the disk (no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def measure_load(path: str) -> dict:
    """Runs in a fresh process: load, sample, and convert, with timings and memory."""
    import torch

    from tianshou_offline.data.atari_buffer import load_atari_buffer

    before = rss_bytes()
    started = time.perf_counter()
    buffer = load_atari_buffer(path, num_actions=NUM_ACTIONS, task="PongNoFrameskip-v4")
    load_seconds = time.perf_counter() - started
    grown = rss_bytes() - before

    buffer.sample(32)  # first call builds Tianshou's index structures
    started = time.perf_counter()
    for _ in range(200):
        batch, _ = buffer.sample(32)
    sample_ms = (time.perf_counter() - started) / 200 * 1e3
    assert batch.obs.shape == (32, 4, 84, 84) and batch.obs.dtype == np.uint8

    started = time.perf_counter()
    frames = torch.from_numpy(np.asarray(buffer.obs[: len(buffer)]))
    tensor_seconds = time.perf_counter() - started
    return {
        "transitions": len(buffer),
        "load_s": load_seconds,
        "rss_growth_gib": grown / 2**30,
        "bytes_per_transition": grown / len(buffer),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30,
        "sample32_ms": sample_ms,
        "as_tensor_s": tensor_seconds,
        "tensor_shape": list(frames.shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--work-dir", default="/tmp/atari-buffer-bench")
    parser.add_argument("--keep", action="store_true", help="keep the file for the next run")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_load(args.measure)))
        return

    path = Path(args.work_dir) / f"bench-{args.transitions}.hdf5"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        print(f"reusing {path}")
    else:
        seconds = write_buffer(path, args.transitions)
        print(f"wrote {path}: {path.stat().st_size / 2**30:.2f} GiB in {seconds:.1f} s")

    rows = []
    for cache in ("cold", "warm"):
        if cache == "cold":
            drop_from_page_cache(path)
        out = subprocess.run(
            [sys.executable, __file__, "--measure", str(path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows.append((cache, json.loads(out.strip().splitlines()[-1])))

    print()
    print(
        "| page cache | transitions | file GiB | load s | RSS growth GiB | bytes/transition "
        "| peak RSS GiB | sample 32 ms | frames as tensor s |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    file_gib = path.stat().st_size / 2**30
    for cache, r in rows:
        print(
            f"| {cache} | {r['transitions']:,} | {file_gib:.2f} | {r['load_s']:.1f} "
            f"| {r['rss_growth_gib']:.2f} | {r['bytes_per_transition']:,.0f} "
            f"| {r['peak_rss_gib']:.2f} | {r['sample32_ms']:.2f} | {r['as_tensor_s']:.3f} |"
        )
    if not args.keep:
        path.unlink()


if __name__ == "__main__":
    main()
