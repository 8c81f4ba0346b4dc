"""The supervisor's live queue (WatchQueue) against a real server, the bounded window
behind its figures, and SetAccountEnabled (R12)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from authq.v1 import supervisor_pb2 as spb

from authorizer_console.client import AuthorizerClient
from server.accounts.model import Role
from server.domain.records import HistoryEntry
from server.domain.states import State
from server.queue_watch import RecentActivity, percentile
from tests.conftest import PASSWORD, RunningServer
from tests.helpers import request


async def snapshot_where(
    stream: AsyncIterator[spb.QueueSnapshot], check: Callable[[spb.QueueSnapshot], bool]
) -> spb.QueueSnapshot:
    """The first snapshot for which ``check`` holds (the stream is pushed, so a change
    shows up in the next few snapshots or the test times out)."""
    async with asyncio.timeout(10):
        async for snapshot in stream:
            if check(snapshot):
                return snapshot
    raise AssertionError("the stream ended")


async def test_a_submit_shows_up_in_the_next_snapshot(server: RunningServer) -> None:
    async with server.supervisor() as supervisor, server.teller() as teller:
        stream = supervisor.watch_queue()
        first = await snapshot_where(stream, lambda s: True)
        assert first.overview.waiting == 0
        assert not first.waiting_list
        await teller.submit(request(request_id="watch-0001"))
        await teller.submit(request(request_id="watch-0002", urgent=True))
        seen = await snapshot_where(stream, lambda s: s.overview.waiting == 2)
        # The urgent one is offered first (R7), and the list says so.
        assert [(i.request_id, i.position) for i in seen.waiting_list] == [
            ("watch-0002", 0),
            ("watch-0001", 1),
        ]
        assert seen.waiting_list[1].branch_id == "branch-1"
        assert seen.waiting_list[1].business_type == "CASH_WITHDRAWAL"
        assert seen.waiting_list[1].amount.minor_units == 1_200_050
        assert [(b.branch_id, b.waiting) for b in seen.overview.by_branch] == [("branch-1", 2)]
        assert seen.seq > first.seq
        await stream.aclose()


async def test_claims_and_decisions_feed_authorizers_rate_and_waits(
    server: RunningServer,
) -> None:
    async with (
        server.supervisor() as supervisor,
        server.teller() as teller,
        server.authorizer() as authorizer,
        authorizer.session() as console,
    ):
        stream = supervisor.watch_queue()
        console.credit(1)
        waiting = await snapshot_where(stream, lambda s: any(a.waiting for a in s.authorizers))
        assert [(a.authorizer_id, a.waiting, a.holding) for a in waiting.authorizers] == [
            ("authorizer-1", True, 0)
        ]
        assert waiting.active_authorizers == 1
        await teller.submit(request(request_id="watch-0003"))
        offer = await asyncio.wait_for(console.offers.get(), 5)
        holding = await snapshot_where(stream, lambda s: any(a.holding for a in s.authorizers))
        assert [(a.authorizer_id, a.holding) for a in holding.authorizers] == [("authorizer-1", 1)]
        assert holding.wait_samples == 1
        await console.decide("watch-0003", offer.lease.fencing_token, "approve")
        decided = await snapshot_where(stream, lambda s: s.decisions_last_minute == 1)
        # Summed over the buckets: a minute boundary may fall between claim and snapshot.
        assert sum(m.decisions for m in decided.minutes) == 1
        assert sum(m.claims for m in decided.minutes) == 1
        assert len(decided.minutes) == 30
        await stream.aclose()


async def test_moves_and_emergencies_are_pushed(server: RunningServer) -> None:
    async with (
        server.supervisor() as supervisor,
        server.teller() as teller,
    ):
        await teller.submit(request(request_id="watch-0004"))
        stream = supervisor.watch_queue()
        await snapshot_where(stream, lambda s: s.overview.waiting == 1)
        await supervisor.request_move("watch-0004", "customer waiting at the counter")
        moved = await snapshot_where(stream, lambda s: len(s.pending_moves) == 1)
        assert moved.pending_moves[0].requester == "supervisor-1"
        declared = await supervisor.declare_emergency("center network failure", ["branch-1"])
        shown = await snapshot_where(stream, lambda s: len(s.emergencies) == 1)
        assert shown.emergencies[0].emergency_id == declared.emergency_id
        await supervisor.end_emergency(declared.emergency_id)
        await snapshot_where(stream, lambda s: not s.emergencies)
        await stream.aclose()


@pytest.mark.parametrize("role", [Role.TELLER, Role.AUTHORIZER, Role.ONSITE_REVIEWER])
async def test_watch_refused_outside_the_center_management(
    server: RunningServer, role: Role
) -> None:
    user = f"not-a-supervisor-{role.value.lower()}"
    branch = "branch-1" if role in (Role.TELLER, Role.ONSITE_REVIEWER) else ""
    await server.account(user, [role], branch)
    async with AuthorizerClient(server.target, user, PASSWORD) as client:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in client.watch_queue():
                pass
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "R13" in (refused.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await client.set_account_enabled("authorizer-1", False, "leave")
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_supervisor_disables_and_enables_an_authorizer(server: RunningServer) -> None:
    await server.account("authorizer-7", [Role.AUTHORIZER])
    await server.account("supervisor-2", [Role.SUPERVISOR])
    async with server.supervisor() as supervisor:
        async with AuthorizerClient(server.target, "authorizer-7", PASSWORD) as authorizer:
            reply = await supervisor.set_account_enabled("authorizer-7", False, "annual leave")
            assert reply.status == "DISABLED"
            with pytest.raises(grpc.aio.AioRpcError) as revoked:
                await authorizer.set_away(True)
            assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError):
                await authorizer.login()
            reply = await supervisor.set_account_enabled("authorizer-7", True)
            assert reply.status == "ACTIVE"
            await authorizer.login()

        with pytest.raises(grpc.aio.AioRpcError) as no_reason:
            await supervisor.set_account_enabled("authorizer-7", False, "  ")
        assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "reason" in (no_reason.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as not_authorizer:
            await supervisor.set_account_enabled("supervisor-2", False, "leave")
        assert not_authorizer.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "AUTHORIZER" in (not_authorizer.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await supervisor.set_account_enabled("nobody-here", False, "leave")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    await server.runtime.center.flush_audit()
    actions = [
        (r.entry.action, r.entry.target, r.entry.outcome)
        async for r in server.runtime.audit.read()
        if r.entry.actor == "supervisor-1"
    ]
    assert ("ACCOUNT_DISABLE", "authorizer-7", "OK") in actions
    assert ("ACCOUNT_ENABLE", "authorizer-7", "OK") in actions


def entry(rid: str, event: str, state: State, at_ms: int) -> HistoryEntry:
    return HistoryEntry(rid, 1, at_ms, event, "x", state)


def test_recent_activity_measures_queue_waits_and_decisions() -> None:
    activity = RecentActivity()
    base = 1_700_000_040_000 + 40_000  # 40 s into a minute
    activity.add(entry("a", "SUBMITTED", State.QUEUED, base))
    activity.add(entry("b", "SUBMITTED", State.QUEUED, base + 1000))
    activity.add(entry("a", "CLAIMED", State.CLAIMED, base + 4000))
    activity.add(entry("a", "SUPPLEMENT_REQUESTED", State.NEEDS_SUPPLEMENT, base + 5000))
    # Supplied: back in the queue, its wait starts again.
    activity.add(entry("a", "SUPPLIED", State.QUEUED, base + 30_000))
    activity.add(entry("a", "CLAIMED", State.CLAIMED, base + 31_000))
    activity.add(entry("b", "CLAIMED", State.CLAIMED, base + 31_000))
    activity.add(entry("a", "APPROVED", State.APPROVED, base + 32_000))
    # A claim of an item whose queue entry this process never saw adds no sample.
    activity.add(entry("c", "CLAIMED", State.CLAIMED, base + 32_000))
    assert activity.waits_since(base) == [1000, 4000, 30_000]
    assert activity.decisions_since(base) == 2
    assert activity.decisions_since(base + 6000) == 1
    minutes = activity.minutes(base + 32_000, count=2)
    assert [(m.decisions, m.claims) for m in minutes] == [(1, 1), (1, 2)]
    assert minutes[1].wait_max_ms == 30_000


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.9) == 90
    assert percentile(values, 0.99) == 99
    assert percentile([7], 0.99) == 7
    assert percentile([], 0.5) == 0
