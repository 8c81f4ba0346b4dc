"""Audit records staged by the scripts that do the actions (R15): a transition stages
its record in the same atomic step, a refused one stages nothing, and the writers
chain every staged record exactly once, however many of them race for it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from server.domain.records import Submission
from server.domain.states import Outcome
from server.errors import LeaseLost
from server.store.audit import GENESIS, AuditAction, AuditEntry, AuditError, AuditLog
from server.store.audit_records import StagedAudit, text
from server.store.keys import Keys
from server.store.queue_store import QueueConfig, QueueStore

PREFIX = "{staging}"


def submission(request_id: str) -> Submission:
    return Submission(
        request_id=request_id, branch_id="branch-1", teller_id="teller-1",
        business_type="CASH_DEPOSIT", amount_minor=100, currency="CNY", account="6222",
        customer_name="Li", memo="", fields={}, urgency=1, importance=2, images=(),
    )  # fmt: skip


def entry(action: str, target: str = "", actor: str = "teller-1", **details: Any) -> AuditEntry:
    return AuditEntry(actor=actor, role="TELLER", origin="ipv4:127.0.0.1:5000",
                      action=action, target=target, details=details,
                      at_ms=1_700_000_000_000)  # fmt: skip


def staged_audit(action: str, target: str = "", actor: str = "teller-1") -> StagedAudit:
    return StagedAudit(entry(action, target, actor).pack())


async def chained(log: AuditLog) -> list[AuditEntry]:
    return [record.entry async for record in log.read()]


async def test_a_transition_stages_its_record_and_a_refusal_stages_none(
    redis_client: aioredis.Redis,
) -> None:
    store = QueueStore(redis_client, Keys(PREFIX), QueueConfig())
    log = AuditLog(redis_client, prefix=PREFIX)
    submitted = staged_audit("SUBMIT", "stage-1")
    await store.submit(submission("stage-1"), audit=submitted)
    assert submitted.staged
    retried = staged_audit("SUBMIT", "stage-1")
    await store.submit(submission("stage-1"), audit=retried)
    assert not retried.staged  # nothing happened in Redis: the caller records the retry

    # A claim's record is completed by the script: which item, its token, its time.
    claim = await store.claim("auth-1", audit=staged_audit("CLAIM", actor="auth-1"))
    assert claim is not None
    stale = staged_audit("DECIDE", "stage-1", "auth-1")
    with pytest.raises(LeaseLost):
        await store.decide("stage-1", claim.token + 1, "auth-1", Outcome.APPROVE, audit=stale)
    assert not stale.staged

    staged = [AuditEntry.unpack(body) for _, body in await log.read_staged(10)]
    assert [e.action for e in staged] == ["SUBMIT", "CLAIM"]
    assert staged[0] == entry("SUBMIT", "stage-1")
    claimed_at = claim.record.history[-1].at_ms
    assert staged[1] == replace(entry("CLAIM", "stage-1", "auth-1", token=claim.token),
                                at_ms=claimed_at)  # fmt: skip
    assert await log.head() == (0, GENESIS)  # staged, not chained yet

    await log.drain()
    assert await chained(log) == staged
    assert await redis_client.xlen(log.staged_key) == 0
    assert log.staged_chained == 2
    assert (await log.verify()).ok


async def test_racing_writers_chain_each_staged_record_once(redis_client: aioredis.Redis) -> None:
    # Two AuditLogs stand for two server processes: each chains its own records and
    # whatever it finds staged, as scripts stage more meanwhile.
    logs = [AuditLog(redis_client, prefix=PREFIX, max_batch=16) for _ in range(2)]
    staged_key = logs[0].staged_key

    async def scripts_staging() -> None:
        for n in range(120):
            await redis_client.xadd(staged_key, {"b": entry("DECIDE", f"staged-{n}").pack()})
            logs[n % 2].kick()
            if n % 10 == 0:
                await asyncio.sleep(0.002)

    await asyncio.gather(
        scripts_staging(),
        *(logs[i % 2].append(entry("LOGIN", f"own-{i}")) for i in range(60)),
    )
    await asyncio.gather(*(log.drain() for log in logs))

    targets = [e.target for e in await chained(logs[0])]
    assert sorted(targets) == sorted([f"staged-{n}" for n in range(120)] +
                                     [f"own-{i}" for i in range(60)])  # fmt: skip
    # Staged records keep the order they were staged in.
    assert [t for t in targets if t.startswith("staged-")] == [f"staged-{n}" for n in range(120)]
    assert await redis_client.xlen(staged_key) == 0
    assert logs[0].staged_chained + logs[1].staged_chained == 120
    assert (await logs[0].verify()).ok


async def test_a_new_writer_chains_what_a_dead_one_left_staged(
    redis_client: aioredis.Redis,
) -> None:
    store = QueueStore(redis_client, Keys(PREFIX), QueueConfig())
    for n in range(3):  # done, staged, and then the server died
        await store.submit(submission(f"left-{n}"), audit=staged_audit("SUBMIT", f"left-{n}"))
    restarted = AuditLog(redis_client, prefix=PREFIX)
    await restarted.drain()
    assert [e.target for e in await chained(restarted)] == ["left-0", "left-1", "left-2"]


async def test_an_unreadable_staged_record_is_chained_as_such(
    redis_client: aioredis.Redis,
) -> None:
    log = AuditLog(redis_client, prefix=PREFIX)
    bad_id = await redis_client.xadd(log.staged_key, {"p": b"\xc1 not msgpack"})
    await redis_client.xadd(log.staged_key, {"b": entry("SUBMIT", "after").pack()})
    await log.drain()
    first, second = await chained(log)
    assert first.action == AuditAction.STAGED_UNREADABLE
    assert first.target == text(bad_id)
    assert bytes.fromhex(str(first.details["raw"])) == b"p=\xc1 not msgpack"
    assert second.target == "after"  # not blocked behind it
    assert await redis_client.xlen(log.staged_key) == 0


async def test_a_drain_gives_up_on_a_redis_that_does_not_answer() -> None:
    # A stop must not hang on Redis: staged records wait there for the next writer.
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    mute = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = mute.sockets[0].getsockname()[1]
    client = aioredis.Redis(port=port)
    try:
        log = AuditLog(client, prefix=PREFIX)
        queued = log.append_soon(entry("LOGIN", "mute"))
        assert not await log.drain(timeout_s=0.3)
        with pytest.raises(AuditError, match="cancelled"):
            await queued  # not staged anywhere: it fails, and the caller logs it
    finally:
        await client.aclose(close_connection_pool=True)
        for writer in accepted:
            writer.close()
        mute.close()
        await mute.wait_closed()


async def test_a_full_batch_of_its_own_does_not_leave_staged_records_behind(
    redis_client: aioredis.Redis,
) -> None:
    log = AuditLog(redis_client, prefix=PREFIX, max_batch=2)
    await redis_client.xadd(log.staged_key, {"b": entry("DECIDE", "staged").pack()})
    # Two of its own fill the first batch; the writer goes on for the staged one
    # without another kick.
    await log.append_many([entry("LOGIN", "own-1"), entry("LOGIN", "own-2")])
    for _ in range(100):
        if await redis_client.xlen(log.staged_key) == 0:
            break
        await asyncio.sleep(0.01)
    assert [e.target for e in await chained(log)] == ["own-1", "own-2", "staged"]
