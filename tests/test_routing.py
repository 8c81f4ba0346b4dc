"""Routing by qualification (issue 3 §4): an authorizer is handed only items of the
business types it holds and within its amount ceiling; the claim looks only at the
lanes that hold anything."""

from __future__ import annotations

import asyncio

import pytest

from server.accounts.model import Qualification, Role
from server.domain.records import Submission
from server.domain.routing import BAND_EDGES_MINOR, ClaimFilter, LaneName, band_of
from tests.conftest import RunningServer
from tests.helpers import request

CNY = 100  # minor units per yuan


def _submission(rid: str, business_type: str, yuan: int, importance: int = 2) -> Submission:
    return Submission(
        request_id=rid, branch_id="branch-1", teller_id="teller-9",
        business_type=business_type, amount_minor=yuan * CNY, currency="CNY", account="6222",
        customer_name="Li", memo="", fields={}, urgency=1, importance=importance, images=(),
    )  # fmt: skip


def test_bands_and_filters() -> None:
    assert band_of(0) == 0
    assert band_of(BAND_EDGES_MINOR[0]) == 0  # an edge closes its band
    assert band_of(BAND_EDGES_MINOR[0] + 1) == 1
    assert band_of(10**15) == len(BAND_EDGES_MINOR)
    # A ceiling at CNY 50,000 takes band 0 wholly, exactly 50,000 included.
    at_edge = ClaimFilter.of(Qualification(frozenset({"*"}), 50_000 * CNY))
    assert (at_edge.full_bands, at_edge.ceiling_minor) == (0, 50_000 * CNY)
    # One fen below the band edge: band 0 is the one it cuts through.
    below = ClaimFilter.of(Qualification(frozenset({"*"}), 50_000 * CNY - 1))
    assert below.full_bands == -1
    uncapped = ClaimFilter.of(Qualification(frozenset({"CASH_DEPOSIT", "REMITTANCE"}), 0))
    assert uncapped.business_types == "CASH_DEPOSIT,REMITTANCE"
    assert not uncapped.unrestricted
    assert ClaimFilter.of(None).unrestricted
    lane = LaneName.parse("{authq}:lane:i3u2:CASH_DEPOSIT:b4")
    assert lane == LaneName(3, 2, "CASH_DEPOSIT", 4)


async def test_claim_takes_only_qualified_business_types(server: RunningServer) -> None:
    store = server.runtime.store
    await store.submit(_submission("wd-0000001", "CASH_WITHDRAWAL", 1_000))
    await store.submit(_submission("dep-000001", "CASH_DEPOSIT", 1_000))
    deposits_only = Qualification(frozenset({"CASH_DEPOSIT"}), 0)
    claim = await store.claim("auth-dep", deposits_only)
    assert claim is not None
    assert claim.record.request_id == "dep-000001"  # passed over the older withdrawal
    assert await store.claim("auth-dep", deposits_only) is None
    other = await store.claim("auth-any")
    assert other is not None
    assert other.record.request_id == "wd-0000001"


async def test_claim_respects_the_amount_ceiling(server: RunningServer) -> None:
    store = server.runtime.store
    # Oldest first: an amount above the ceiling, one in the band the ceiling cuts
    # through but above it, one exactly at it, one far below.
    await store.submit(_submission("big-000001", "CASH_DEPOSIT", 3_000_000))
    await store.submit(_submission("over-00001", "CASH_DEPOSIT", 150_001))
    await store.submit(_submission("at-0000001", "CASH_DEPOSIT", 150_000))
    await store.submit(_submission("small-0001", "CASH_DEPOSIT", 10))
    capped = Qualification(frozenset({"*"}), 150_000 * CNY)
    taken = []
    while (claim := await store.claim("auth-capped", capped)) is not None:
        taken.append(claim.record.request_id)
    assert taken == ["at-0000001", "small-0001"]
    rest = []
    while (claim := await store.claim("auth-senior")) is not None:
        rest.append(claim.record.request_id)
    assert rest == ["big-000001", "over-00001"]
    assert await store.lanes() == []  # emptied lanes leave the index


async def test_an_amount_at_an_edge_ceiling_is_not_hidden_behind_larger_ones(
    server: RunningServer,
) -> None:
    """An authorizer capped at CNY 200,000 (a band edge) may take exactly 200,000. More
    items above the ceiling wait ahead of it than the claim looks past in a band the
    ceiling cuts through; at an edge there is no such band, so it is still offered."""
    store = server.runtime.store
    for n in range(20):
        await store.submit(_submission(f"over-{n:05d}", "CASH_DEPOSIT", 300_000))
    await store.submit(_submission("at-edge-01", "CASH_DEPOSIT", 200_000))
    capped = Qualification(frozenset({"*"}), 200_000 * CNY)
    claim = await store.claim("auth-capped", capped)
    assert claim is not None
    assert claim.record.request_id == "at-edge-01"
    assert await store.claim("auth-capped", capped) is None


async def test_an_edge_amount_stored_one_band_up_is_still_taken(server: RunningServer) -> None:
    """An item stored while edges were exclusive waits in the band above its amount;
    an authorizer capped at that edge still takes it (its claim looks into that band)."""
    store = server.runtime.store
    await store.submit(_submission("moved-0001", "CASH_DEPOSIT", 200_000))
    record = await store.get("moved-0001")
    old_lane = store.keys.lane(record.submission.priority, "CASH_DEPOSIT", 2)
    key = store.keys.request("moved-0001")
    lane, score = await store.client.hmget(key, ["ln", "sc"])
    assert lane is not None
    assert score is not None
    async with store.client.pipeline(transaction=True) as pipe:
        pipe.zrem(lane, "moved-0001")
        pipe.srem(store.keys.lanes, lane)
        pipe.zadd(old_lane, {"moved-0001": float(score)})
        pipe.sadd(store.keys.lanes, old_lane)
        pipe.hset(key, "ln", old_lane)
        await pipe.execute()
    claim = await store.claim("auth-capped", Qualification(frozenset({"*"}), 200_000 * CNY))
    assert claim is not None
    assert claim.record.request_id == "moved-0001"


async def test_priority_order_holds_across_lanes(server: RunningServer) -> None:
    store = server.runtime.store
    await store.submit(_submission("low-000001", "REMITTANCE", 100, importance=1))
    await store.submit(_submission("high-00001", "CASH_DEPOSIT", 900_000, importance=3))
    await store.submit(_submission("mid-000001", "CASH_WITHDRAWAL", 20, importance=2))
    order = []
    while (claim := await store.claim("auth-1")) is not None:
        order.append(claim.record.request_id)
    assert order == ["high-00001", "mid-000001", "low-000001"]
    overview = await store.overview()
    assert overview.waiting == 0


async def test_overview_sums_the_lanes_of_a_class(server: RunningServer) -> None:
    store = server.runtime.store
    await store.submit(_submission("ov-0000001", "REMITTANCE", 100))
    await asyncio.sleep(0.005)  # a millisecond apart at least: the oldest is unambiguous
    await store.submit(_submission("ov-0000002", "CASH_DEPOSIT", 2_000_000))
    await store.submit(_submission("ov-0000003", "CASH_DEPOSIT", 100))
    overview = await store.overview()
    depth = {(lane.priority.importance, lane.priority.urgency): lane for lane in overview.lanes}
    assert depth[(2, 1)].waiting == 3
    assert depth[(2, 1)].oldest_request_id == "ov-0000001"
    assert overview.waiting == 3
    assert len(await store.lanes()) == 3
    state, ahead, waiting = await store.position("ov-0000003")
    assert (state.value, ahead, waiting) == ("QUEUED", 2, 3)


async def test_foreign_currency_is_routed_by_its_local_value(server: RunningServer) -> None:
    """USD 10,000 at the indicative rates is about CNY 72,464: above a CNY 50,000
    ceiling, so only the uncapped authorizer is offered it."""
    await server.account("auth-junior", [Role.AUTHORIZER])
    await server.account("auth-senior", [Role.AUTHORIZER])
    accounts = server.runtime.accounts
    await accounts.set_qualification("auth-junior", Qualification(frozenset({"*"}), 50_000 * CNY))
    async with server.teller() as teller:
        reply = await teller.submit(request("FX_DEPOSIT", 1_000_000, "USD"))
        rid = reply.request.request_id
    async with server.authorizer("auth-junior") as junior:
        waiting = asyncio.create_task(junior.next())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # nothing it may decide
        async with server.authorizer("auth-senior") as senior:
            offer = await asyncio.wait_for(senior.next(), 10)
            assert offer.request.request_id == rid
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting


async def test_a_qualified_waiter_gets_the_item_an_unqualified_one_cannot_take(
    server: RunningServer,
) -> None:
    await server.account("auth-deposits", [Role.AUTHORIZER])
    await server.account("auth-withdrawals", [Role.AUTHORIZER])
    accounts = server.runtime.accounts
    await accounts.set_qualification("auth-deposits", Qualification(frozenset({"CASH_DEPOSIT"}), 0))
    await accounts.set_qualification(
        "auth-withdrawals", Qualification(frozenset({"CASH_WITHDRAWAL"}), 0)
    )
    async with (
        server.authorizer("auth-deposits") as deposits,
        server.authorizer("auth-withdrawals") as withdrawals,
    ):
        # Both wait before the item exists; the deposits one waited first.
        first = asyncio.create_task(deposits.next())
        await asyncio.sleep(0.2)
        second = asyncio.create_task(withdrawals.next())
        await asyncio.sleep(0.2)
        async with server.teller() as teller:
            rid = (await teller.submit(request("CASH_WITHDRAWAL"))).request.request_id
        offer = await asyncio.wait_for(second, 10)
        assert offer.request.request_id == rid
        assert not first.done()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
