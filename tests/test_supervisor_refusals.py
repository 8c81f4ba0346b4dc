"""A supervisor's calls refuse what is missing or unknown by name, and every such
refusal reaches the audit trail (R15): ending an emergency without naming it or with
an over-long note, handing back the work of a branch that does not exist, declaring
an emergency without a reason or for unknown branches, and deciding extended hours
without naming the window."""

from __future__ import annotations

import grpc
import pytest
from authq.refusals import refusal_of
from authq.v1 import branch_pb2 as bpb
from authq.v1 import branch_pb2_grpc
from authq.v1 import common_pb2 as cpb

from server.store.audit import OUTCOME_OK
from tests.conftest import RunningServer
from tests.helpers import request


async def _records(server: RunningServer, action: str) -> list[tuple[str, str, str]]:
    """(actor, target, outcome) of each record of ``action``, once the trail has them."""
    await server.runtime.center.flush_audit()
    return [
        (r.entry.actor, r.entry.target, r.entry.outcome)
        async for r in server.runtime.audit.read()
        if r.entry.action == action
    ]


def _refused_field(exc: grpc.aio.AioRpcError) -> str:
    """The field an INVALID_ARGUMENT refusal names."""
    assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT, exc.details()
    refusal = refusal_of(exc)
    assert refusal is not None
    assert refusal.reason == "INVALID_FIELD"
    return refusal.metadata["field"]


async def test_ending_an_emergency_without_naming_it_is_refused_naming_the_field(
    server: RunningServer,
) -> None:
    async with server.supervisor() as supervisor:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await supervisor.end_emergency("", "back to normal")
    assert _refused_field(refused.value) == "emergency_id"
    assert await _records(server, "EMERGENCY_END") == [
        ("supervisor-1", "-", "emergency_id: name the emergency to end")
    ]


async def test_an_over_long_end_note_is_refused_not_cut(server: RunningServer) -> None:
    async with server.teller(), server.supervisor() as supervisor:
        emergency = await supervisor.declare_emergency("branch network failure", ["branch-1"])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await supervisor.end_emergency(emergency.emergency_id, "n" * 501)
        assert _refused_field(refused.value) == "note"
        assert [e.emergency_id for e in await supervisor.emergencies()] == [emergency.emergency_id]
        ended = await supervisor.end_emergency(emergency.emergency_id, "n" * 500)
        assert ended.end_note == "n" * 500
        assert await supervisor.emergencies() == []
    outcomes = [outcome for _, _, outcome in await _records(server, "EMERGENCY_END")]
    assert outcomes == ["note: at most 500 characters", OUTCOME_OK]


async def test_handing_back_the_work_of_a_branch_that_does_not_exist_is_refused(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.supervisor() as supervisor:
        waiting = (await teller.submit(request())).request.request_id
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await supervisor.hand_back("center network failure", branch_id="branch-l")
        with pytest.raises(grpc.aio.AioRpcError) as too_long:
            await supervisor.hand_back("center network failure", branch_id="b" * 65)
        with pytest.raises(grpc.aio.AioRpcError) as no_reason:
            await supervisor.hand_back(" ", branch_id="branch-1")
        assert (await teller.get(waiting)).state == cpb.REQUEST_STATE_QUEUED
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
    refusal = refusal_of(unknown.value)
    assert refusal is not None
    assert refusal.reason == "NOT_FOUND"
    assert unknown.value.details() == "branch_id: no branch branch-l"
    assert _refused_field(too_long.value) == "branch_id"
    assert _refused_field(no_reason.value) == "reason"
    assert await _records(server, "HAND_BACK") == [
        ("supervisor-1", "branch-l", "branch_id: no branch branch-l"),
        ("supervisor-1", "b" * 65, "branch_id: at most 64 characters"),
        ("supervisor-1", "branch-1", no_reason.value.details()),
    ]


async def test_handing_back_the_work_of_a_real_branch_still_works(server: RunningServer) -> None:
    async with server.teller() as teller, server.supervisor() as supervisor:
        waiting = (await teller.submit(request())).request.request_id
        reply = await supervisor.hand_back("center network failure", branch_id="branch-1")
        assert [u.request_id for u in reply.handed_back] == [waiting]
        assert (await teller.get(waiting)).state == cpb.REQUEST_STATE_SENT_BACK
    # One record per request handed back; none of the call as a whole.
    assert await _records(server, "HAND_BACK") == [("supervisor-1", waiting, OUTCOME_OK)]


async def test_refused_emergency_declarations_are_recorded(server: RunningServer) -> None:
    async with server.teller(), server.supervisor() as supervisor:
        with pytest.raises(grpc.aio.AioRpcError) as no_reason:
            await supervisor.declare_emergency("   ", ["branch-1"])
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await supervisor.declare_emergency("network down", ["branch-1", "no-such-branch"])
        with pytest.raises(grpc.aio.AioRpcError) as too_many:
            await supervisor.declare_emergency("network down", [f"b-{n}" for n in range(501)])
        assert await supervisor.emergencies() == []
    assert _refused_field(no_reason.value) == "reason"
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
    assert _refused_field(too_many.value) == "branch_ids"
    assert await _records(server, "EMERGENCY_DECLARE") == [
        ("supervisor-1", "branch-1", no_reason.value.details()),
        ("supervisor-1", "branch-1,no-such-branch", "branch_ids: no branch no-such-branch"),
        (
            "supervisor-1",
            ",".join(f"b-{n}" for n in range(500)),
            too_many.value.details(),
        ),
    ]


async def test_deciding_hours_without_naming_the_window_is_refused_and_recorded(
    server: RunningServer,
) -> None:
    async with server.supervisor() as supervisor:
        branch = branch_pb2_grpc.BranchServiceStub(supervisor.channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await branch.DecideExtendedHours(
                bpb.DecideExtendedHoursRequest(window_id="", approve=True),
                metadata=supervisor.metadata,
            )
    assert _refused_field(refused.value) == "window_id"
    assert await _records(server, "HOURS_WINDOW_DECIDE") == [
        ("supervisor-1", "-", "window_id: name the window")
    ]
