"""The automatic backlog emergency (R8) with hysteresis, and handing waiting work back
to the branches during an emergency."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import pytest
from authq.v1 import common_pb2 as cpb

from server.backlog import BacklogThresholds, Reading, cleared, over
from tests.conftest import RunningServer, StartServer
from tests.helpers import request

# A backlog of one second declares; under half a second for 0.3 s clears. Checked
# every 0.1 s; the estimated-wait measure is off so only the oldest wait counts.
FAST = {
    "backlog_declare_oldest_s": 1.0,
    "backlog_clear_oldest_s": 0.5,
    "backlog_declare_estimated_s": 0.0,
    "backlog_clear_hold_s": 0.3,
    "backlog_check_s": 0.1,
}


async def _until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.05)


def test_thresholds_have_hysteresis() -> None:
    limits = BacklogThresholds(declare_oldest_s=1800, clear_oldest_s=600,
                               declare_estimated_s=2400, clear_estimated_s=900)  # fmt: skip
    assert over(Reading(10, 1799, None), limits) is None
    assert "oldest waiting item at 30 min" in (over(Reading(10, 1800, None), limits) or "")
    assert "estimated wait 40 min" in (over(Reading(10, 5, 2400.0), limits) or "")
    assert over(Reading(10, 5, None), limits) is None  # no decisions seen: rate unknown
    # Between the thresholds: neither declares nor clears.
    assert over(Reading(10, 1000, 1000.0), limits) is None
    assert not cleared(Reading(10, 1000, 100.0), limits)
    assert not cleared(Reading(10, 100, 1000.0), limits)
    assert cleared(Reading(10, 599, 899.0), limits)


async def test_a_backlog_declares_an_emergency_and_its_clearing_ends_it(
    start_server: StartServer,
) -> None:
    server = await start_server(**FAST)
    emergencies = server.runtime.center.emergencies
    async with server.teller() as teller, server.authorizer() as authorizer:
        await teller.submit(request())

        async def declared() -> bool:
            return bool(await emergencies.active())

        await _until(declared)
        [emergency] = await emergencies.active()
        assert emergency.declared_by == "system"
        assert emergency.branch_ids == ()
        assert "automatic backlog emergency: oldest waiting item" in emergency.reason
        fallback = await teller.submit(request())
        assert fallback.HasField("fallback")
        assert fallback.fallback.emergency_id == emergency.emergency_id

        offer = await authorizer.next(timeout=10)
        await authorizer.decide(offer.request.request_id, offer.lease.fencing_token, "approve")

        async def ended() -> bool:
            return not await emergencies.active()

        await _until(ended)
        assert (await emergencies.get(emergency.emergency_id)).ended_by == "system"
        assert not (await teller.submit(request())).HasField("fallback")
    await server.runtime.center.flush_audit()
    actions = [(r.entry.action, r.entry.actor) async for r in server.runtime.audit.read()]
    assert ("EMERGENCY_DECLARE", "system") in actions
    assert ("EMERGENCY_END", "system") in actions


async def test_two_processes_declare_one_emergency_and_respect_a_supervisor(
    start_server: StartServer,
) -> None:
    first = await start_server(**FAST)
    await start_server(**FAST)  # a second server on the same Redis
    emergencies = first.runtime.center.emergencies
    async with first.teller() as teller, first.supervisor() as supervisor:
        await teller.submit(request())

        async def declared() -> bool:
            return bool(await emergencies.active())

        await _until(declared)
        await asyncio.sleep(1.0)  # ten more checks by each process
        [emergency] = await emergencies.active()
        await supervisor.end_emergency(emergency.emergency_id, "we cope; branches keep sending")
        await asyncio.sleep(1.0)  # the backlog persists, yet the supervisor's word holds
        assert await emergencies.active() == []


async def test_a_supervisor_hands_waiting_work_back_to_its_branch(server: RunningServer) -> None:
    async with (
        server.teller() as teller,
        server.teller("teller-2", "branch-2") as other,
        server.supervisor() as supervisor,
        server.authorizer() as authorizer,
    ):
        held = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=10)
        assert offer.request.request_id == held
        waiting = [(await teller.submit(request())).request.request_id for _ in range(2)]
        elsewhere = (await other.submit(request())).request.request_id

        with pytest.raises(grpc.aio.AioRpcError) as no_reason:
            await supervisor.hand_back(" ", [waiting[0]])
        assert no_reason.value.code() is grpc.StatusCode.INVALID_ARGUMENT

        one = await supervisor.hand_back("center overloaded", [waiting[0], held])
        assert [u.request_id for u in one.handed_back] == [waiting[0]]
        assert one.handed_back[0].state == cpb.REQUEST_STATE_SENT_BACK
        assert [r.request_id for r in one.refused] == [held]  # an authorizer holds it
        assert "CLAIMED" in one.refused[0].reason

        rest = await supervisor.hand_back("center overloaded", branch_id="branch-1")
        assert [u.request_id for u in rest.handed_back] == [waiting[1]]
        assert (await other.get(elsewhere)).state == cpb.REQUEST_STATE_QUEUED

        view = await teller.get(waiting[0])
        assert view.state == cpb.REQUEST_STATE_SENT_BACK
        assert view.history[-1].note == "center overloaded"
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await authorizer.hand_back("not mine to do", [waiting[1]])
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    overview = await server.runtime.store.overview()
    assert overview.waiting == 1  # only the other branch's request still waits
