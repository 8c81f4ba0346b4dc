"""Emergency fallback (R8), the supervisor-declared part: while an emergency covers a
branch its new submissions get a distinct answer (authorize on site), nothing is
stored, queued items stay; every period is recorded and audited."""

from __future__ import annotations

import grpc
import pytest
from authq.v1 import common_pb2 as cpb

from tests.conftest import RunningServer
from tests.helpers import request


async def test_a_center_wide_emergency_sends_tellers_on_site(server: RunningServer) -> None:
    async with server.teller() as teller, server.supervisor() as supervisor:
        queued = (await teller.submit(request())).request.request_id
        emergency = await supervisor.declare_emergency("center network failure")
        reply = await teller.submit(request(request_id="during-0001"))
        assert reply.HasField("fallback")
        assert not reply.HasField("request")
        assert reply.fallback.emergency_id == emergency.emergency_id
        assert reply.fallback.reason == "center network failure"
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.get("during-0001")  # nothing was stored
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        async with teller.session() as session:  # the session stream answers alike
            assert (await session.submit(request())).HasField("fallback")
        assert (await teller.get(queued)).state == cpb.REQUEST_STATE_QUEUED  # stays safe
        assert [e.emergency_id for e in await supervisor.emergencies()] == [emergency.emergency_id]
        ended = await supervisor.end_emergency(emergency.emergency_id, "network back")
        assert ended.ended_by == "supervisor-1"
        assert ended.ended_at_ms >= ended.declared_at_ms
        assert not (await teller.submit(request())).HasField("fallback")
        assert await supervisor.emergencies() == []
    await server.runtime.center.flush_audit()
    actions = [(r.entry.action, r.entry.actor) async for r in server.runtime.audit.read()]
    assert ("EMERGENCY_DECLARE", "supervisor-1") in actions
    assert ("EMERGENCY_END", "supervisor-1") in actions


async def test_a_branch_emergency_leaves_other_branches_alone(server: RunningServer) -> None:
    async with (
        server.teller() as teller,
        server.teller("teller-2", "branch-2") as other,
        server.supervisor() as supervisor,
    ):
        await supervisor.declare_emergency("branch device failure", ["branch-1"])
        assert (await teller.submit(request())).HasField("fallback")
        assert not (await other.submit(request())).HasField("fallback")


async def test_emergencies_need_a_supervisor_and_a_reason(server: RunningServer) -> None:
    async with server.supervisor() as supervisor:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await supervisor.declare_emergency("  ")
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        emergency = await supervisor.declare_emergency("severe backlog")
        await supervisor.end_emergency(emergency.emergency_id)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await supervisor.end_emergency(emergency.emergency_id)
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "already ended" in (failure.value.details() or "")
    async with server.authorizer() as authorizer:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await authorizer.declare_emergency("not my post")
        assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_emergency_names_real_branches_and_not_too_many(server: RunningServer) -> None:
    """A mistyped branch would leave the real one taking central work (R8)."""
    async with server.teller() as teller, server.supervisor() as supervisor:
        cases = (
            (["branch-1", "brnach-2"], grpc.StatusCode.NOT_FOUND, "no branch brnach-2"),
            ([f"b-{n}" for n in range(501)], grpc.StatusCode.INVALID_ARGUMENT, "at most 500"),
        )
        for branches, code, said in cases:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await supervisor.declare_emergency("branch network failure", branches)
            assert failure.value.code() == code
            assert said in (failure.value.details() or "")
        assert await supervisor.emergencies() == []
        assert not (await teller.submit(request())).HasField("fallback")


async def test_an_action_too_large_to_audit_is_refused_and_the_refusal_recorded(
    server: RunningServer,
) -> None:
    """None is done without its record (R15): a far too long id is refused, not
    acted on with its record dropped, and the message stays small enough to travel."""
    async with server.supervisor() as supervisor:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await supervisor.end_emergency("E" * 40_000, "back up")
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = failure.value.details() or ""
        assert details.startswith("id: far too long")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await supervisor.end_emergency("E" * 10_000, "back up")  # kept: not an id
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(failure.value.details() or "") <= 1000
    await server.runtime.center.flush_audit()
    ends = [r.entry async for r in server.runtime.audit.read() if r.entry.action == "EMERGENCY_END"]
    assert [(e.target, e.outcome[:16]) for e in ends] == [
        ("E" * 128, "id: far too long"),
        ("E" * 10_000, "emergency_id: mu"),
    ]
