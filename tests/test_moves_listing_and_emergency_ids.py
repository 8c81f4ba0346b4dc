"""Two things a supervisor names or is shown: the pending moves (R6) listed are those
that can still be confirmed, of requests still waiting; and an emergency id (R8) from
outside is refused unless it has the form the center gives one, before it becomes part
of a Redis key name."""

from __future__ import annotations

import time

import grpc
import pytest
from authq.refusals import refusal_of
from authq.v1 import teller_pb2 as tpb

from tests.conftest import RunningServer
from tests.helpers import fallback_record, request
from tests.test_queue_watch import snapshot_where

RID = "move-list-0001"


async def _waiting_with_a_pending_move(server: RunningServer) -> None:
    async with server.teller() as teller:
        await teller.submit(request(request_id=RID))
    async with server.supervisor("supervisor-1") as first:
        await first.request_move(RID, "customer waiting at the counter")


async def _listed(server: RunningServer) -> list[str]:
    async with server.supervisor("supervisor-2") as second:
        return [move.request_id for move in (await second.moves()).moves]


async def test_a_move_of_a_claimed_request_is_listed_only_while_it_waits(
    server: RunningServer,
) -> None:
    await _waiting_with_a_pending_move(server)
    assert await _listed(server) == [RID]
    async with server.authorizer() as authorizer:
        offer = await authorizer.next(timeout=5)
        assert await _listed(server) == []
        # Back in the queue before the move lapsed: it can be confirmed again.
        await authorizer.release(RID, offer.lease.fencing_token, "not mine")
    assert await _listed(server) == [RID]
    async with server.supervisor("supervisor-2") as second:
        assert (await second.confirm_move(RID)).position == 0


async def test_a_move_of_a_cancelled_request_is_not_listed(server: RunningServer) -> None:
    await _waiting_with_a_pending_move(server)
    async with server.teller() as teller:
        await teller.cancel(RID, "customer left")
    assert await _listed(server) == []


async def test_a_move_of_a_decided_request_is_not_listed(server: RunningServer) -> None:
    await _waiting_with_a_pending_move(server)
    async with server.authorizer() as authorizer:
        offer = await authorizer.next(timeout=5)
        await authorizer.decide(RID, offer.lease.fencing_token, "approve")
    assert await _listed(server) == []


async def test_the_live_view_leaves_out_a_move_of_a_request_no_longer_waiting(
    server: RunningServer,
) -> None:
    await _waiting_with_a_pending_move(server)
    async with server.supervisor("supervisor-2") as second, server.teller() as teller:
        stream = second.watch_queue()
        await snapshot_where(stream, lambda s: len(s.pending_moves) == 1)
        await teller.cancel(RID, "customer left")
        cancelled = await snapshot_where(stream, lambda s: s.overview.waiting == 0)
        assert not cancelled.pending_moves
        await stream.aclose()


# -- emergency ids (R8) ------------------------------------------------------------


@pytest.mark.parametrize(
    "decorate",
    [
        "",  # empty: refused as before, naming the field
        "   ",
        "{id} ",
        " {id}",
        "{{{id}}}",
        "{id}:x",
        "{id}\n",
        "{id}\x00",
        "E",
        "E" + "1" * 20,
    ],
)
async def test_ending_an_emergency_refuses_an_id_not_of_the_centers_form(
    server: RunningServer, decorate: str
) -> None:
    async with server.teller(), server.supervisor() as supervisor:
        declared = await supervisor.declare_emergency("branch network failure", ["branch-1"])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await supervisor.end_emergency(decorate.format(id=declared.emergency_id), "back")
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        refusal = refusal_of(refused.value)
        assert refusal is not None
        assert refusal.metadata["field"] == "emergency_id"
        if decorate:
            assert refused.value.details() == (
                "emergency_id: must be E and 1-19 digits, as the center names an "
                "emergency (e.g. E12)"
            )
        # Still in force, and its own id ends it.
        assert [e.emergency_id for e in await supervisor.emergencies()] == [declared.emergency_id]
        ended = await supervisor.end_emergency(declared.emergency_id, "back")
        assert ended.ended_by == "supervisor-1"


async def test_a_refused_emergency_id_is_recorded_whole(server: RunningServer) -> None:
    async with server.supervisor() as supervisor:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await supervisor.end_emergency("E" * 10_000, "back up")
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    await server.runtime.center.flush_audit()
    ends = [r.entry async for r in server.runtime.audit.read() if r.entry.action == "EMERGENCY_END"]
    assert [(e.target, e.outcome) for e in ends] == [("E" * 10_000, refused.value.details())]


async def test_a_fallback_citing_a_malformed_emergency_id_reads_no_key(
    server: RunningServer,
) -> None:
    """The cited id never becomes part of a key name: a hash planted where it would
    point (standing for any key the text could name) is not read as an emergency."""
    now_ms = time.time_ns() // 1_000_000
    cited = "E1:x"
    emergencies = server.runtime.center.emergencies
    await emergencies.client.hset(
        emergencies.keys.emergency(cited),
        mapping={"reason": "planted", "by": "supervisor-1", "at": now_ms - 60_000},
    )
    record = fallback_record(
        cause=tpb.FALLBACK_CAUSE_EMERGENCY,
        emergency_id=cited,
        status_code="",
        status_message="",
        occurred_at_ms=now_ms,
    )
    async with server.teller() as teller:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await teller.report_fallbacks([record])
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == (
        "records[0].emergency_id: must be E and 1-19 digits, as the center names an emergency"
        " (e.g. E12)"
    )
