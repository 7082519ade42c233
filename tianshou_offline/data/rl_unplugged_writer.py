"""Make RL Unplugged Atari shards from known episodes: the project's own writer for tests and
benchmarks (``convert_rl_unplugged_atari.py`` reads them like the real ones).

Records are written as Dopamine's DQN logged them (see the converter's docstring): o_t holds
frames f_{t-3}..f_t with zero frames before the episode's start, o_tp1 frames f_{t-2}..f_{t+1},
d_t is 0 only after the step that ended the game, and an episode cut by the time limit simply
stops (discount 1), followed by the next episode's id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from tianshou_offline.data.tfrecord import encode_example, write_gzip_tfrecords

ZERO_FRAME = np.zeros((84, 84), np.uint8)


def encode_png(frame: np.ndarray) -> bytes:
    ok, png = cv2.imencode(".png", frame)
    assert ok
    return png.tobytes()


@dataclass
class Episode:
    """One recorded episode: PNGs of its observation frames f_0..f_T and its T steps."""

    pngs: Sequence[bytes]  # T + 1 frames; the last is the observation after the last step
    actions: np.ndarray  # (T,) int
    rewards: np.ndarray  # (T,) float
    terminal: bool  # True: the game ended after the last step (d_t = 0); False: cut
    episode_id: int

    @classmethod
    def from_frames(cls, frames: np.ndarray, **kwargs) -> Episode:
        return cls(pngs=[encode_png(frame) for frame in frames], **kwargs)


def episode_records(
    episode: Episode, steps: Iterable[int] | None = None, zero_png: bytes | None = None
) -> Iterator[bytes]:
    """Serialized ``tf.train.Example`` of each step (default: all, in order)."""
    zero_png = zero_png or encode_png(ZERO_FRAME)
    num_steps = len(episode.actions)
    clipped_return = float(np.clip(episode.rewards, -1, 1).sum())

    def stack(t: int) -> list[bytes]:  # frames t-3..t, zero-padded before the start
        return [episode.pngs[i] if i >= 0 else zero_png for i in range(t - 3, t + 1)]

    for t in range(num_steps) if steps is None else steps:
        ends_game = episode.terminal and t == num_steps - 1
        yield encode_example(
            {
                "o_t": stack(t),
                "o_tp1": stack(t + 1),
                "a_t": [int(episode.actions[t])],
                "a_tp1": [int(episode.actions[t + 1]) if t + 1 < num_steps else 0],
                "r_t": [float(episode.rewards[t])],
                "d_t": [0.0 if ends_game else 1.0],
                "episode_id": [episode.episode_id],
                "episode_return": [clipped_return],
            }
        )


def write_shard(path, records: Iterable[bytes], compresslevel: int = 6) -> int:
    """Write a GZIP TFRecord shard like RL Unplugged's; return the number of records."""
    return write_gzip_tfrecords(path, records, compresslevel=compresslevel)
