"""The witness: chain heads noted on disk beside the segment files, which a trail
rewritten in Redis no longer matches (R15). The chain alone cannot show a rewrite that
re-chains every record after the change; the notes can."""

from __future__ import annotations

from pathlib import Path

import msgpack
import redis.asyncio as aioredis

from server.archive.audit_mover import AuditMover
from server.store.audit import Anchor, AuditLog
from server.store.audit_records import StoredRecord, chain_hash, stream_id_for
from server.store.audit_witness import AuditWitness
from tests.test_audit import entry, filled
from tests.test_audit_segments import admin, segmented
from tests.test_audit_segments import filled as filled_segmented


async def rechain(client: aioredis.Redis, log: AuditLog, keep: int, changed_from: int) -> None:
    """What someone who can write Redis does: keeps the first ``keep`` records, changes
    the body of each from ``changed_from`` on, and chains them all again, head too."""
    records = await log.stored(1, keep)
    out: list[StoredRecord] = []
    for record in records:
        prev = out[-1].hash if out else record.prev
        body = record.body
        if record.seq >= changed_from:
            raw = msgpack.unpackb(body)
            raw["details"]["amount_minor"] += 1
            body = msgpack.packb(raw)
        out.append(StoredRecord(record.seq, prev, chain_hash(record.seq, prev, body), body))
    await client.delete(log.stream_key)
    for record in out:
        await client.xadd(log.stream_key, dict(record.fields()), id=stream_id_for(record.seq))
    await client.hset(log.head_key, mapping={"seq": out[-1].seq, "hash": out[-1].hash})


async def noted(log: AuditLog, witness: AuditWitness) -> Anchor:
    seq, digest = await log.head()
    assert witness.note(Anchor(seq, digest), 1_700_000_000_000)
    return Anchor(seq, digest)


async def test_a_rechained_trail_passes_the_chain_but_not_the_witness(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = await filled(redis_client, 10)
    witness = AuditWitness(tmp_path / "witness.txt")
    await noted(log, witness)
    await log.append_many(entry(n) for n in range(11, 14))
    assert (await log.verify(witness=witness.read())).witnessed == 1

    await rechain(redis_client, log, keep=13, changed_from=4)
    assert (await log.verify()).ok  # the chain alone is consistent again
    report = await log.verify(witness=witness.read())
    assert report.problems == [
        "seq 10: not the record the witness noted at 2023-11-14 22:13:20 UTC (hash "
        f"{witness.read().notes[0].anchor.hash[:16]}): the trail was rewritten at or before it"
    ]
    # A change after the last note is for the next note to catch.
    later = AuditWitness(tmp_path / "later.txt")
    assert later.note(Anchor(13, (await log.head())[1]), 1)
    await rechain(redis_client, log, keep=13, changed_from=12)
    assert not (await log.verify(witness=later.read())).ok


async def test_records_removed_after_a_note_are_named(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = await filled(redis_client, 10)
    witness = AuditWitness(tmp_path / "witness.txt")
    await noted(log, witness)
    await rechain(redis_client, log, keep=8, changed_from=99)
    assert (await log.verify()).ok
    assert (await log.verify(witness=witness.read())).problems == [
        "the witness noted seq 10 at 2023-11-14 22:13:20 UTC, but the trail ends at seq 8 "
        "(records removed)"
    ]


async def test_the_archiver_notes_the_head_when_it_grew(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = segmented(redis_client, tmp_path)
    mover = AuditMover(log, witness_every_s=0)
    assert not await mover.note_head()  # an empty trail: nothing to note
    await filled_segmented(log, 5)
    assert await mover.note_head()
    assert not await mover.note_head()  # no growth since
    await filled_segmented(log, 2)
    assert await mover.note_head()
    assert [n.anchor.seq for n in mover.witness.read().notes] == [5, 7]
    assert mover.witness.path == tmp_path / "archive" / "audit" / "witness.txt"

    seldom = AuditMover(log)  # every 5 minutes: the first round notes, the next waits
    await filled_segmented(log, 1)
    assert await seldom.note_head()
    await filled_segmented(log, 1)
    assert not await seldom.note_head()


async def test_a_note_cut_short_is_dropped_and_a_changed_line_is_named(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    log = await filled(redis_client, 4)
    witness = AuditWitness(tmp_path / "witness.txt")
    first = await noted(log, witness)
    with witness.path.open("a") as handle:
        handle.write(f"6 {first.hash} {' ' * 40}")  # an append a crash cut short
    assert witness.read().problems == []
    await log.append_many([entry(5)])
    await noted(log, witness)
    assert [n.anchor.seq for n in witness.read().notes] == [4, 5]
    assert witness.path.read_text().endswith(" 1700000000000\n")  # nothing of the cut note
    assert (await log.verify(witness=witness.read())).ok

    # The first note cut short: the file then holds only the note after it.
    alone = AuditWitness(tmp_path / "alone.txt")
    alone.path.write_text("4 0123")
    assert alone.note(first, 1_700_000_000_000)
    assert alone.path.read_text() == f"4 {first.hash} 1700000000000\n"

    lines = witness.path.read_text().splitlines()
    witness.path.write_text(f"{lines[1]}\n{lines[0]}\nnonsense\n")
    report = await log.verify(witness=witness.read())
    assert report.problems == [
        "witness.txt line 2: seq 4 after seq 5 (the file was changed)",
        "witness.txt line 3: not a note: 'nonsense'",
    ]


async def test_verify_reads_the_witness_beside_the_segments(
    redis_client: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    log = segmented(redis_client, tmp_path)
    await filled_segmented(log, 6)
    assert await AuditMover(log, witness_every_s=0).note_head()
    code, out = await admin(redis_url, tmp_path, "audit", "verify")
    assert code == 0
    path = tmp_path / "archive" / "audit" / "witness.txt"
    assert out.splitlines()[-1] == f"witness: the trail matches the 1 notes of {path} it reached"
    await rechain(redis_client, log, keep=6, changed_from=2)
    code, out = await admin(redis_url, tmp_path, "audit", "verify")
    assert code == 1
    assert "seq 6: not the record the witness noted" in out
