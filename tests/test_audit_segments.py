"""The audit trail's older records moved out of Redis into segment files (R15), on a
real Redis: what moves and when, reading and verifying across the files and the
stream, a mover that dies halfway or races another, and tampering with the files."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from server.admin.cli import _run, build_parser
from server.archive.archiver import Archiver, ArchiverConfig
from server.archive.audit_mover import AuditMover
from server.store.audit import (
    Anchor,
    AuditError,
    AuditLog,
    AuditRecord,
    StoredRecord,
    chain_hash,
)
from server.store.audit_segments import AuditSegments, SegmentConflict, encode, segment_name
from server.store.audit_witness import AuditWitness
from tests.test_audit import entry

OLD = 1_700_000_000_000  # entry(n) is stamped OLD + n


def segmented(client: aioredis.Redis, tmp_path: Path) -> AuditLog:
    return AuditLog(client, segments=AuditSegments.in_archive(tmp_path / "archive"))


async def filled(log: AuditLog, n: int, **overrides: Any) -> list[AuditRecord]:
    return await log.append_many(entry(i, **overrides) for i in range(1, n + 1))


def names(log: AuditLog) -> list[str]:
    assert log.segments is not None
    return [segment.path.name for segment in log.segments.segments()]


async def verified(log: AuditLog) -> int:
    """How many records verify() checked, all well."""
    report = await log.verify()
    assert report.ok, report.problems
    return report.checked


async def verify_lines(log: AuditLog) -> list[str]:
    report = await log.verify()
    return report.problems


async def test_whole_old_segments_move_and_the_trail_reads_as_before(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = segmented(redis_client, tmp_path)
    written = await filled(log, 23)
    before = [record async for record in log.read()]
    mover = AuditMover(log, segment_records=5)

    assert await mover.move_due(OLD + 1_000) == 20

    assert names(log) == [segment_name(f, f + 4) for f in (1, 6, 11, 16)]
    assert await redis_client.xlen(log.stream_key) == 3
    assert await log.archived() == (20, written[19].hash)
    assert [record async for record in log.read()] == before
    # Across a file boundary, and from the files into the stream.
    assert [r.seq async for r in log.read(from_seq=4, count=5)] == [4, 5, 6, 7, 8]
    assert [r.seq async for r in log.read(from_seq=18, count=4)] == [18, 19, 20, 21]
    assert [r.seq async for r in log.read(from_seq=22)] == [22, 23]
    assert await verified(log) == 23
    # The chain goes on from the head as before.
    await log.append(entry(24))
    assert (await log.verify()).ok


async def test_only_whole_segments_past_the_window_move(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = segmented(redis_client, tmp_path)
    await filled(log, 4)
    mover = AuditMover(log, segment_records=5)
    assert await mover.move_due(OLD + 1_000) == 0  # four records: not a whole segment
    await log.append(entry(5))
    await log.append(entry(6, at_ms=OLD + 500))
    await log.append_many(entry(i) for i in range(7, 11))
    # Seqs 6..10 end with a record stamped OLD + 10: due only once the window passes it.
    assert await mover.move_due(OLD + 10) == 5
    assert names(log) == [segment_name(1, 5)]
    assert await mover.move_due(OLD + 11) == 5
    assert names(log) == [segment_name(1, 5), segment_name(6, 10)]
    assert await redis_client.xlen(log.stream_key) == 0
    assert await verified(log) == 10


async def test_a_mover_that_died_before_the_trim_is_finished_by_the_next(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = segmented(redis_client, tmp_path)
    await filled(log, 10)
    assert log.segments is not None
    # The file is on disk, the records still in Redis: the state a kill leaves.
    log.segments.write(await log.stored(1, 5))
    assert await log.archived() == (0, "0" * 64)
    assert [r.seq async for r in log.read()] == list(range(1, 11))
    assert (await log.verify()).ok

    first, second = AuditMover(log, segment_records=5), AuditMover(log, segment_records=5)
    await asyncio.gather(first.move_due(OLD + 1_000), second.move_due(OLD + 1_000))
    # Each segment was trimmed once, whichever mover got there first.
    assert first.moved_total + second.moved_total == 10
    assert names(log) == [segment_name(1, 5), segment_name(6, 10)]
    assert [r.seq async for r in log.read()] == list(range(1, 11))
    assert await verified(log) == 10


async def test_a_segment_file_with_other_records_is_never_replaced(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = segmented(redis_client, tmp_path)
    await filled(log, 5)
    assert log.segments is not None
    path = log.segments.directory / segment_name(1, 5)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"someone else's bytes")

    with pytest.raises(SegmentConflict, match="holds other records"):
        await AuditMover(log, segment_records=5).move_due(OLD + 1_000)

    assert path.read_bytes() == b"someone else's bytes"
    assert await redis_client.xlen(log.stream_key) == 5
    assert await log.archived() == (0, "0" * 64)


async def test_reading_moved_records_needs_the_archive(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    await moved(redis_client, tmp_path, 7)
    blind = AuditLog(redis_client)

    with pytest.raises(AuditError, match=r"seqs 1\.\.5 are archived in segment files"):
        _ = [record async for record in blind.read()]
    assert [r.seq async for r in blind.read(from_seq=6)] == [6, 7]
    report = await blind.verify()
    assert not report.ok
    assert report.problems == [
        "seqs 1..5 are archived in segment files, which were not given: not checked"
    ]
    assert report.checked == 2  # the rest is checked on from the archived mark

    gone = AuditLog(redis_client, segments=AuditSegments(tmp_path / "elsewhere"))
    with pytest.raises(AuditError, match=r"seqs 1\.\.5 are archived, but no segment file"):
        _ = [record async for record in gone.read()]


def rewrite(path: Path, records: list[StoredRecord]) -> None:
    path.write_bytes(encode(records))


async def moved(client: aioredis.Redis, tmp_path: Path, n: int = 12) -> AuditLog:
    log = segmented(client, tmp_path)
    await filled(log, n)
    await AuditMover(log, segment_records=5).move_due(OLD + 1_000)
    return log


def segment_records(log: AuditLog, first: int, last: int) -> tuple[Path, list[StoredRecord]]:
    assert log.segments is not None
    (segment,) = [s for s in log.segments.segments() if (s.first, s.last) == (first, last)]
    return segment.path, log.segments.read_all(segment)


async def test_verify_names_a_changed_record_in_a_file(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = await moved(redis_client, tmp_path)
    path, records = segment_records(log, 1, 5)
    forged = entry(3, outcome="R4: review already started").pack()
    records[2] = StoredRecord(3, records[2].prev, records[2].hash, forged)
    rewrite(path, records)
    assert await verify_lines(log) == [
        "seq 3: stored hash does not match its content (record changed)"
    ]


async def test_verify_names_a_missing_or_damaged_file(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = await moved(redis_client, tmp_path)
    path, records = segment_records(log, 6, 10)
    path.unlink()
    assert await verify_lines(log) == [
        "seqs 6..10 missing before seq 11 (records removed or moved)",
        "the archived mark names seq 10, which no record has",
    ]
    with pytest.raises(AuditError, match=r"seqs 6\.\.10 are archived, but no segment file"):
        _ = [record async for record in log.read()]

    rewrite(path, records)
    path.write_bytes(path.read_bytes()[:-7])
    assert await verify_lines(log) == [
        f"segment {path.name}: ends inside a record",
        "the archived mark names seq 10, which no record has",
    ]


async def test_verify_names_a_file_rechained_from_scratch(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """A forger who re-chains a whole file still breaks the link to the next record
    and the archived mark."""
    log = await moved(redis_client, tmp_path, n=10)
    path, records = segment_records(log, 6, 10)
    prev, forged = records[0].prev, []
    for record in records:
        body = entry(record.seq, actor="somebody-else").pack()
        digest = chain_hash(record.seq, prev, body)
        forged.append(StoredRecord(record.seq, prev, digest, body))
        prev = digest
    rewrite(path, forged)
    problems = await verify_lines(log)
    assert problems[0].startswith("seq 10: not the record archived")
    assert problems[1].startswith("the chain head points at seq 10")


async def test_a_record_out_of_its_file_is_named(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = await moved(redis_client, tmp_path, n=10)
    first_path, first = segment_records(log, 1, 5)
    second_path, second = segment_records(log, 6, 10)
    rewrite(first_path, first[:4])
    rewrite(second_path, [first[4], *second])
    assert await verify_lines(log) == [
        f"seq 5: in segment {second_path.name}, outside its seqs (record moved)"
    ]


async def test_archiver_moves_what_the_keep_hot_window_let_go(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = segmented(redis_client, tmp_path)
    now_ms = int(time.time() * 1000)
    await log.append_many(entry(i, at_ms=now_ms - 3_600_000 + i) for i in range(1, 5))
    await log.append_many(entry(i, at_ms=now_ms + i) for i in range(5, 7))

    def archiver(keep_hot_s: float) -> Archiver:
        config = ArchiverConfig(keep_hot_s=keep_hot_s, sweep_s=1.0, gc_interval_s=1.0)
        unused: Any = None
        return Archiver(unused, unused, unused, unused, unused, config,
                        AuditMover(log, segment_records=2))  # fmt: skip

    assert await archiver(keep_hot_s=7 * 86_400).move_audit() == 0
    assert await archiver(keep_hot_s=60).move_audit() == 4
    assert names(log) == [segment_name(1, 2), segment_name(3, 4)]
    assert await redis_client.xlen(log.stream_key) == 2
    # Each round also notes the chain's head beside the files (audit_witness.py).
    notes = AuditWitness.beside(tmp_path / "archive" / "audit").read().notes
    assert [note.anchor for note in notes] == [Anchor(*await log.head())]


async def test_admin_reads_and_verifies_through_the_archive(
    redis_client: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    log = segmented(redis_client, tmp_path)
    await filled(log, 8)
    shown_before = await admin(redis_url, tmp_path, "audit", "show", "--json")
    await AuditMover(log, segment_records=5).move_due(OLD + 1_000)

    assert await admin(redis_url, tmp_path, "audit", "show", "--json") == shown_before
    code, out = await admin(redis_url, tmp_path, "audit", "verify")
    assert (code, out.splitlines()[0]) == (0, "audit chain OK: 8 records verified")
    code, out = await admin(
        redis_url, tmp_path, "audit", "--archive-dir", str(tmp_path / "nowhere"), "verify"
    )
    assert code == 1
    assert out.splitlines() == [
        "seqs 1..5 missing before seq 6 (records removed or moved)",
        "the archived mark names seq 5, which no record has",
        "audit chain BROKEN: 2 problems in 3 records",
    ]


async def admin(redis_url: str, tmp_path: Path, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["--redis-url", redis_url, "--data-dir", str(tmp_path), *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = await _run(args)
    return code, out.getvalue()


async def test_a_read_in_progress_while_records_move_misses_none(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = segmented(redis_client, tmp_path)
    await filled(log, 12)
    reading = log.read(page_size=2)
    seqs = [(await anext(reading)).seq, (await anext(reading)).seq]
    # Moved between two pages of the read: the stream now starts at seq 11.
    assert await AuditMover(log, segment_records=5).move_due(OLD + 1_000) == 10
    seqs += [record.seq async for record in reading]
    assert seqs == list(range(1, 13))


async def test_the_trim_takes_only_the_records_the_file_holds(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = segmented(redis_client, tmp_path)
    written = await filled(log, 10)
    mover = AuditMover(log, segment_records=5)
    keys = [log.stream_key, log.archived_key]

    async def trim(first: int, last: int, last_hash: str) -> list[str]:
        reply = await mover._trim(keys=keys, args=[first, last, last_hash])
        return [part.decode() for part in reply]

    assert await trim(1, 5, "f" * 64) == [
        "BAD",
        "seq 5 in the stream is not the record the segment holds",
    ]
    assert await trim(6, 10, written[9].hash) == [
        "BAD",
        "the trail is archived through seq 0, not 5",
    ]
    assert await redis_client.xlen(log.stream_key) == 10
    assert await trim(1, 5, written[4].hash) == ["OK"]
    assert await trim(1, 5, written[4].hash) == ["DONE"]
    assert await redis_client.xlen(log.stream_key) == 5
    assert await log.archived() == (5, written[4].hash)
