"""Atomic file writes, output-side faults, directory locks and resumable downloads.

* a file is written to a temporary name and renamed into place only when complete, so an
  interrupted run never leaves a file that looks finished: ``atomic_write``; the temporary files
  that a killed writer (kill -9) left behind are removed by the next write of the same file;
* a full disk, a file where a directory should be, or an unwritable place is reported as one
  ``UserInputError`` line (``atomic_write``, ``make_directory``, ``check_writable``);
* ``DirectoryLock``: one process at a time in a directory (a run directory);
* downloads show a progress bar, can resume, and land atomically: ``download``.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from tianshou_offline.errors import UserInputError

# errno values that mean "the device cannot take more data"
_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# what libraries put in the text of a failed write that they do not raise as OSError(errno):
# HDF5 ("errno = 28, error message = 'No space left on device'"), torch's zip writer
_OUT_OF_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "File too large")
_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed", "inline_container.cc", "unexpected pos")
# The temporary files of atomic_write: .<final name>.<writer's pid>-<random>.tmp (before the pid
# was in the name: .<final name>.<random>.tmp).
_TMP_SUFFIX = ".tmp"
_TMP_MIDDLE = re.compile(r"(?:(?P<pid>\d+)-)?[a-z0-9_]{8}")
_PROCESS_STARTED = time.time()
_LIVE_TMP: set[Path] = set()  # this process's temporary files being written now


def is_out_of_space(err: BaseException) -> bool:
    """Whether ``err`` says the disk (or quota, or file size limit) is full."""
    if isinstance(err, OSError) and err.errno in _OUT_OF_SPACE:
        return True
    text = str(err)
    if isinstance(err, OSError) and any(t in text for t in _OUT_OF_SPACE_TEXT):
        return True
    # torch.save reports a failed write of its zip container as a RuntimeError without errno
    return isinstance(err, RuntimeError) and any(t in text for t in _TORCH_WRITE_FAILED)


def _size(num_bytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError  # unreachable


def ensure_free_space(path: Path, needed: int) -> None:
    """Refuse to write ``needed`` more bytes to ``path`` where its disk has less free: for
    writers (HDF5) that can crash on a full disk instead of reporting it."""
    folder = next(p for p in (path.parent, *path.parents) if p.exists())
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserInputError(
            f"could not write {path}: it needs about {_size(needed)} more but {folder} has "
            f"{_size(free)} free; free some space or write somewhere else, then run the command "
            f"again"
        )


def _free_space(folder: Path) -> str:
    try:
        return f"{_size(shutil.disk_usage(folder).free)} free there"
    except OSError:
        return "free space unknown"


def out_of_space_error(path: Path, err: BaseException) -> UserInputError:
    # the library's own text can span lines (HDF5's does): one line of our own instead
    if isinstance(err, OSError) and err.errno in _OUT_OF_SPACE:
        reason = os.strerror(err.errno)
    else:
        reason = "no space left on the device (or over a size limit)"
    return UserInputError(
        f"could not write {path}: {reason} ({_free_space(path.parent)}); free some space or "
        f"write somewhere else, then run the command again"
    )


def make_directory(path: str | os.PathLike[str], option: str | None = None) -> list[Path]:
    """``mkdir -p path``; returns the directories it created (parents first).

    A file where a directory is needed, or a place that cannot be written, raises
    ``UserInputError`` naming ``option`` (the user's flag for ``path``) where given.
    """
    path = Path(path).expanduser()
    missing = [p for p in (path, *path.parents) if not p.exists()][::-1]
    named = f"{option} {path}" if option else str(path)
    check_directory(path, option)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if is_out_of_space(err):
            raise out_of_space_error(path / ".", err) from err
        raise UserInputError(
            f"cannot create the directory {named} ({err.strerror}); give a place you can write to"
        ) from err
    return [p for p in missing if p.is_dir()]


def check_directory(path: str | os.PathLike[str], option: str | None = None) -> None:
    """Refuse, before any work, a directory ``path`` that could not be made: a file is in its
    place (or in a parent's). Creates nothing."""
    path = Path(path).expanduser()
    named = f"{option} {path}" if option else str(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        what = "is" if blocker == path else f"needs the directory {blocker}, which is"
        raise UserInputError(
            f"{named} {what} a file, not a directory: remove it or give another place"
        )


def check_writable(path: str | os.PathLike[str], option: str) -> None:
    """Refuse, before any work, a file ``path`` that could not be written later: its nearest
    existing folder is a file or not writable. Creates nothing."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserInputError(f"{option} {path} is a directory; give a file name")
    folder = next(p for p in path.parents if p.exists())
    if not folder.is_dir():
        raise UserInputError(
            f"{option} {path} needs the directory {folder}, which is a file: give another place"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserInputError(
            f"{option} {path}: {folder} is not writable; give a place you can write to"
        )


def remove_stale_temporary_files(final: Path) -> list[Path]:
    """Remove the temporary files of ``final`` that earlier writers left (killed before they
    could clean up): those of processes that no longer run, and those without a writer's pid
    that are older than this process. Returns what was removed."""
    removed = []
    prefix = f".{final.name}."
    try:
        candidates = list(final.parent.glob(f"{_glob_escape(prefix)}*{_TMP_SUFFIX}"))
    except OSError:
        return removed
    for tmp in candidates:
        match = _TMP_MIDDLE.fullmatch(tmp.name[len(prefix) : -len(_TMP_SUFFIX)])
        if match is None or tmp in _LIVE_TMP:
            continue
        try:
            if match["pid"] is not None:
                stale = not _process_alive(int(match["pid"]))
            else:
                stale = tmp.stat().st_mtime < _PROCESS_STARTED
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # gone already, or not ours to remove
            continue
    return removed


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # not in _LIVE_TMP: an earlier process with this pid left it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary file lives in the same directory, so the final ``os.replace`` is atomic.
    On any exception (including KeyboardInterrupt) the temporary file is removed; temporary
    files of ``path`` left by killed writers are removed first, and on failure the directories
    it made for ``path``. A full disk, or a file where the directory should be, raises
    ``UserInputError`` (one line) instead of the library's error.
    """
    final = Path(path).expanduser()
    created = make_directory(final.parent)
    remove_stale_temporary_files(final)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{final.name}.{os.getpid()}-", suffix=_TMP_SUFFIX, dir=final.parent
        )
    except OSError as err:
        _remove_empty(created)
        if is_out_of_space(err):
            raise out_of_space_error(final, err) from err
        raise UserInputError(
            f"cannot write {final} ({err.strerror}); give a place you can write to"
        ) from err
    os.close(fd)
    tmp = Path(tmp_name)
    _LIVE_TMP.add(tmp)
    # mkstemp creates the file owner-only; give the result the permissions of a normal new file
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, final)
    except (OSError, RuntimeError) as err:
        if is_out_of_space(err):
            raise out_of_space_error(final, err) from err
        raise
    finally:
        _LIVE_TMP.discard(tmp)
        if tmp.exists():
            tmp.unlink()
            _remove_empty(created)


def _remove_empty(directories: list[Path]) -> None:
    """Remove ``directories`` (parents first in the list) where they are empty."""
    for directory in reversed(directories):
        with contextlib.suppress(OSError):
            directory.rmdir()


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    resume: bool = False,
    what_to_do_offline: str = "",
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` with a progress bar; the file appears only when complete.

    The transfer goes to ``<dest>.part`` beside the destination. With ``resume=True`` an
    existing ``.part`` file is continued with an HTTP Range request (and kept if the
    transfer breaks, so the next call continues); with ``resume=False`` it is removed on
    failure, leaving nothing behind. Network failures raise ``UserInputError`` naming the
    URL, the destination and ``what_to_do_offline``.
    """
    dest = Path(dest).expanduser()
    make_directory(dest.parent)
    part = dest.with_name(dest.name + ".part")
    if not resume and part.exists():
        part.unlink()
    offset = part.stat().st_size if part.exists() else 0

    request = urllib.request.Request(url)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    completed = False
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if offset and response.status != 206:  # server ignored the range: start over
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            with (
                open(part, "ab" if offset else "wb") as out,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=f"download {dest.name}",
                ) as bar,
            ):
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
            received = part.stat().st_size
            if total is not None and received != total:
                raise UserInputError(
                    f"download of {url} stopped at {received} of {total} bytes; "
                    f"run the command again to {'resume' if resume else 'retry'}"
                )
        os.replace(part, dest)
        completed = True
        return dest
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        if is_out_of_space(err):
            raise out_of_space_error(dest, err) from err
        reason = getattr(err, "reason", err)
        raise UserInputError(
            f"could not download {url} to {dest} ({reason}). {what_to_do_offline}".strip()
        ) from err
    finally:
        if not completed and not resume and part.exists():
            part.unlink()


class DirectoryLock:
    """An exclusive lock on a directory, held while the process runs in it: another process
    that asks for it gets ``UserInputError``. The lock is the kernel's (``flock`` on
    ``<directory>/.lock``), so it ends with the process, also with kill -9; ``release`` removes
    the lock file. Within one process the lock can be taken again (each taker releases it).
    """

    NAME = ".lock"
    _held: dict[Path, list] = {}  # this process's locks: resolved lock file -> [fd, takers]

    def __init__(self, directory: str | os.PathLike[str], what: str = "directory") -> None:
        import fcntl

        self.path = Path(directory).expanduser().resolve() / self.NAME
        self._released = False
        if self.path in self._held:
            self._held[self.path][1] += 1
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise UserInputError(
                    f"cannot lock the {what} {Path(directory)} ({err.strerror}); give a "
                    f"directory you can write to"
                ) from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _read_pid(fd)
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
                by = f" (process {holder})" if holder else ""
                raise UserInputError(
                    f"another process{by} is using the {what} {Path(directory)}; wait until it "
                    f"has finished, or give another directory"
                ) from None
            # the holder before us may have removed the file between our open and our lock
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._held[self.path] = [fd, 1]

    def release(self) -> None:
        """Give the lock up (the last taker in this process removes the file); idempotent."""
        if self._released or self.path not in self._held:
            return
        self._released = True
        entry = self._held[self.path]
        entry[1] -= 1
        if entry[1] > 0:
            return
        del self._held[self.path]
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(entry[0])  # closing the file releases the lock


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
