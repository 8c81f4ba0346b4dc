"""The backlog's oldest wait (R8) counts from when an item joined the queue, not from
its submission: time awaiting the branch's on-site reviewer or the teller's supplement
is not the queue's, while a claim handed back keeps the wait it had. The monitor's
reading, the supervisor overview, its waiting list and the oldest-wait metric all
follow it. And a declare whose reply was lost leaves one automatic emergency, which the
monitor ends when the backlog clears. A supervisor's center-wide emergency is not doubled
by the monitor's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from authq.v1 import common_pb2 as cpb

from server.accounts.model import Role
from server.metrics import ServerMetrics
from server.metrics.queue_sampler import QueueSampler
from server.queue_watch import overview_to_pb
from server.store.queue_reads import LaneDepth
from server.store.redis_pipe import ReplyLost
from server.store.waiting_since import index_waiting_since
from teller_client.client import TellerClient
from tests.conftest import PASSWORD, RunningServer, StartServer
from tests.helpers import images, request
from tests.reply_cutter import ReplyCutter

AT_REVIEW_THRESHOLD = 50_000_000  # 500,000.00 CNY: on-site review first (R2)
HOUR_MS = 3_600_000


@pytest.fixture
async def cutter(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[ReplyCutter]:
    proxy = ReplyCutter(redis_url)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def _quiet_monitor(start_server: StartServer, **overrides: object) -> RunningServer:
    """A server with the default thresholds (30 min declares) whose monitor loop is
    stopped: the test drives its checks."""
    server = await start_server(**overrides)
    await server.runtime.backlog.stop()
    return server


async def _set_back(server: RunningServer, request_id: str, *fields: str) -> None:
    """Moves the record's times an hour back: it was submitted (and queued) an hour ago.
    A waiting item's entry in its class's waiting-since set moves with its enq."""
    store = server.runtime.store
    key = store.keys.request(request_id)
    values = await store.client.hmget(key, list(fields))
    assert None not in values
    moved = {f: int(v or 0) - HOUR_MS for f, v in zip(fields, values, strict=True)}
    await store.client.hset(key, mapping={field: at for field, at in moved.items()})
    if "enq" in moved:
        priority = (await store.get(request_id)).submission.priority
        await store.client.zadd(
            store.keys.waiting_since(priority), {request_id: moved["enq"]}, xx=True
        )


async def _head(server: RunningServer, request_id: str) -> LaneDepth:
    """The depth of the priority class whose oldest waiting item the request is."""
    overview = await server.runtime.store.overview()
    [lane] = [lane for lane in overview.lanes if lane.oldest_request_id == request_id]
    return lane


async def _event_at(server: RunningServer, request_id: str, event: str) -> int:
    record = await server.runtime.store.get(request_id)
    [at_ms] = [entry.at_ms for entry in record.history if entry.event == event]
    return at_ms


async def test_the_wait_for_the_onsite_reviewer_is_not_counted(
    start_server: StartServer,
) -> None:
    server = await _quiet_monitor(start_server)
    await server.account("reviewer-1", [Role.ONSITE_REVIEWER], "branch-1")
    async with (
        server.teller() as teller,
        TellerClient(server.target, "reviewer-1", PASSWORD) as reviewer,
    ):
        reply = await teller.submit(request(amount_minor=AT_REVIEW_THRESHOLD))
        rid = reply.request.request_id
        assert reply.request.state == cpb.REQUEST_STATE_PENDING_ONSITE_REVIEW
        await _set_back(server, rid, "sub")  # the reviewer took an hour
        await reviewer.review(rid, confirm=True, checks=["CASH_RECOUNTED", "IDENTITY_CHECKED"])
    lane = await _head(server, rid)
    assert lane.oldest_submitted_ms == await _event_at(server, rid, "ONSITE_CONFIRMED")
    await server.runtime.backlog.check()
    assert await server.runtime.center.emergencies.active() == []


async def test_the_time_the_teller_took_to_supply_is_not_counted(
    start_server: StartServer,
) -> None:
    server = await _quiet_monitor(start_server)
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=10)
        await authorizer.decide(
            rid, offer.lease.fencing_token, "ask", kinds=["CUSTOMER_PHOTO"], note="photo please"
        )
        await _set_back(server, rid, "sub", "enq")  # the customer came back an hour later
        await teller.supply(rid, images("CUSTOMER_PHOTO", seed=7))
    supplied_at = await _event_at(server, rid, "SUPPLIED")
    lane = await _head(server, rid)
    assert lane.oldest_submitted_ms == supplied_at
    # The supervisor overview and the metric read the same time.
    overview = overview_to_pb(await server.runtime.store.overview())
    assert overview.oldest_request_id == rid
    assert overview.oldest_wait_ms == overview.at_ms - supplied_at
    # So does the waiting list's own wait for the item.
    snapshot = await server.runtime.watch.snapshot()
    [item] = [item for item in snapshot.waiting_list if item.request_id == rid]
    assert item.wait_ms == snapshot.overview.at_ms - supplied_at
    metrics = ServerMetrics()
    runtime = server.runtime
    sampler = QueueSampler(
        metrics, runtime.store, runtime.center.emergencies, runtime.archive_index, 1.0
    )
    await sampler.sample()
    sampled_at = metrics.registry.get_sample_value("authq_metrics_last_sample_timestamp_seconds")
    assert sampled_at is not None
    assert metrics.registry.get_sample_value("authq_queue_oldest_wait_seconds") == pytest.approx(
        sampled_at - supplied_at / 1000, abs=0.001
    )
    await server.runtime.backlog.check()
    assert await server.runtime.center.emergencies.active() == []


async def test_a_claim_handed_back_keeps_its_wait_and_declares(
    start_server: StartServer,
) -> None:
    """The control: an item that has waited in the queue an hour, claimed and handed
    back by its authorizer, still counts the hour, and the monitor declares."""
    server = await _quiet_monitor(start_server)
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        submitted_at = await _event_at(server, rid, "SUBMITTED")
        assert (await _head(server, rid)).oldest_submitted_ms == submitted_at
        await _set_back(server, rid, "sub", "enq")
        queued_at = (await _head(server, rid)).oldest_submitted_ms
        offer = await authorizer.next(timeout=10)
        await authorizer.release(rid, offer.lease.fencing_token, "not mine")
    lane = await _head(server, rid)
    assert lane.oldest_submitted_ms == queued_at
    await server.runtime.backlog.check()
    [emergency] = await server.runtime.center.emergencies.active()
    assert emergency.declared_by == "system"
    assert "oldest waiting item at 60 min" in emergency.reason


async def test_a_record_from_before_the_queued_time_counts_from_its_submission(
    start_server: StartServer,
) -> None:
    """Stored before enq and the waiting-since sets: indexed at start, at its submission."""
    server = await _quiet_monitor(start_server)
    async with server.teller() as teller:
        rid = (await teller.submit(request())).request.request_id
    store = server.runtime.store
    priority = (await store.get(rid)).submission.priority
    await store.client.hdel(store.keys.request(rid), "enq")
    await store.client.delete(store.keys.waiting_since(priority), store.keys.waiting_since_built)
    await _set_back(server, rid, "sub")
    assert await index_waiting_since(store.client, store.keys) == 1
    lane = await _head(server, rid)
    assert lane.oldest_submitted_ms == (await store.get(rid)).submitted_ms


async def test_a_lost_declare_reply_leaves_one_emergency_which_ends(
    start_server: StartServer, cutter: ReplyCutter
) -> None:
    """The declare ran in Redis and its reply was lost: the next check takes that
    emergency on instead of declaring a second, and ends it once the backlog clears."""
    server = await _quiet_monitor(start_server, redis_url=cutter.url, backlog_clear_hold_s=0.0)
    monitor = server.runtime.backlog
    emergencies = server.runtime.center.emergencies
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        await _set_back(server, rid, "sub", "enq")
        cutter.marker = b"automatic backlog emergency"
        with pytest.raises(ReplyLost):
            await monitor.check()
        assert cutter.cuts == 1
        [declared] = await emergencies.active()
        await monitor.check()
        await monitor.check()
        assert await emergencies.active() == [declared]
        offer = await authorizer.next(timeout=10)
        await authorizer.decide(rid, offer.lease.fencing_token, "approve")
    await monitor.check()
    assert await emergencies.active() == []
    ended = await emergencies.get(declared.emergency_id)
    assert ended.ended_by == "system"
    counter = await server.runtime.store.client.get(server.runtime.store.keys.emergency_counter)
    assert counter == b"1"  # declared once


async def test_a_supervisors_center_wide_emergency_is_not_doubled_by_the_monitor(
    start_server: StartServer,
) -> None:
    """While a supervisor's center-wide emergency is in force every branch falls back
    already: the monitor declares none of its own on top (one period, one record, R8).
    One for some branches only leaves the rest of the center to the monitor, and once
    the supervisor's center-wide one ends, the backlog declares as usual."""
    server = await _quiet_monitor(start_server)
    monitor = server.runtime.backlog
    emergencies = server.runtime.center.emergencies
    async with server.teller() as teller, server.supervisor() as supervisor:
        rid = (await teller.submit(request())).request.request_id
        await _set_back(server, rid, "sub", "enq")  # an hour old: over the threshold
        center_wide = await supervisor.declare_emergency("center network failure")
        await monitor.check()
        assert [e.emergency_id for e in await emergencies.active()] == [center_wide.emergency_id]
        await supervisor.end_emergency(center_wide.emergency_id, "network back")
        some = await supervisor.declare_emergency("branch network down", ["branch-1"])
        await monitor.check()
    [automatic] = [e for e in await emergencies.active() if e.emergency_id != some.emergency_id]
    assert automatic.declared_by == "system"
    assert not automatic.branch_ids
