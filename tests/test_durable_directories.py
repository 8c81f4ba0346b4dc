"""What the archive keeps on disk (audit segments, the witness, day manifests) is
durable once acknowledged: each directory made for it is fsynced into its parent, a
new file into its directory (whichever process made it), and a manifest head is
returned only once every line it stands on is fsynced, also lines a refused append
could not take back."""

from __future__ import annotations

import errno
import hashlib
import os
from datetime import date
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from server.archive.audit_mover import AuditMover
from server.archive.layout import MANIFEST_NAME, day_dir
from server.archive.manifest import FileEntry, ManifestWriter
from server.archive.verify import verify_day
from server.store.audit_chain import Anchor
from server.store.audit_witness import WITNESS_NAME, AuditWitness
from tests.test_audit_segments import OLD, filled, segmented

DAY = date(2024, 5, 1)


class Fsynced:
    """Records which files and directories os.fsync was called on, as (device, inode)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: set[tuple[int, int]] = set()
        real = os.fsync

        def fsync(fd: int) -> None:
            info = os.fstat(fd)
            self.seen.add((info.st_dev, info.st_ino))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    def __contains__(self, path: Path) -> bool:
        info = path.stat()
        return (info.st_dev, info.st_ino) in self.seen


def made(root: Path, name: str, data: bytes) -> FileEntry:
    """An archived file of the day under ``root``, and its manifest entry."""
    directory = day_dir(root, DAY)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)
    return FileEntry(name, hashlib.sha256(data).hexdigest(), len(data))


def refused_after(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """Manifest writes get ``room`` bytes in, then fail with EFBIG; taking the piece
    back (ftruncate) fails too."""
    real_write = os.write
    left = [room]

    def write(fd: int, data: bytes | memoryview) -> int:
        if left[0] == 0:
            raise OSError(errno.EFBIG, "File too large")
        written = real_write(fd, memoryview(data)[: left[0]])
        left[0] -= written
        return written

    def ftruncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "ftruncate", ftruncate)


# -- audit segments and the witness ---------------------------------------------------


async def test_a_moved_segment_is_fsynced_into_each_directory_made_for_it(
    redis_client: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = segmented(redis_client, tmp_path / "data")
    await filled(log, 5)
    fsynced = Fsynced(monkeypatch)
    assert await AuditMover(log, segment_records=5).move_due(OLD + 1_000) == 5
    audit = tmp_path / "data" / "archive" / "audit"
    assert audit in fsynced  # the segment file's entry
    assert audit.parent in fsynced  # "audit", made now, in "archive"
    assert audit.parent.parent in fsynced  # "archive", made now, in "data"
    assert tmp_path in fsynced  # "data", made now


async def test_a_first_note_is_fsynced_into_each_directory_made_for_it(
    redis_client: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = segmented(redis_client, tmp_path)
    await filled(log, 3)
    mover = AuditMover(log, witness_every_s=0)
    fsynced = Fsynced(monkeypatch)
    assert await mover.note_head()
    audit = mover.witness.path.parent
    assert mover.witness.path in fsynced
    assert audit in fsynced  # the witness file's entry
    assert audit.parent in fsynced  # "audit", made now, in "archive"
    assert tmp_path in fsynced  # "archive", made now


async def test_a_note_in_a_witness_file_another_process_made_is_fsynced_into_its_directory(
    redis_client: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = segmented(redis_client, tmp_path)
    await filled(log, 3)
    audit = tmp_path / "archive" / "audit"
    audit.mkdir(parents=True)
    # Made (empty) by another archiver, which has not fsynced it into "audit" yet.
    (audit / WITNESS_NAME).touch()
    fsynced = Fsynced(monkeypatch)
    assert await AuditMover(log, witness_every_s=0).note_head()
    assert audit in fsynced


def test_a_note_cut_short_is_refused_and_taken_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk or a file-size limit lets part of a note in and refuses the rest: the
    # note is not on disk, so it is not said to be, and no torn piece is left after the
    # notes already there.
    witness = AuditWitness(tmp_path / "audit" / WITNESS_NAME)
    assert witness.note(Anchor(1, "a" * 64), 1_000)
    before = witness.path.read_bytes()
    real_write = os.write
    calls = [0]

    def cut_short(fd: int, data: bytes | memoryview) -> int:
        calls[0] += 1
        if calls[0] > 1:
            raise OSError(errno.EFBIG, "File too large")
        return real_write(fd, memoryview(data)[:10])

    monkeypatch.setattr(os, "write", cut_short)
    with pytest.raises(OSError, match="File too large"):
        witness.note(Anchor(2, "b" * 64), 2_000)
    monkeypatch.undo()
    assert witness.path.read_bytes() == before
    assert witness.note(Anchor(3, "c" * 64), 3_000)
    assert [note.anchor.seq for note in witness.read().notes] == [1, 3]


# -- day manifests ---------------------------------------------------------------------


def test_a_new_manifest_is_fsynced_into_each_directory_made_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "archive"
    fsynced = Fsynced(monkeypatch)
    ManifestWriter(root).append(DAY, [FileEntry("r1.json", "a" * 64, 10)])
    directory = day_dir(root, DAY)
    assert directory / MANIFEST_NAME in fsynced
    assert directory in fsynced  # the manifest's entry
    assert directory.parent in fsynced  # "01", made now, in "05"
    assert root / "2024" in fsynced  # "05", made now, in "2024"
    assert root in fsynced  # "2024", made now, in "archive"
    assert tmp_path in fsynced  # "archive", made now


def test_a_manifest_another_process_made_is_fsynced_into_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = day_dir(tmp_path, DAY)
    directory.mkdir(parents=True)
    # Made (empty) by another server process, which has not fsynced it into the day yet.
    (directory / MANIFEST_NAME).touch()
    fsynced = Fsynced(monkeypatch)
    ManifestWriter(tmp_path).append(DAY, [FileEntry("r1.json", "a" * 64, 10)])
    assert directory in fsynced


def test_lines_a_refused_append_could_not_take_back_are_fsynced_before_a_head_stands_on_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ManifestWriter(tmp_path)
    writer.append(DAY, [made(tmp_path, "r1.json", b"one")])
    manifest = day_dir(tmp_path, DAY) / MANIFEST_NAME
    before = manifest.stat().st_size
    second, third = made(tmp_path, "r2.json", b"two"), made(tmp_path, "r3.json", b"three")
    with monkeypatch.context() as refusing:
        # Room for the first new line whole, none of the second: then a failed truncate.
        line_size = len(f"2 r2.json {second.sha256} 3 {'0' * 64}\n")
        refused_after(refusing, room=line_size)
        with pytest.raises(OSError, match="File too large"):
            writer.append(DAY, [second, third])
    assert manifest.stat().st_size == before + line_size  # the whole line stayed
    fsynced = Fsynced(monkeypatch)
    # The retry finds that line already there and has nothing to add.
    assert writer.append(DAY, [second])[0] == 2
    assert manifest in fsynced


def test_a_torn_tail_a_failed_truncate_left_is_dropped_before_the_next_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = ManifestWriter(tmp_path)
    writer.append(DAY, [made(tmp_path, "r1.json", b"one")])
    manifest = day_dir(tmp_path, DAY) / MANIFEST_NAME
    refused = made(tmp_path, "r2.json", b"two")
    with monkeypatch.context() as refusing:
        refused_after(refusing, room=40)  # part of the line only
        with pytest.raises(OSError, match="File too large"):
            writer.append(DAY, [refused])
    assert not manifest.read_text().endswith("\n")  # torn, and left there
    head = writer.append(DAY, [made(tmp_path, "r3.json", b"three")])
    lines = manifest.read_text().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["r1.json", "r3.json"]
    (day_dir(tmp_path, DAY) / "r2.json").unlink()  # never listed: not archived
    assert verify_day(tmp_path, DAY, head).problems == []
