"""Durable writes of the clients' local files (the teller's fallback journal, the
authorizer's lease book): a file replaced is replaced whole or not at all, and a
read-modify-write holds the lock of the file that is at the path."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Makes a file created, renamed or removed in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Writes ``data`` as ``path``: a new file beside it (``mode``), fsynced, renamed
    over it, its folder fsynced. A crash or a full disk midway leaves the file as it
    was, never torn; the new file is removed again."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def locked(path: Path, flags: int, mode: int = 0o600) -> Iterator[int]:
    """``path`` opened with ``flags`` and locked (an exclusive flock), for two commands
    of one desk that may change the file at once. The lock is the file's own: a file
    that replace_file swapped in while this waited is let go, and the new one taken."""
    while True:
        fd = os.open(path, flags, mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                yield fd
                return
        finally:
            os.close(fd)
