"""The older part of the audit trail, moved out of Redis into segment files (R15).

The trail is kept for good, but Redis holds only its recent records: at five or so
records per request it would otherwise grow by about 90 MB a day at 50,000 requests.
The archiver (server/archive/audit_mover.py) moves whole segments of SEGMENT_RECORDS
records, once the newest of them is older than the keep-hot window, into one file
each under ``<archive>/audit/``, named for the seqs it holds
(``000000000001-000000010000.audit``). A file holds its records as stored in Redis,
``[seq, prev, hash, body]`` one msgpack array after another, so the hash chain runs on
from file to file and into Redis unchanged, and ``audit verify`` checks it whole.

A segment's bounds follow from where the last one ended, so two archivers that move
the same records write the same bytes under the same name; a file that exists with
other bytes is never replaced (it is evidence: verify reports it)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgpack

from server.files import fsync_dir, make_dirs, write_once
from server.store.audit_records import AuditError, AuditFormatError, StoredRecord

# Records per segment file: about 4 MB, a few hours of a busy day's trail.
SEGMENT_RECORDS = 10_000
SUFFIX = ".audit"
_NAME_RE = re.compile(r"^(\d{12})-(\d{12})\.audit\Z")


class SegmentConflict(AuditError):
    """A segment file exists with bytes other than the records it should hold."""


def _conflict(path: Path) -> SegmentConflict:
    return SegmentConflict(f"{path} exists and holds other records: left as it is")


@dataclass(frozen=True, slots=True)
class Segment:
    first: int
    last: int
    path: Path


def segment_name(first: int, last: int) -> str:
    return f"{first:012d}-{last:012d}{SUFFIX}"


def encode(records: Sequence[StoredRecord]) -> bytes:
    packer = msgpack.Packer(use_bin_type=True)
    return b"".join(packer.pack([r.seq, r.prev, r.hash, r.body]) for r in records)


class AuditSegments:
    """The segment files of one archive. Blocking file I/O: call it from a thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def in_archive(cls, archive_root: Path) -> AuditSegments:
        """The segment files of the archive at ``archive_root`` (its ``audit/``)."""
        return cls(archive_root / "audit")

    def segments(self) -> list[Segment]:
        """Every segment file, by first seq. Other files (a write in progress) are not
        segments."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _NAME_RE.match(path.name)
            if match:
                found.append(Segment(int(match[1]), int(match[2]), path))
        return sorted(found, key=lambda s: (s.first, s.last))

    def write(self, records: Sequence[StoredRecord]) -> Segment:
        """Stores consecutive records as one segment, on disk when this returns. Writing
        the same records again is a no-op; SegmentConflict if the file holds others."""
        if not records:
            raise ValueError("a segment holds at least one record")
        first, last = records[0].seq, records[-1].seq
        if last - first + 1 != len(records):
            raise ValueError(f"records {first}..{last} are not consecutive")
        data = encode(records)
        path = self.directory / segment_name(first, last)
        make_dirs(self.directory)
        write_once(path, data, _conflict)
        fsync_dir(self.directory)
        return Segment(first, last, path)

    def read(self, segment: Segment) -> Iterator[StoredRecord]:
        """The records of one file, in file order; AuditFormatError (naming the file)
        where it cannot be read."""
        try:
            data = segment.path.read_bytes()
        except OSError as exc:
            raise AuditFormatError(f"segment {segment.path.name}: cannot be read ({exc})") from None
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=True)
        unpacker.feed(data)
        try:
            for item in unpacker:
                seq, prev, stored_hash, body = item
                if not (
                    isinstance(seq, int)
                    and isinstance(prev, str)
                    and isinstance(stored_hash, str)
                    and isinstance(body, bytes)
                ):
                    raise ValueError("a record is not [seq, prev, hash, body]")
                yield StoredRecord(seq, prev, stored_hash, body)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise AuditFormatError(f"segment {segment.path.name}: unreadable ({exc})") from None
        if unpacker.tell() != len(data):
            raise AuditFormatError(f"segment {segment.path.name}: ends inside a record")

    def read_all(self, segment: Segment) -> list[StoredRecord]:
        return list(self.read(segment))
