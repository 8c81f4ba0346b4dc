"""The oldest wait is the wait of the item that joined the queue earliest, whichever
item heads its lane: a supplied request and a moved one head their lane with a later
join time than items behind them. Items waiting from before the waiting-since sets
existed are indexed once at start. And the image check's send-back is no decision."""

from __future__ import annotations

import asyncio
from typing import Any

from server.domain.priority import PriorityClass
from server.store.queue_reads import as_text
from server.store.scripts import load_script
from server.store.waiting_since import index_waiting_since
from tests.conftest import RunningServer
from tests.helpers import (
    corrupt_scan,
    images,
    request,
    request_with_front,
    standard_images,
    store_unchecked,
)


async def _members(server: RunningServer, key: str) -> list[str]:
    found: list[Any] = await server.runtime.store.client.zrange(key, 0, -1)
    return [as_text(member) for member in found]


async def _joined(server: RunningServer, key: str) -> dict[str, float]:
    found: list[Any] = await server.runtime.store.client.zrange(key, 0, -1, withscores=True)
    return {as_text(member): at for member, at in found}


async def _oldest(server: RunningServer) -> str | None:
    """The request id of the longest-waiting item of the standard request's class."""
    overview = await server.runtime.store.overview()
    [depth] = [lane for lane in overview.lanes if lane.waiting]
    return depth.oldest_request_id


async def test_a_supplied_item_heading_its_lane_does_not_hide_an_older_one(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        first = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=10)
        await authorizer.decide(
            first, offer.lease.fencing_token, "ask", kinds=["CUSTOMER_PHOTO"], note="photo"
        )
        older = (await teller.submit(request())).request.request_id
        await teller.supply(first, images("CUSTOMER_PHOTO", seed=3))
    store = server.runtime.store
    [lane] = await store.lanes()
    # The supplied request keeps its place at the head of the lane...
    assert await _members(server, lane) == [first, older]
    # ...while the request submitted after it, before the supply, has waited longer.
    assert await _oldest(server) == older


async def test_a_moved_item_does_not_hide_an_older_one(server: RunningServer) -> None:
    async with server.teller() as teller:
        older = (await teller.submit(request())).request.request_id
        moved = (await teller.submit(request())).request.request_id
    async with server.supervisor("supervisor-1") as first, server.supervisor("supervisor-2") as s2:
        await first.request_move(moved, "branch manager: customer is waiting")
        await s2.confirm_move(moved)
    assert await _oldest(server) == older
    async with server.authorizer() as authorizer:
        assert (await authorizer.next(timeout=10)).request.request_id == moved
    # The moved item left the queue with its claim: the older one is all that waits.
    assert await _oldest(server) == older


async def test_items_waiting_from_before_are_indexed_once_at_start(
    server: RunningServer,
) -> None:
    async with server.teller() as teller:
        rids = [(await teller.submit(request())).request.request_id for _ in range(3)]
    store = server.runtime.store
    since = store.keys.waiting_since(PriorityClass(3, 1))
    joined = await _joined(server, since)
    assert len(joined) == 3
    # As stored before the sets existed: nothing indexed and no mark.
    await store.client.delete(since, store.keys.waiting_since_built)
    assert await _oldest(server) is None
    assert await index_waiting_since(store.client, store.keys) == 3
    assert await _joined(server, since) == joined
    assert await _oldest(server) == rids[0]
    # Marked: a second start reads nothing.
    await store.client.zrem(since, rids[0])
    assert await index_waiting_since(store.client, store.keys) == 0


async def test_the_index_skips_an_item_claimed_after_the_scan_listed_it(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        claimed = (await teller.submit(request())).request.request_id
        waiting = (await teller.submit(request())).request.request_id
        [lane] = await server.runtime.store.lanes()
        assert (await authorizer.next(timeout=10)).request.request_id == claimed
    store = server.runtime.store
    since = store.keys.waiting_since(PriorityClass(3, 1))
    await store.client.delete(since)
    script = load_script(store.client, "waiting_since_index")
    added = await script(keys=[lane], args=[store.keys.request_prefix, claimed, waiting])
    assert added == 1
    assert await _members(server, since) == [waiting]


async def test_the_image_checks_send_back_is_not_a_decision(server: RunningServer) -> None:
    bad_sha = await store_unchecked(server, corrupt_scan(standard_images()[0][1]))
    async with server.teller() as teller, server.authorizer() as authorizer:
        bad = (await teller.submit(request_with_front(bad_sha))).request.request_id
        good = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=10)
        assert offer.request.request_id == good
        assert (await teller.get(bad)).history[-1].actor == "system"
        snapshot = await server.runtime.watch.snapshot()
        assert snapshot.decisions_last_minute == 0
        assert server.runtime.backlog.decision_rate() == 0
        # The authorizer's own request for images is one.
        await authorizer.decide(
            good, offer.lease.fencing_token, "ask", kinds=["CUSTOMER_PHOTO"], note="photo"
        )
        async with asyncio.timeout(10):
            while (await server.runtime.watch.snapshot()).decisions_last_minute != 1:
                await asyncio.sleep(0.01)
    assert server.runtime.backlog.decision_rate() > 0


async def test_every_way_out_of_the_queue_leaves_no_entry_behind(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rids = [(await teller.submit(request())).request.request_id for _ in range(4)]
        await teller.cancel(rids[3], "customer left")
        held = await authorizer.next(timeout=10)
        await authorizer.release(rids[0], held.lease.fencing_token, "not mine")
        taken = await authorizer.next(timeout=10)
        await authorizer.decide(taken.request.request_id, taken.lease.fencing_token, "approve")
    store = server.runtime.store
    since = store.keys.waiting_since(PriorityClass(3, 1))
    waiting = {rid for lane in await store.lanes() for rid in await _members(server, lane)}
    assert set(await _members(server, since)) == waiting
    assert len(waiting) == 2
