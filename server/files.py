"""Durable file steps shared by the stores that keep files (blobs, archive, audit
segments and witness): a rename or a new file is only on disk once its directory is
fsynced, and an append is whole and fsynced or not there at all."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """Creates ``directory`` and its missing parents, each made durable in its parent
    (a new directory's entry is only on disk once its parent is fsynced). Costs
    nothing beyond a stat when the directory exists already."""
    missing = []
    probe = directory
    while not probe.is_dir():
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        # Made meanwhile by another writer, perhaps not yet fsynced into its parent:
        # fsynced here too, so that what this writer acknowledges does not hang on it.
        with contextlib.suppress(FileExistsError):
            path.mkdir()
        fsync_dir(path.parent)


def append_durably(fd: int, end: int, data: bytes) -> None:
    """Appends ``data`` to the file ``end`` bytes long and fsyncs it, or takes back
    whatever part got in and raises. A short write (a full disk, a file-size limit) is
    carried on, so that the next write says why, never taken as done. Straight to the
    descriptor: a buffered write that failed would keep the bytes and retry them on
    close, after the caller's lock is released."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError:
        # Never acknowledged: a torn line would break the file's last record, and whole
        # ones that got in were never fsynced; the retry writes them again.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, end)
        raise


def write_once(path: Path, data: bytes, conflict: Callable[[Path], Exception]) -> None:
    """Writes a file that is never rewritten: fsynced under a temporary name, then
    linked into place, which fails rather than replace a file that appeared meanwhile.
    A file already there with the same bytes is fine; with other bytes,
    ``conflict(path)`` is raised. The caller fsyncs the directory."""
    if path.exists():
        _same_or_conflict(path, data, conflict)
        return
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            _same_or_conflict(path, data, conflict)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _same_or_conflict(path: Path, data: bytes, conflict: Callable[[Path], Exception]) -> None:
    if path.read_bytes() != data:
        raise conflict(path)
