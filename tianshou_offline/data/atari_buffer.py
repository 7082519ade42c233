"""The one HDF5 file format for Atari replay buffers in this collection.

Written by ``atari_qrdqn.py`` (expert data) and ``convert_rl_unplugged_atari.py`` (DeepMind
RL Unplugged shards); read by every ``atari_*.py`` offline script via ``load_atari_buffer``.

File layout (``version`` 1)
---------------------------
Each 84x84 frame is stored ONCE. Row ``t`` holds transition ``t``:

====================  ===================  ===============================================
dataset               dtype, shape         meaning
====================  ===================  ===============================================
``frames``            uint8 (N, 84, 84)    the newest frame of the stacked observation o_t
``act``               int64 (N,)           action a_t, in ``[0, num_actions)``
``rew``               float32 (N,)         reward received after a_t
``terminated``        bool (N,)            the episode ended in a terminal state after a_t
``truncated``         bool (N,)            the episode was cut after a_t (time limit, end
                                           of the recorded data, ...)
====================  ===================  ===============================================

``done = terminated | truncated`` marks the last transition of an episode. Rows are in time
order, episodes are contiguous, and the last row of a file is always ``done`` (the writer
marks an unfinished last episode as truncated), so files can be concatenated.

File attributes: ``format`` = "tianshou-offline-atari", ``version`` = 1, ``stack_num`` = 4,
``num_actions``, ``task`` (e.g. "PongNoFrameskip-v4" or the RL Unplugged game "Pong"),
``source`` ("atari_qrdqn", "rl_unplugged", ...), ``size`` (N), ``created`` (UTC time), plus
free-form provenance given to the writer (strings and numbers as is, anything else as JSON).

Storage: datasets are chunked (1024 frames = 7 MB a chunk) and uncompressed by default, which
reads fastest; gzip (``AtariBufferWriter(..., compression="gzip")``) is far smaller but loads and
writes several times slower, so it is only an opt-in for archiving; the reader handles both.
Measured load times: benchmarks/README.md ("Atari buffer").

How frames become stacked observations (Tianshou 2.0 ``ReplayBuffer``)
---------------------------------------------------------------------
``load_atari_buffer`` returns ``ReplayBuffer(N, stack_num=4, ignore_obs_next=True,
save_only_last_obs=True)`` whose ``obs`` is the ``frames`` array. On sampling,
``buffer[idx].obs`` is ``get(idx, "obs", stack_num=4)``: it walks back with ``prev()`` three
times and stacks ``[frames[p3], frames[p2], frames[p1], frames[idx]]`` (oldest first), shape
(4, 84, 84). ``prev(i)`` is ``i - 1`` unless row ``i - 1`` is ``done`` (or is the buffer's
last row), in which case it stays at ``i``. Hence:

* stacking never crosses an episode boundary;
* at an episode's first step the first frame is repeated: ``[f0, f0, f0, f0]``, then
  ``[f0, f0, f0, f1]`` and so on -- exactly what the frame-stacking env wrapper produces
  after ``reset``, so offline data matches what the agent sees online;
* with ``ignore_obs_next`` there is no stored o_{t+1}: ``obs_next`` is the stacked obs of
  ``next(idx)`` = ``idx + 1``, except at a ``done`` row (or the buffer's last row), where
  ``next`` stays at ``idx`` and ``obs_next`` equals ``obs``. For ``terminated`` rows this is
  harmless (the target does not bootstrap); for ``truncated`` rows the bootstrap uses o_t
  instead of the unseen o_{t+1}, a small bias accepted to store every frame only once.

Command line::

    python examples/atari/atari_buffer.py subset expert.hdf5 expert.size_1e5.hdf5 --size 100000
    python examples/atari/atari_buffer.py info expert.hdf5
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

if TYPE_CHECKING:
    from tianshou.data import ReplayBuffer

from tianshou_offline import tianshou_adapter
from tianshou_offline.errors import UserInputError
from tianshou_offline.files import atomic_write, check_directory, ensure_free_space

FORMAT_NAME = "tianshou-offline-atari"
FORMAT_VERSION = 1
STACK_NUM = 4
FRAME_SHAPE = (84, 84)
CHUNK_FRAMES = 1024  # 7 MB chunks: big enough that reading runs at memory speed
FREE_SPACE_MARGIN = 1 << 20  # bytes kept free besides the rows written (HDF5's metadata)
REQUIRED_ATTRS = ("format", "version", "stack_num", "num_actions", "task", "source")
# name -> dtype of every per-transition dataset besides frames
SCALAR_DATASETS = {
    "act": np.int64,
    "rew": np.float32,
    "terminated": np.bool_,
    "truncated": np.bool_,
}


class AtariBufferWriter:
    """Stream transitions into an Atari buffer file; the file appears only on success.

    Use as a context manager. The data goes to a temporary file beside ``path`` that is
    renamed to ``path`` when the ``with`` block ends without an exception, and removed
    otherwise. If the last appended transition is not ``done`` it is marked ``truncated``.

    :param expected_size: number of transitions expected; only preallocates space.
    :param compression: None (default, fastest to read) or "gzip" (smaller files).
    :param provenance: extra file attributes (e.g. policy checkpoint, seed, run_id).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        num_actions: int,
        task: str,
        source: str,
        expected_size: int | None = None,
        compression: str | None = None,
        **provenance: Any,
    ) -> None:
        self.path = Path(path).expanduser()
        self.num_actions = int(num_actions)
        self.task = task
        self.source = source
        self.expected_size = int(expected_size or 0)
        self.compression = compression
        self.provenance = provenance
        self.size = 0
        self._file: h5py.File | None = None
        self._cleanup = contextlib.ExitStack()

    def __enter__(self) -> AtariBufferWriter:
        self._check_free_space(self.expected_size)
        tmp_path = self._cleanup.enter_context(atomic_write(self.path))
        self._file = self._cleanup.enter_context(h5py.File(tmp_path, "w"))
        chunk = max(1, min(CHUNK_FRAMES, self.expected_size or CHUNK_FRAMES))
        self._file.create_dataset(
            "frames",
            shape=(self.expected_size, *FRAME_SHAPE),
            maxshape=(None, *FRAME_SHAPE),
            chunks=(chunk, *FRAME_SHAPE),
            dtype=np.uint8,
            compression=self.compression,
        )
        for name, dtype in SCALAR_DATASETS.items():
            self._file.create_dataset(
                name,
                shape=(self.expected_size,),
                maxshape=(None,),
                chunks=(1 << 16,),
                dtype=dtype,
                compression=self.compression,
            )
        return self

    def _check_free_space(self, rows: int) -> None:
        """Refuse, before HDF5 writes them, ``rows`` more rows that the disk has no room for:
        HDF5 crashes the process on a full disk rather than report it. Uncompressed files
        only (a compressed row's size is not known in advance)."""
        if self.compression is not None or rows <= 0:
            return
        frame_bytes = int(np.prod(FRAME_SHAPE))
        row_bytes = frame_bytes + sum(np.dtype(t).itemsize for t in SCALAR_DATASETS.values())
        # a chunk is allocated whole when first written; HDF5's metadata needs a little more
        chunk_frames = max(1, min(CHUNK_FRAMES, self.expected_size or CHUNK_FRAMES))
        needed = rows * row_bytes + chunk_frames * frame_bytes + FREE_SPACE_MARGIN
        ensure_free_space(self.path, needed)

    def append(
        self,
        frames: np.ndarray,
        act: Any,
        rew: Any,
        terminated: Any,
        truncated: Any,
    ) -> None:
        """Append n transitions: ``frames`` (n, 84, 84) uint8 (newest frame of o_t), rest (n,)."""
        assert self._file is not None, "use AtariBufferWriter as a context manager"
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.shape[1:] != FRAME_SHAPE or frames.ndim != 3:
            raise ValueError(f"frames must be uint8 (n, 84, 84), got {frames.dtype} {frames.shape}")
        n = len(frames)
        columns = {
            "act": np.asarray(act, dtype=np.int64),
            "rew": np.asarray(rew, dtype=np.float32),
            "terminated": np.asarray(terminated, dtype=bool),
            "truncated": np.asarray(truncated, dtype=bool),
        }
        for name, column in columns.items():
            if column.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {column.shape}")
        if n and (columns["act"].min() < 0 or columns["act"].max() >= self.num_actions):
            raise ValueError(f"actions must lie in [0, {self.num_actions}), got {columns['act']}")
        if n == 0:
            return
        self._check_free_space(n)
        start, stop = self.size, self.size + n
        if stop > len(self._file["frames"]):
            for name in ("frames", *SCALAR_DATASETS):
                # grow geometrically so streaming appends do not resize at every call
                self._file[name].resize(max(stop, 2 * len(self._file[name])), axis=0)
        self._file["frames"][start:stop] = frames
        for name, column in columns.items():
            self._file[name][start:stop] = column
        self.size = stop

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        try:
            if exc_type is None:
                self._finish()
        except BaseException:
            if not self._cleanup.__exit__(*sys.exc_info()):
                raise
            return None
        return self._cleanup.__exit__(exc_type, exc, traceback)

    def _finish(self) -> None:
        assert self._file is not None
        file = self._file
        for name in ("frames", *SCALAR_DATASETS):
            file[name].resize(self.size, axis=0)
        if self.size and not (file["terminated"][-1] or file["truncated"][-1]):
            file["truncated"][self.size - 1] = True  # never let a later file continue this one
        attrs = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "stack_num": STACK_NUM,
            "num_actions": self.num_actions,
            "task": self.task,
            "source": self.source,
            "size": self.size,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        for key, value in self.provenance.items():
            is_plain = isinstance(value, str | int | float | bool | np.integer | np.floating)
            attrs[key] = value if is_plain else json.dumps(value, default=str)
        file.attrs.update(attrs)


SAVE_CHUNK = 1 << 16  # rows copied at a time when saving: 460 MB of frames at most


def _parts_in_time_order(
    buffer: ReplayBuffer, chunk: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Newest frames, actions, rewards and flags of a Tianshou buffer, oldest transition first,
    as consecutive parts of at most ``chunk`` rows (``None``: one part per sub-buffer).

    A ``VectorReplayBuffer`` is taken sub-buffer after sub-buffer. Each (sub-)buffer may have
    wrapped around (circular storage): its oldest transition sits at its insertion index. The
    last transition of each sub-buffer is marked truncated if its episode was unfinished, so
    stacking never joins two sub-buffers. Parts are copies; the frames are copied only part by
    part, so saving a large buffer needs little memory beyond the buffer itself.
    """
    for sub in getattr(buffer, "buffers", [buffer]):
        if len(sub) == 0:
            continue
        oldest = tianshou_adapter.insertion_index(sub) % len(sub)  # 0 unless it wrapped
        order = np.concatenate([np.arange(oldest, len(sub)), np.arange(oldest)])
        terminated = np.asarray(sub.terminated[order], dtype=bool)
        truncated = np.asarray(sub.truncated[order], dtype=bool).copy()
        truncated[-1] |= not terminated[-1]
        step = chunk or len(order)
        for start in range(0, len(order), step):
            rows = order[start : start + step]
            obs = np.asarray(sub.obs[rows])
            if obs.ndim == 4:  # stored stacked (k, 84, 84): keep the newest frame
                obs = obs[:, -1]
            if obs.shape[1:] != FRAME_SHAPE or obs.dtype != np.uint8:
                raise UserInputError(
                    f"buffer observations must be uint8 84x84 frames (or stacks of them), "
                    f"got {obs.dtype} {obs.shape[1:]}"
                )
            yield {
                "frames": np.ascontiguousarray(obs),
                "act": np.asarray(sub.act[rows], dtype=np.int64),
                "rew": np.asarray(sub.rew[rows], dtype=np.float32),
                "terminated": terminated[start : start + step],
                "truncated": truncated[start : start + step],
            }


def _transitions_in_time_order(buffer: ReplayBuffer) -> dict[str, np.ndarray]:
    """All of ``_parts_in_time_order`` in one set of arrays."""
    parts = list(_parts_in_time_order(buffer))
    if not parts:
        raise UserInputError("the replay buffer is empty")
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def save_atari_buffer(
    path: str | os.PathLike[str],
    buffer: ReplayBuffer,
    *,
    num_actions: int,
    task: str,
    source: str,
    **provenance: Any,
) -> None:
    """Save a Collector-filled Tianshou buffer of frame-stacked Atari obs in this format.

    Works for ``ReplayBuffer`` and ``VectorReplayBuffer``, stacked obs (4, 84, 84) or
    last-frame-only obs (``save_only_last_obs=True``). The terminal frames o_{T} of episodes
    are not kept (see the module docstring). If a circular buffer wrapped, its oldest stored
    transition starts an episode in the file, with its earlier frames lost. The data is
    written ``SAVE_CHUNK`` rows at a time, so memory use stays close to the buffer's own.
    """
    size = sum(len(sub) for sub in getattr(buffer, "buffers", [buffer]))
    if size == 0:
        raise UserInputError("the replay buffer is empty")
    with AtariBufferWriter(
        path,
        num_actions=num_actions,
        task=task,
        source=source,
        expected_size=size,
        **provenance,
    ) as writer:
        for part in _parts_in_time_order(buffer, SAVE_CHUNK):
            writer.append(**part)


def _game_name(task: str) -> str:
    """'ALE/Pong-v5', 'PongNoFrameskip-v4' and 'Pong' all name the game 'pong'."""
    name = task.split("/")[-1].split("-v")[0]
    return name.removesuffix("NoFrameskip").removesuffix("Deterministic").lower()


def _open_checked(path: Path) -> h5py.File:
    if not path.is_file():
        raise UserInputError(f"buffer file {path} does not exist")
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise UserInputError(
            f"{path} is not a readable HDF5 file (truncated or corrupt?): {err}"
        ) from err
    try:
        missing_attrs = [key for key in REQUIRED_ATTRS if key not in file.attrs]
        missing_sets = [key for key in ("frames", *SCALAR_DATASETS) if key not in file]
        if missing_attrs or missing_sets:
            what = ", ".join(
                [f"attribute '{key}'" for key in missing_attrs]
                + [f"dataset '{key}'" for key in missing_sets]
            )
            raise UserInputError(
                f"{path} is not a {FORMAT_NAME} buffer: missing {what} "
                f"(write it with atari_buffer.AtariBufferWriter / save_atari_buffer)"
            )
        if file.attrs["format"] != FORMAT_NAME or file.attrs["version"] != FORMAT_VERSION:
            raise UserInputError(
                f"{path} has format {file.attrs['format']!r} version {file.attrs['version']}, "
                f"expected {FORMAT_NAME!r} version {FORMAT_VERSION}"
            )
        frames = file["frames"]
        if frames.dtype != np.uint8 or frames.shape[1:] != FRAME_SHAPE or frames.ndim != 3:
            raise UserInputError(
                f"{path}: dataset 'frames' must be uint8 (N, 84, 84), "
                f"got {frames.dtype} {frames.shape}"
            )
        for name, dtype in SCALAR_DATASETS.items():
            dataset = file[name]
            if dataset.shape != (len(frames),):
                raise UserInputError(
                    f"{path}: dataset '{name}' has shape {dataset.shape} but 'frames' has "
                    f"{len(frames)} rows; all datasets must have the same length"
                )
            if np.dtype(dataset.dtype).kind != np.dtype(dtype).kind:
                raise UserInputError(
                    f"{path}: dataset '{name}' has dtype {dataset.dtype}, "
                    f"expected {np.dtype(dtype)}"
                )
    except BaseException:
        file.close()
        raise
    return file


def _empty_columns(size: int) -> dict[str, np.ndarray]:
    columns = {"frames": np.empty((size, *FRAME_SHAPE), dtype=np.uint8)}
    columns.update({name: np.empty(size, dtype=dtype) for name, dtype in SCALAR_DATASETS.items()})
    return columns


def _read_hdf5_files(paths: list[Path], max_transitions: int | None) -> tuple[dict, int, str]:
    """Read and concatenate files (only the first ``max_transitions`` rows)."""
    with contextlib.ExitStack() as open_files:
        files = [open_files.enter_context(_open_checked(path)) for path in paths]
        num_actions = {int(file.attrs["num_actions"]) for file in files}
        if len(num_actions) > 1:
            raise UserInputError(
                f"the buffer files disagree on the number of actions ({sorted(num_actions)}): "
                + ", ".join(f"{p} has {int(f.attrs['num_actions'])}" for p, f in zip(paths, files))
            )
        tasks = {_game_name(str(file.attrs["task"])) for file in files}
        if len(tasks) > 1:
            raise UserInputError(f"the buffer files are from different games: {sorted(tasks)}")
        sizes = [len(file["frames"]) for file in files]
        total = sum(sizes) if max_transitions is None else min(sum(sizes), max_transitions)
        columns = _empty_columns(total)
        start = 0
        for path, file, size in zip(paths, files, sizes):
            count = min(size, total - start)
            if count <= 0:
                break
            try:
                for name, column in columns.items():
                    file[name].read_direct(column, np.s_[:count], np.s_[start : start + count])
            except OSError as err:
                raise UserInputError(f"{path} is corrupt (could not read its data: {err})") from err
            start += count
            # a file's last row ends its episode, also when only a prefix of it is read
            if not (columns["terminated"][start - 1] or columns["truncated"][start - 1]):
                columns["truncated"][start - 1] = True
        return columns, num_actions.pop(), str(files[0].attrs["task"])


def _read_pickle(path: Path, max_transitions: int | None) -> tuple[dict, int | None, str | None]:
    from tianshou.data import ReplayBuffer

    try:
        with open(path, "rb") as f:
            buffer = pickle.load(f)
    except Exception as err:  # unpickling garbage can raise almost any type (ValueError, ...)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserInputError(
            f"{path} is not a readable pickle of a Tianshou buffer ({reason}); record or copy "
            f"it again"
        ) from err
    if not isinstance(buffer, ReplayBuffer):
        raise UserInputError(f"{path} holds a {type(buffer).__name__}, not a Tianshou ReplayBuffer")
    columns = _transitions_in_time_order(buffer)
    if max_transitions is not None and max_transitions < len(columns["act"]):
        columns = {key: value[:max_transitions].copy() for key, value in columns.items()}
        columns["truncated"][-1] |= not columns["terminated"][-1]
    return columns, None, None


def buffer_from_columns(columns: dict[str, np.ndarray]) -> ReplayBuffer:
    """Wrap arrays (frames, act, rew, terminated, truncated) in a frame-stacking ReplayBuffer.

    No copy of the frames is made; the buffer is full, in time order, oldest row first.
    """
    from tianshou.data import Batch, ReplayBuffer  # imported here: the file tools start faster

    size = len(columns["act"])
    buffer = ReplayBuffer(size, stack_num=STACK_NUM, ignore_obs_next=True, save_only_last_obs=True)
    batch = Batch(
        obs=columns["frames"],
        act=columns["act"],
        rew=columns["rew"],
        terminated=columns["terminated"],
        truncated=columns["truncated"],
        done=columns["terminated"] | columns["truncated"],
    )
    buffer.set_batch(batch)  # type: ignore[arg-type]
    # the state a buffer has after `size` calls of add(): full, next insertion at row 0
    tianshou_adapter.mark_filled(buffer, size)
    buffer.last_index = np.array([size - 1])
    return buffer


def load_atari_buffer(
    paths: str | os.PathLike[str] | list[str | os.PathLike[str]],
    *,
    num_actions: int | None = None,
    max_transitions: int | None = None,
    task: str | None = None,
) -> ReplayBuffer:
    """Load one or several buffer files (concatenated in the given order) for offline training.

    Also accepts a pickle (``.pkl``) of a Tianshou buffer. Returns a full
    ``ReplayBuffer(stack_num=4, ignore_obs_next=True, save_only_last_obs=True)``; sampled obs
    are (4, 84, 84) stacks. ``num_actions`` / ``task`` (of the env that will be trained or
    evaluated) are checked against the file; ``max_transitions`` keeps only the first N.
    Raises ``UserInputError`` for anything wrong with the files.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    path_list = [Path(p).expanduser() for p in paths]
    if not path_list:
        raise UserInputError("no buffer file given")
    if max_transitions is not None and max_transitions <= 0:
        raise UserInputError(f"max_transitions must be positive, got {max_transitions}")
    pickles = [p for p in path_list if p.suffix == ".pkl"]
    if pickles:
        if len(path_list) > 1:
            raise UserInputError("a pickled buffer can only be loaded alone, not with other files")
        if not pickles[0].is_file():
            raise UserInputError(f"buffer file {pickles[0]} does not exist")
        columns, file_actions, file_task = _read_pickle(pickles[0], max_transitions)
    else:
        columns, file_actions, file_task = _read_hdf5_files(path_list, max_transitions)
    where = ", ".join(str(p) for p in path_list)
    size = len(columns["act"])
    if size == 0:
        raise UserInputError(f"buffer {where} contains no transitions")
    env_name = task or "the environment"
    if num_actions is not None and file_actions is not None and file_actions != num_actions:
        raise UserInputError(
            f"buffer {where} has {file_actions} actions but {env_name} has {num_actions}"
            + (f" (the buffer was recorded on {file_task})" if file_task else "")
        )
    if task is not None and file_task is not None and _game_name(task) != _game_name(file_task):
        raise UserInputError(f"buffer {where} was recorded on {file_task}, not on {task}")
    limit = num_actions if num_actions is not None else file_actions
    act = columns["act"]
    if act.min() < 0 or (limit is not None and act.max() >= limit):
        bad = int(np.flatnonzero((act < 0) | (act >= (limit or np.iinfo(np.int64).max)))[0])
        raise UserInputError(
            f"buffer {where}: action {int(act[bad])} at transition {bad} is out of range "
            f"[0, {limit})"
        )
    return buffer_from_columns(columns)


def write_subset(src: str | os.PathLike[str], dst: str | os.PathLike[str], n: int) -> None:
    """Write the first ``n`` transitions of ``src`` to ``dst`` (same attributes, source noted;
    not the recording's ``behaviour_returns``, which score games the subset does not hold)."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if n <= 0:
        raise UserInputError(f"--size must be positive, got {n}")
    if dst.exists() and src.exists() and dst.samefile(src):
        raise UserInputError(f"{dst} is the source file itself: give another file name to write")
    check_directory(dst.parent, "destination folder")
    with _open_checked(src) as file:
        if n > len(file["frames"]):
            raise UserInputError(
                f"{src} has only {len(file['frames'])} transitions, cannot take {n}"
            )
        attrs = {
            key: value.item() if isinstance(value, np.generic) else value
            for key, value in file.attrs.items()
        }
        for key in ("format", "version", "stack_num", "size", "created", "behaviour_returns"):
            attrs.pop(key, None)
        with AtariBufferWriter(
            dst,
            num_actions=int(attrs.pop("num_actions")),
            task=str(attrs.pop("task")),
            source=str(attrs.pop("source")),
            expected_size=n,
            subset_of=str(src),
            **attrs,
        ) as writer:
            for start in range(0, n, 1 << 16):  # bounded memory for large subsets
                stop = min(n, start + (1 << 16))
                writer.append(
                    file["frames"][start:stop],
                    file["act"][start:stop],
                    file["rew"][start:stop],
                    file["terminated"][start:stop],
                    file["truncated"][start:stop],
                )


def describe(path: str | os.PathLike[str]) -> str:
    """One-paragraph summary of a buffer file: attributes, size and episode counts."""
    with _open_checked(Path(path).expanduser()) as file:
        terminated = file["terminated"][:]
        truncated = file["truncated"][:]
        lines = [f"{key}: {value}" for key, value in sorted(file.attrs.items())]
        lines.append(f"transitions: {len(terminated)}")
        num_cut = int((truncated & ~terminated).sum())
        lines.append(
            f"episodes: {int((terminated | truncated).sum())} "
            f"({int(terminated.sum())} terminated, {num_cut} truncated)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Tools for Atari buffer files.")
    commands = parser.add_subparsers(dest="command", required=True)
    subset = commands.add_parser("subset", help="write the first --size transitions to a new file")
    subset.add_argument("src")
    subset.add_argument("dst")
    subset.add_argument("--size", type=int, required=True)
    info = commands.add_parser("info", help="print a buffer file's attributes and size")
    info.add_argument("path")
    args = parser.parse_args()
    if args.command == "subset":
        write_subset(args.src, args.dst, args.size)
        print(f"wrote the first {args.size} transitions of {args.src} to {args.dst}")
    else:
        print(describe(args.path))
