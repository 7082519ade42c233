"""Atomic file writes and resumable downloads.

* a file is written to a temporary name and renamed into place only when complete, so an
  interrupted run never leaves a file that looks finished: ``atomic_write``;
* downloads show a progress bar, can resume, and land atomically: ``download``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from tianshou_offline.errors import UserInputError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The temporary file lives in the same directory, so the final ``os.replace`` is atomic.
    On any exception (including KeyboardInterrupt) the temporary file is removed.
    """
    final = Path(path).expanduser()
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates the file owner-only; give the result the permissions of a normal new file
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


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
    dest.parent.mkdir(parents=True, exist_ok=True)
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
        reason = getattr(err, "reason", err)
        raise UserInputError(
            f"could not download {url} to {dest} ({reason}). {what_to_do_offline}".strip()
        ) from err
    finally:
        if not completed and not resume and part.exists():
            part.unlink()
