"""Idempotent submit, the cancel rule (R4), priority order and aging (R7)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from authq.v1 import common_pb2 as cpb

from tests.conftest import RunningServer, StartServer
from tests.helpers import request, standard_images


async def test_a_retried_submit_returns_the_same_request(server: RunningServer) -> None:
    async with server.teller() as teller:
        first = await teller.submit(request(request_id="retry-0001"), standard_images())
        again = await teller.submit(request(request_id="retry-0001"), standard_images())
        assert again.duplicate
        assert not first.duplicate
        assert again.request.submitted_at_ms == first.request.submitted_at_ms
        assert (await server.runtime.store.overview()).waiting == 1


async def test_concurrent_retries_create_exactly_one_request(server: RunningServer) -> None:
    async with server.teller() as teller:
        replies = await asyncio.gather(
            *(teller.submit(request(request_id="race-00001")) for _ in range(20))
        )
        assert sum(not reply.duplicate for reply in replies) == 1
        assert (await server.runtime.store.overview()).waiting == 1


async def test_a_reused_request_id_with_other_content_is_refused(server: RunningServer) -> None:
    async with server.teller() as teller:
        await teller.submit(request(request_id="reuse-0001", amount_minor=100))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.submit(request(request_id="reuse-0001", amount_minor=200))
        assert failure.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "reuse-0001" in (failure.value.details() or "")


async def test_cancel_before_review_succeeds(server: RunningServer) -> None:
    async with server.teller() as teller:
        rid = (await teller.submit(request())).request.request_id
        update = await teller.cancel(rid, "customer changed their mind")
        assert update.state == cpb.REQUEST_STATE_CANCELLED
        assert (await server.runtime.store.overview()).waiting == 0


async def test_cancel_after_review_started_is_refused(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.cancel(rid)
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "CLAIMED" in (failure.value.details() or "")
        # Handed back, it waits again, but review has started: still no cancel (R4).
        await authorizer.release(rid, offer.lease.fencing_token)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.cancel(rid)
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "R4" in (failure.value.details() or "")


async def test_a_teller_cannot_touch_another_branchs_request(server: RunningServer) -> None:
    async with server.teller() as teller, server.teller("teller-9", "branch-9") as other:
        rid = (await teller.submit(request())).request.request_id
        for call in (other.cancel(rid), other.get(rid)):
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await call
            assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def _order_of_claims(server: RunningServer, count: int) -> list[str]:
    order = []
    async with server.authorizer() as authorizer:
        for _ in range(count):
            offer = await authorizer.next(timeout=5)
            order.append(offer.request.request_id)
    return order


async def test_importance_then_urgency_then_arrival(server: RunningServer) -> None:
    # importance from the catalog: WEALTH_PURCHASE 1, CASH_DEPOSIT 2, CASH_WITHDRAWAL 3
    plan = [
        ("low-a-0001", "WEALTH_PURCHASE", False),
        ("mid-a-0001", "CASH_DEPOSIT", False),
        ("high-a-001", "CASH_WITHDRAWAL", False),
        ("mid-urgent", "CASH_DEPOSIT", True),
        ("high-b-001", "CASH_WITHDRAWAL", False),
        ("low-urgent", "WEALTH_PURCHASE", True),
        ("high-urgen", "CASH_WITHDRAWAL", True),
    ]
    async with server.teller() as teller:
        for rid, business, urgent in plan:
            await teller.submit(request(business, request_id=rid, urgent=urgent))
        async with server.supervisor() as supervisor:
            position = await supervisor.position("low-a-0001")
        assert (position.position, position.waiting) == (6, 7)
    assert await _order_of_claims(server, len(plan)) == [
        "high-urgen",
        "high-a-001",
        "high-b-001",
        "mid-urgent",
        "mid-a-0001",
        "low-urgent",
        "low-a-0001",
    ]


async def test_aging_lets_a_long_waiting_low_item_pass_newer_important_work(
    start_server: StartServer,
) -> None:
    # Steps shrunk so the test needs no long wait: an item of importance 1 waiting
    # longer than 2 steps (0.6 s) goes ahead of new importance-3 work.
    server = await start_server(importance_step_ms=300, urgency_step_ms=100)
    async with server.teller() as teller:
        await teller.submit(request("WEALTH_PURCHASE", request_id="old-low-01"))
        await asyncio.sleep(0.8)
        for i in range(5):  # a flood of the most important work
            await teller.submit(request("CASH_WITHDRAWAL", request_id=f"flood-{i:04d}"))
    assert (await _order_of_claims(server, 6))[0] == "old-low-01"


async def test_without_aging_time_importance_wins(start_server: StartServer) -> None:
    server = await start_server(importance_step_ms=60_000, urgency_step_ms=10_000)
    async with server.teller() as teller:
        await teller.submit(request("WEALTH_PURCHASE", request_id="old-low-01"))
        await asyncio.sleep(0.8)
        for i in range(5):
            await teller.submit(request("CASH_WITHDRAWAL", request_id=f"flood-{i:04d}"))
    assert (await _order_of_claims(server, 6))[-1] == "old-low-01"


async def test_overview_counts_per_class_and_branch(server: RunningServer) -> None:
    async with server.teller() as teller, server.teller("t-2", "branch-2") as other:
        await teller.submit(request("CASH_WITHDRAWAL"))
        await teller.submit(request("CASH_WITHDRAWAL", urgent=True))
        await other.submit(request("WEALTH_PURCHASE"))
        async with server.supervisor() as supervisor:
            overview = await supervisor.overview()
    assert overview.waiting == 3
    depth = {(c.importance, c.urgency): c.waiting for c in overview.by_class}
    assert depth[(3, cpb.URGENCY_URGENT)] == 1
    assert depth[(3, cpb.URGENCY_NORMAL)] == 1
    assert depth[(1, cpb.URGENCY_NORMAL)] == 1
    assert {b.branch_id: b.waiting for b in overview.by_branch} == {"branch-1": 2, "branch-2": 1}
    assert overview.oldest_request_id
