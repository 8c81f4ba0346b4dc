"""A day's append-only manifest: one line per archived file,

    <seq> <name> <sha256 of the file> <size> <chain>

where ``chain = sha256(domain | day | seq | previous chain | name | sha256 | size)``
(``GENESIS`` before the first line). Editing a file changes its sha256; editing,
removing or reordering a line breaks the chain from there on; removing lines at the end
is caught against the head (line count and chain) the archive keeps in Redis, and a
file no line names is reported too.

Appends from several server processes sharing the directory are serialized with an
exclusive ``flock`` on the manifest; under it each appender first reads the lines
written since it last looked, so a file is listed once however many processes (or
retries after a crash) archive it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import BinaryIO

from server.archive.layout import MANIFEST_NAME, day_dir
from server.files import append_durably, fsync_dir, make_dirs

GENESIS = "0" * 64
# Names the scheme: a later one can never produce a colliding hash input.
_DOMAIN = "authq-archive-manifest-v1"


class ManifestConflict(Exception):
    """A file name already listed with other content: the archive is never rewritten."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class ManifestLine:
    seq: int
    entry: FileEntry
    chain: str

    def text(self) -> str:
        e = self.entry
        return f"{self.seq} {e.name} {e.sha256} {e.size} {self.chain}\n"


def chain_hash(day: date, seq: int, prev: str, entry: FileEntry) -> str:
    material = (
        f"{_DOMAIN}\n{day.isoformat()}\n{seq}\n{prev}\n{entry.name}\n{entry.sha256}\n{entry.size}"
    )
    return hashlib.sha256(material.encode()).hexdigest()


def parse_line(text: str) -> ManifestLine:
    """ValueError when the line does not have the five fields."""
    parts = text.rstrip("\n").split(" ")
    if len(parts) != 5:
        raise ValueError(f"expected 5 fields, found {len(parts)}")
    seq, name, sha256, size, chain = parts
    return ManifestLine(int(seq), FileEntry(name, sha256, int(size)), chain)


@dataclass(slots=True)
class _Seen:
    """What this process has read of one manifest so far."""

    offset: int = 0
    seq: int = 0
    chain: str = GENESIS
    names: dict[str, str] = field(default_factory=dict)


class ManifestWriter:
    """Appends to the manifests under one archive root. Blocking: call from a thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._seen: dict[Path, _Seen] = {}

    def append(self, day: date, entries: Sequence[FileEntry]) -> tuple[int, str]:
        """Lists the entries not yet listed, fsynced; returns the head (seq, chain)."""
        path = day_dir(self.root, day) / MANIFEST_NAME
        first_look = path not in self._seen
        with _locked(path) as handle:
            try:
                head = self._append_locked(day, path, handle, entries)
                if first_look:
                    # The file may be new, made here or by another process that has not
                    # fsynced it into the directory yet (or died first): a head stands
                    # only once the file's entry is on disk. Once per day and process
                    # (and after a failure), under the lock so that no later append here
                    # returns before it.
                    fsync_dir(path.parent)
            except BaseException:
                # Whatever failed, the file is the truth: the next append reads it again
                # rather than trust a cache that may not match what reached the disk.
                self._seen.pop(path, None)
                raise
        return head

    def _append_locked(
        self, day: date, path: Path, handle: BinaryIO, entries: Sequence[FileEntry]
    ) -> tuple[int, str]:
        seen, took_in = self._catch_up(path, handle)
        # Kept aside until the lines are on disk: a refused write must not leave the
        # cache claiming lines (and a head) the file does not have.
        seq, chain = seen.seq, seen.chain
        added: dict[str, str] = {}
        lines = []
        for entry in entries:
            listed = added.get(entry.name, seen.names.get(entry.name))
            if listed == entry.sha256:
                continue
            if listed is not None:
                raise ManifestConflict(
                    f"{path}: {entry.name} is already listed with sha256 {listed}, "
                    f"not {entry.sha256}"
                )
            seq += 1
            line = ManifestLine(seq, entry, chain_hash(day, seq, chain, entry))
            lines.append(line.text())
            chain = line.chain
            added[entry.name] = entry.sha256
        if lines:
            data = "".join(lines).encode()
            append_durably(handle.fileno(), seen.offset, data)
            seen.offset += len(data)
            seen.seq, seen.chain = seq, chain
            seen.names.update(added)
        elif took_in:
            # Nothing to add, but the head stands on lines this append only read: their
            # writer may have died before its fsync, or failed and could not take them
            # back (a refused append whose truncate failed too).
            os.fsync(handle.fileno())
        return seen.seq, seen.chain

    def _catch_up(self, path: Path, handle: BinaryIO) -> tuple[_Seen, bool]:
        """Reads the lines written since the last look; also whether the file changed
        since then (lines read or a torn piece dropped)."""
        seen = self._seen.get(path)
        size = os.fstat(handle.fileno()).st_size
        if seen is None or size < seen.offset:
            seen = self._seen[path] = _Seen()
        handle.seek(seen.offset)
        tail = handle.read()
        complete = tail[: tail.rfind(b"\n") + 1]
        if len(complete) < len(tail):
            # A writer died mid-line (never acknowledged): drop the torn piece.
            handle.truncate(seen.offset + len(complete))
        for raw in complete.decode().splitlines():
            line = parse_line(raw)
            seen.seq, seen.chain = line.seq, line.chain
            seen.names[line.entry.name] = line.entry.sha256
        seen.offset += len(complete)
        return seen, bool(tail)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[BinaryIO]:
    make_dirs(path.parent)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
