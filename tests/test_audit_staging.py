"""Audit records staged by the scripts that do the actions (R15): a transition stages
its record in the same atomic step, a refused one stages nothing, and the writers
chain every staged record exactly once, however many of them race for it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from authq.v1 import branch_pb2 as bpb
from authq.v1 import branch_pb2_grpc

from server.accounts.model import Role
from server.accounts.store import token_digest
from server.domain.records import Submission
from server.domain.states import Outcome
from server.errors import LeaseLost
from server.store.audit import GENESIS, AuditAction, AuditEntry, AuditError, AuditLog
from server.store.audit_records import StagedAudit, text
from server.store.keys import Keys
from server.store.moves import MoveLapsed, MoveStore
from server.store.queue_store import QueueConfig, QueueStore
from tests.conftest import RunningServer
from tests.helpers import request

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
    assert not retried.staged
    assert retried.repeat

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
        queued = asyncio.ensure_future(log.append(entry("LOGIN", "mute")))
        await asyncio.sleep(0)  # queued before the drain begins
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


async def _in_redis(log: AuditLog) -> list[AuditEntry]:
    """Every record chained or staged, oldest first. The staging stream is read first:
    a record the writer moves from it to the trail in between is seen in the trail
    (or in both: once here)."""
    staged = [AuditEntry.unpack(body) for _, body in await log.read_staged(1000)]
    entries = {entry.pack(): entry for entry in await chained(log) + staged}
    return list(entries.values())


async def test_every_audited_action_and_refusal_is_in_redis_before_its_reply(
    server: RunningServer,
) -> None:
    log = server.runtime.audit
    await server.account("authorizer-1", [Role.AUTHORIZER])
    async with server.teller() as teller:
        await teller.submit(request("CASH_DEPOSIT", request_id="staged-move"))

    async def recorded(action: str, target: str) -> list[AuditEntry]:
        return [e for e in await _in_redis(log) if (e.action, e.target) == (action, target)]

    async with server.supervisor("supervisor-1") as first, server.supervisor("supervisor-2") as s2:
        # A login and an account change: staged in the transaction that does them.
        assert await recorded("LOGIN", "supervisor-2")
        await first.set_account_enabled("authorizer-1", False, "on leave")
        (disabled,) = await recorded("ACCOUNT_DISABLE", "authorizer-1")
        assert disabled.details["reason"] == "on leave"
        # A refusal (no script ran) and an action done by a script, each read back the
        # moment its reply arrives: nothing is flushed or awaited in between.
        with pytest.raises(grpc.aio.AioRpcError):
            await first.request_move("staged-move", "")
        (refusal,) = await recorded("REPRIORITIZE_REQUEST", "staged-move")
        assert "reason" in refusal.outcome
        move = await first.request_move("staged-move", "customer is waiting")
        requested = (await recorded("REPRIORITIZE_REQUEST", "staged-move"))[1]
        assert requested.outcome == "OK"
        assert requested.details["expires_at_ms"] == move.expires_at_ms  # from the script
        await s2.confirm_move("staged-move")
        (confirmed,) = await recorded("REPRIORITIZE_CONFIRM", "staged-move")
        assert confirmed.details["requester"] == "supervisor-1"
        scores = confirmed.details["old_score_us"], confirmed.details["new_score_us"]
        assert all(isinstance(score, int) for score in scores)
        assert scores[1] < scores[0]  # type: ignore[operator]
        stored = await server.runtime.store.client.hget(
            server.runtime.store.keys.request("staged-move"), "sc"
        )
        assert scores[1] == int(stored or 0)

        await server.runtime.accounts.create_branch("branch-9", "branch 9")
        emergency = await first.declare_emergency("the network is down", ["branch-9"])
        (declared,) = await recorded("EMERGENCY_DECLARE", "branch-9")
        assert declared.details["emergency_id"] == emergency.emergency_id
        await first.end_emergency(emergency.emergency_id, "back up")
        assert await recorded("EMERGENCY_END", emergency.emergency_id)

        # An extended-hours window: asked for in a transaction, decided by a script.
        async with server.teller() as teller:
            now_ms = int(time.time() * 1000)
            window = await branch_pb2_grpc.BranchServiceStub(teller.channel).RequestExtendedHours(
                bpb.RequestExtendedHoursRequest(start_ms=now_ms + 3_600_000,
                                                end_ms=now_ms + 7_200_000, reason="payroll"),
                metadata=teller.metadata,
            )  # fmt: skip
        (asked,) = await recorded("HOURS_WINDOW_REQUEST", "branch-1")
        assert asked.details["reason"] == "payroll"
        decide = branch_pb2_grpc.BranchServiceStub(s2.channel).DecideExtendedHours
        await decide(bpb.DecideExtendedHoursRequest(window_id=window.window_id, approve=True),
                     metadata=s2.metadata)  # fmt: skip
        assert await recorded("HOURS_WINDOW_DECIDE", window.window_id)

    # The trail keeps the order of events: the refusal before the action that followed.
    await server.runtime.center.flush_audit()
    actions = [(e.action, e.outcome == "OK") for e in await chained(log)
               if e.action.startswith(("REPRIORITIZE", "EMERGENCY"))]  # fmt: skip
    assert actions == [
        ("REPRIORITIZE_REQUEST", False),
        ("REPRIORITIZE_REQUEST", True),
        ("REPRIORITIZE_CONFIRM", True),
        ("EMERGENCY_DECLARE", True),
        ("EMERGENCY_END", True),
    ]
    assert [e.action for e in await chained(log) if e.action.startswith("HOURS_WINDOW")] == [
        "HOURS_WINDOW_REQUEST",
        "HOURS_WINDOW_DECIDE",
    ]
    assert await redis_len(server, log.staged_key) == 0
    assert (await log.verify()).ok


async def test_a_logout_ends_its_token_and_stages_its_record_in_one_step(
    server: RunningServer,
) -> None:
    log = server.runtime.audit
    keys = server.runtime.store.keys
    client = server.runtime.store.client
    async with server.teller() as teller:
        token = teller.token
        await teller.logout()
        # Read the moment the reply arrives: the script named the user from the token.
        logouts = [e for e in await _in_redis(log) if e.action == "LOGOUT"]
        assert [(e.actor, e.target, e.outcome) for e in logouts] == [("teller-1", "teller-1", "OK")]
        assert logouts[0].origin.startswith("ipv4:127.0.0.1")
        assert not await client.exists(keys.token(token_digest(token)))
        assert await client.scard(keys.account_tokens("teller-1")) == 0
        # The same token again ends nothing, and so records nothing.
        teller.token = token
        await teller.logout()
    assert len([e for e in await _in_redis(log) if e.action == "LOGOUT"]) == 1


async def redis_len(server: RunningServer, key: str) -> int:
    return int(await server.runtime.store.client.xlen(key))


async def test_a_lapse_is_staged_by_whichever_step_sees_it_first(
    redis_client: aioredis.Redis,
) -> None:
    keys = Keys(PREFIX)
    store = QueueStore(redis_client, keys, QueueConfig())
    moves = MoveStore(redis_client, keys, window_ms=50, queue=QueueConfig())
    log = AuditLog(redis_client, prefix=PREFIX)
    lapse = entry("REPRIORITIZE_LAPSE", actor="system").pack()
    for rid in ("lapse-1", "lapse-2", "lapse-3"):
        await store.submit(submission(rid))
        await moves.request(rid, "supervisor-1", f"first try {rid}", None, lapse)
    await asyncio.sleep(0.1)  # all three lapse unconfirmed

    with pytest.raises(MoveLapsed):  # a confirmation sees the first lapse
        await moves.confirm("lapse-1", "supervisor-2", None, lapse)
    # A new request replaces the second, and stages its lapse before its own record.
    again = StagedAudit(entry("REPRIORITIZE_REQUEST", "lapse-2", "supervisor-1").pack())
    await moves.request("lapse-2", "supervisor-1", "second try", again, lapse)
    assert len(await moves.sweep(lapse)) == 1  # the sweep finds only the third
    assert await moves.sweep(lapse) == []
    with pytest.raises(MoveLapsed):  # seen already: told, not staged again
        await moves.confirm("lapse-1", "supervisor-2", None, lapse)

    staged = [AuditEntry.unpack(body) for _, body in await log.read_staged(10)]
    assert [(e.action, e.target) for e in staged] == [
        ("REPRIORITIZE_LAPSE", "lapse-1"),
        ("REPRIORITIZE_LAPSE", "lapse-2"),
        ("REPRIORITIZE_REQUEST", "lapse-2"),
        ("REPRIORITIZE_LAPSE", "lapse-3"),
    ]
    first = staged[0]
    assert first.outcome == "LAPSED: not confirmed within 0.05 s (R6)"
    assert first.details["reason"] == "first try lapse-1"
    assert first.details["requester"] == "supervisor-1"
    lapsed_at, renewed_until = first.details["expires_at_ms"], staged[2].details["expires_at_ms"]
    assert isinstance(lapsed_at, int)
    assert isinstance(renewed_until, int)
    assert lapsed_at <= first.at_ms < renewed_until
