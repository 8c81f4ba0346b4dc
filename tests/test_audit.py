"""The hash-chained audit trail (R15) on a real Redis: appends, concurrent writers,
and verify() catching each kind of tampering done directly in Redis."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from server.admin.audit_cli import run_show, run_verify
from server.store.audit import (
    GENESIS,
    AuditAction,
    AuditEntry,
    AuditLog,
    chain_hash,
)

# Stream entries as redis-py returns them: (id, {field: value}), all bytes.
Entries = list[tuple[bytes, dict[Any, Any]]]


def entry(n: int, **overrides: Any) -> AuditEntry:
    values: dict[str, Any] = {
        "actor": f"teller-{n % 7}",
        "role": "TELLER",
        "origin": "10.0.0.7:51234",
        "action": AuditAction.SUBMIT,
        "target": f"req-{n}",
        "details": {"branch": "branch-1", "amount_minor": 1000 * n},
        "at_ms": 1_700_000_000_000 + n,
    }
    values.update(overrides)
    return AuditEntry(**values)


async def filled(client: aioredis.Redis, n: int = 10) -> AuditLog:
    log = AuditLog(client)
    await log.append_many(entry(i) for i in range(1, n + 1))
    return log


async def stored(client: aioredis.Redis, log: AuditLog) -> Entries:
    entries: Any = await client.xrange(log.stream_key)
    return [(stream_id, dict(fields)) for stream_id, fields in entries]


async def rewrite(
    client: aioredis.Redis,
    log: AuditLog,
    change: Callable[[Entries], None],
) -> None:
    """Stream entries cannot be edited in place: a tamperer rebuilds the stream."""
    entries = await stored(client, log)
    change(entries)
    await client.delete(log.stream_key)
    for stream_id, fields in entries:
        await client.xadd(log.stream_key, dict(fields), id=stream_id)


async def test_append_and_read_back(redis_client: aioredis.Redis) -> None:
    log = AuditLog(redis_client)
    first = await log.append(entry(1))
    second = await log.append(
        entry(2, action="DECIDE", outcome="R4: review already started", details={})
    )
    assert (first.seq, first.prev, first.stream_id) == (1, GENESIS, "1-0")
    assert (second.seq, second.prev) == (2, first.hash)
    assert second.hash == chain_hash(2, first.hash, second.entry.pack())

    records = [record async for record in log.read()]
    assert records == [first, second]
    assert records[0].entry == entry(1)
    assert records[0].entry.action == "SUBMIT"
    assert records[1].entry.outcome == "R4: review already started"
    assert await log.head() == (2, second.hash)


async def test_read_pages_from_a_seq_with_a_count(redis_client: aioredis.Redis) -> None:
    log = await filled(redis_client, 23)
    seqs = [record.seq async for record in log.read(from_seq=5, count=11, page_size=3)]
    assert seqs == list(range(5, 16))
    everything = [record.seq async for record in log.read(page_size=4)]
    assert everything == list(range(1, 24))
    assert [record.seq async for record in log.read(from_seq=30)] == []


async def test_the_body_is_canonical_and_details_are_a_private_copy() -> None:
    details: dict[str, Any] = {"b": 1, "a": "x"}
    first = entry(1, details=details)
    details["c"] = True
    assert dict(first.details) == {"a": "x", "b": 1}
    reordered = entry(1, details={"a": "x", "b": 1})
    assert first.pack() == reordered.pack()
    assert AuditEntry.unpack(first.pack()) == first


def test_entries_are_checked_when_built() -> None:
    with pytest.raises(TypeError, match="details"):
        entry(1, details={"images": [b"jpeg"]})
    with pytest.raises(ValueError, match="action"):
        entry(1, action="")
    with pytest.raises(TypeError, match="at_ms"):
        entry(1, at_ms=1.5)


async def test_an_oversized_entry_is_refused_before_anything_is_written(
    redis_client: aioredis.Redis,
) -> None:
    log = AuditLog(redis_client)
    with pytest.raises(ValueError, match="keep details small"):
        await log.append(entry(1, details={"note": "x" * 20_000}))
    assert await log.head() == (0, GENESIS)


async def test_concurrent_appends_form_a_gap_free_chain(redis_client: aioredis.Redis) -> None:
    log = AuditLog(redis_client)
    records = await asyncio.gather(*(log.append(entry(i)) for i in range(200)))
    assert sorted(record.seq for record in records) == list(range(1, 201))
    report = await log.verify()
    assert report.ok, report.problems
    assert report.checked == 200


async def test_writers_in_two_processes_share_one_chain(redis_client: aioredis.Redis) -> None:
    # Two AuditLogs stand for two server processes: each one's cached head goes stale
    # as the other writes, so the compare-and-set has to refuse and they re-chain.
    logs = [AuditLog(redis_client), AuditLog(redis_client)]
    batches = await asyncio.gather(
        *(logs[i % 2].append_many([entry(i), entry(i + 1000)]) for i in range(100))
    )
    for batch in batches:
        # append_many's entries stay consecutive even when the head moves under it.
        assert batch[1].seq == batch[0].seq + 1
        assert batch[1].prev == batch[0].hash
    report = await logs[0].verify()
    assert report.ok, report.problems
    assert report.checked == 200


async def call_script(log: AuditLog, *records: Any, writer: str = "w", claim: str = "0") -> Any:
    """audit_append.lua called directly, with the head the log has now."""
    head_seq, head_hash = await log.head()
    args: list[Any] = [head_seq, head_hash, GENESIS, writer, claim, 500, "", *records]
    return await log._script(keys=log.append_keys, args=args)


async def test_a_batch_whose_reply_was_lost_is_not_written_twice(
    redis_client: aioredis.Redis,
) -> None:
    log = await filled(redis_client, 3)
    _, head_hash = await log.head()
    body = entry(4).pack()
    record = [4, head_hash, chain_hash(4, head_hash, body), body]
    assert await call_script(log, *record) == [b"OK"]
    # The same call again, as a client retrying after a dropped connection would (the
    # head has moved on to this very record, so only the DONE check can tell).
    head_seq, _ = await log.head()
    args: list[Any] = [3, head_hash, GENESIS, "w", "0", 500, "", *record]
    reply = await log._script(keys=log.append_keys, args=args)
    assert (head_seq, reply) == (4, [b"DONE"])
    assert await redis_client.xlen(log.stream_key) == 4
    assert (await log.verify()).ok


async def test_a_batch_that_does_not_link_is_refused_whole(redis_client: aioredis.Redis) -> None:
    log = await filled(redis_client, 2)
    _, head_hash = await log.head()
    good = [3, head_hash, chain_hash(3, head_hash, b"x"), b"x"]
    unlinked = [4, "f" * 64, "0" * 64, b"y"]
    reply = await call_script(log, *good, *unlinked)
    assert reply[0] == b"BAD"
    assert await redis_client.xlen(log.stream_key) == 2


async def test_a_writer_holding_the_turn_goes_first(redis_client: aioredis.Redis) -> None:
    log = await filled(redis_client, 2)
    _, head_hash = await log.head()
    body = entry(3).pack()
    record = [3, head_hash, chain_hash(3, head_hash, body), body]
    # A writer that lost twice and asks for the turn on its stale head...
    stale: list[Any] = [1, GENESIS, GENESIS, "slow", "1", 500, "", *record]
    assert (await log._script(keys=log.append_keys, args=stale))[0] == b"MOVED"
    assert await redis_client.get(log.turn_key) == b"slow"
    # ...holds back everyone else, even with the right head...
    assert (await call_script(log, *record, writer="fast"))[0] == b"WAIT"
    # ...until its own append goes in and gives the turn back.
    assert await call_script(log, *record, writer="slow") == [b"OK"]
    assert await redis_client.get(log.turn_key) is None


async def test_many_writers_in_many_processes_all_get_through(
    redis_client: aioredis.Redis,
) -> None:
    # Ten AuditLogs stand for ten server processes: without the turn, a writer that
    # keeps losing the race to writers with fresh heads would give up.
    logs = [AuditLog(redis_client, give_up_after_s=5) for _ in range(10)]

    async def writer(w: int) -> None:
        for i in range(40):
            await logs[w % 10].append(entry(w * 100 + i))

    await asyncio.gather(*(writer(w) for w in range(50)))
    report = await logs[0].verify()
    assert (report.ok, report.checked) == (True, 2000), report.problems


async def test_verify_accepts_an_empty_log(redis_client: aioredis.Redis) -> None:
    report = await AuditLog(redis_client).verify()
    assert (report.ok, report.checked, report.problems) == (True, 0, [])


def _edit_body(entries: Entries) -> None:
    fields = entries[3][1]
    body = msgpack.unpackb(fields[b"body"])
    body["outcome"] = "OK"
    body["actor"] = "someone-else"
    fields[b"body"] = msgpack.packb(body)


def _edit_body_and_its_hash(entries: Entries) -> None:
    _edit_body(entries)
    fields = entries[3][1]
    fields[b"hash"] = chain_hash(4, fields[b"prev"].decode(), fields[b"body"]).encode()


def _edit_hash(entries: Entries) -> None:
    entries[3][1][b"hash"] = hashlib.sha256(b"forged").hexdigest().encode()


def _swap_in_place(entries: Entries) -> None:
    (id3, fields3), (id4, fields4) = entries[2], entries[3]
    entries[2], entries[3] = (id3, fields4), (id4, fields3)


def _swap_bodies(entries: Entries) -> None:
    fields3, fields4 = entries[2][1], entries[3][1]
    fields3[b"body"], fields4[b"body"] = fields4[b"body"], fields3[b"body"]


Tamper = Callable[[aioredis.Redis, AuditLog], Awaitable[Any]]


async def _xdel_middle(client: aioredis.Redis, log: AuditLog) -> None:
    await client.xdel(log.stream_key, "4-0")


async def _xdel_last(client: aioredis.Redis, log: AuditLog) -> None:
    await client.xdel(log.stream_key, "10-0")


async def _readd_swapped(client: aioredis.Redis, log: AuditLog) -> None:
    # Delete seq 3 and 4 and add them back at the end, 4 first: ids must grow, so they
    # can only come back after seq 10.
    entries = dict(await stored(client, log))
    await client.xdel(log.stream_key, "3-0", "4-0")
    await client.xadd(log.stream_key, entries[b"4-0"], id="11-0")
    await client.xadd(log.stream_key, entries[b"3-0"], id="12-0")


async def _move_head_back(client: aioredis.Redis, log: AuditLog) -> None:
    entries = await stored(client, log)
    await client.hset(log.head_key, mapping={"seq": 9, "hash": entries[8][1][b"hash"]})


async def _forge_head_hash(client: aioredis.Redis, log: AuditLog) -> None:
    await client.hset(log.head_key, "hash", "e" * 64)


async def _drop_head(client: aioredis.Redis, log: AuditLog) -> None:
    await client.delete(log.head_key)


def _rewriting(
    change: Callable[[Entries], None],
) -> Tamper:
    async def tamper(client: aioredis.Redis, log: AuditLog) -> None:
        await rewrite(client, log, change)

    return tamper


TAMPERING: dict[str, tuple[Tamper, list[str]]] = {
    "edit a body field": (
        _rewriting(_edit_body),
        ["seq 4: stored hash does not match"],
    ),
    "edit a body and recompute its hash": (
        _rewriting(_edit_body_and_its_hash),
        ["seq 5: prev does not match the hash of seq 4"],
    ),
    "edit a stored hash": (
        _rewriting(_edit_hash),
        ["seq 4: stored hash does not match", "seq 5: prev does not match"],
    ),
    "swap two bodies": (
        _rewriting(_swap_bodies),
        ["seq 3: stored hash does not match", "seq 4: stored hash does not match"],
    ),
    "swap two records": (
        _rewriting(_swap_in_place),
        ["seq 4: stored under stream id 3-0", "seq 3 found after seq 4"],
    ),
    "delete a record": (_xdel_middle, ["seq 4 missing before seq 5"]),
    "delete the last record": (_xdel_last, ["the chain head points at seq 10"]),
    "delete two and re-add them swapped": (
        _readd_swapped,
        ["seqs 3..4 missing before seq 5", "seq 4: stored under stream id 11-0"],
    ),
    "move the head back": (_move_head_back, ["the chain head points at seq 9"]),
    "forge the head hash": (_forge_head_hash, ["the chain head points at seq 10 (eeee"]),
    "remove the head": (_drop_head, ["the chain head is missing"]),
}


@pytest.mark.parametrize("name", list(TAMPERING))
async def test_verify_catches_tampering(redis_client: aioredis.Redis, name: str) -> None:
    log = await filled(redis_client)
    assert (await log.verify()).ok
    tamper, expected = TAMPERING[name]
    await tamper(redis_client, log)

    report = await log.verify()
    assert not report.ok
    for text in expected:
        assert any(problem.startswith(text) for problem in report.problems), report.problems


async def test_verify_tolerates_appends_while_it_runs(redis_client: aioredis.Redis) -> None:
    log = await filled(redis_client, 50)
    writer = AuditLog(redis_client)

    async def keep_appending() -> None:
        for i in range(200):
            await writer.append(entry(100 + i))

    task = asyncio.create_task(keep_appending())
    reports = [await log.verify() for _ in range(5)]
    await task
    assert all(report.ok for report in reports), [r.problems for r in reports]


async def test_cli_runners(redis_client: aioredis.Redis) -> None:
    log = await filled(redis_client, 5)
    out = io.StringIO()
    assert await run_verify(log, out) == 0
    _, head_hash = await log.head()
    assert out.getvalue().splitlines() == [
        "audit chain OK: 5 records verified",
        f"next time, to check only what comes after: --after 5:{head_hash}",
    ]

    out = io.StringIO()
    assert await run_show(log, from_seq=2, count=2, as_json=True, out=out) == 0
    shown = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(item["seq"], item["target"]) for item in shown] == [(2, "req-2"), (3, "req-3")]

    await redis_client.xdel(log.stream_key, "2-0")
    await redis_client.hset(log.head_key, "seq", 4)
    out = io.StringIO()
    assert await run_verify(log, out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("seq 2 missing before seq 3")
    assert lines[1].startswith("the chain head points at seq 4")
    assert lines[-1] == "audit chain BROKEN: 2 problems in 4 records"


async def run_admin(redis_url: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.admin.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "AUTHQ_REDIS_URL": redis_url},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_admin_command_line_exit_codes(redis_client: aioredis.Redis, redis_url: str) -> None:
    log = await filled(redis_client, 3)
    code, out, _ = await run_admin(redis_url, "audit", "verify")
    assert (code, out.splitlines()[0]) == (0, "audit chain OK: 3 records verified")

    code, out, _ = await run_admin(redis_url, "audit", "show", "--from", "3")
    assert code == 0
    assert "SUBMIT req-3 -> OK" in out

    await rewrite(redis_client, log, _edit_hash_of_first)
    code, out, _ = await run_admin(redis_url, "--redis-url", redis_url, "audit", "verify")
    assert code == 1
    first, second = out.splitlines()[:2]
    assert first == "seq 1: stored hash does not match its content (record changed)"
    assert second.startswith("seq 2: prev does not match the hash of seq 1")

    code, _, err = await run_admin("redis://127.0.0.1:1/0", "--redis-url", "", "audit", "verify")
    assert code == 2
    assert "AUTHQ_REDIS_URL" in err
    code, _, err = await run_admin("redis://127.0.0.1:1/0", "audit", "verify")
    assert code == 2
    assert "cannot reach Redis" in err


def _edit_hash_of_first(entries: Entries) -> None:
    entries[0][1][b"hash"] = b"0" * 64
