"""Claims are leases with fencing tokens; two authorizers never hold one item."""

from __future__ import annotations

import asyncio
import collections

import grpc
import pytest
from authq.channel import SessionCallError
from authq.v1 import common_pb2 as cpb

from tests.conftest import RunningServer, StartServer
from tests.helpers import request


async def test_an_expired_lease_returns_the_item_to_its_original_place(
    start_server: StartServer,
) -> None:
    server = await start_server(lease_ms=400)
    async with server.teller() as teller, server.authorizer("a-1") as first:
        await teller.submit(request(request_id="first-0001"))
        await teller.submit(request(request_id="second-001"))
        offer = await first.next(timeout=5)
        assert offer.request.request_id == "first-0001"
        updates = [u async for u in _until(teller, "first-0001", "LEASE_EXPIRED")]
        assert updates[-1].state == cpb.REQUEST_STATE_QUEUED
        async with server.authorizer("a-2") as second:
            again = await second.next(timeout=5)
        assert again.request.request_id == "first-0001"  # ahead of second-001
        assert again.lease.fencing_token > offer.lease.fencing_token
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await first.decide("first-0001", offer.lease.fencing_token, "approve")
        assert failure.value.code() == grpc.StatusCode.ABORTED
        assert "held by another authorizer" in (failure.value.details() or "")


async def test_a_lapsed_lease_is_audited_once_whichever_process_reaps_it(
    start_server: StartServer,
) -> None:
    """Two server processes' reapers race for the same expiry: the script lets one
    win, and the trail records the lapse once, naming whose claim it was (R15)."""
    one = await start_server(lease_ms=300)
    two = await start_server(lease_ms=300)
    async with one.teller() as teller, one.authorizer("a-1") as holder:
        rid = (await teller.submit(request())).request.request_id
        offer = await holder.next(timeout=5)
        [u async for u in _until(teller, rid, "LEASE_EXPIRED")]
    for server in (one, two):
        await server.runtime.center.flush_audit()
    lapses = [
        record.entry
        async for record in one.runtime.audit.read()
        if record.entry.action == "LEASE_EXPIRED"
    ]
    assert len(lapses) == 1
    (lapse,) = lapses
    assert (lapse.target, lapse.actor, lapse.outcome) == (rid, "system", "OK")
    assert lapse.details == {"holder": "a-1", "token": offer.lease.fencing_token}
    assert one.runtime.reaper.expired_total + two.runtime.reaper.expired_total == 1


async def _until(teller, rid: str, event: str):  # type: ignore[no-untyped-def]
    async for update in teller.watch(rid):
        yield update
        if update.event == event:
            return


async def test_a_stale_fencing_token_is_refused(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        first = await authorizer.next(timeout=5)
        await authorizer.release(rid, first.lease.fencing_token)
        second = await authorizer.next(timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await authorizer.decide(rid, first.lease.fencing_token, "approve")
        assert failure.value.code() == grpc.StatusCode.ABORTED
        assert "stale fencing token" in (failure.value.details() or "")
        done = await authorizer.decide(rid, second.lease.fencing_token, "approve")
        assert done.state == cpb.REQUEST_STATE_APPROVED


async def test_a_retried_decision_counts_once(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=5)
        one = await authorizer.decide(rid, offer.lease.fencing_token, "approve")
        two = await authorizer.decide(rid, offer.lease.fencing_token, "approve")
        assert one.version == two.version
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await authorizer.decide(
                rid,
                offer.lease.fencing_token,
                "reject",
                reason_code="OTHER",
                note="changed my mind",
            )
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "APPROVED" in (failure.value.details() or "")
        history = (await teller.get(rid)).history
        assert [h.event for h in history].count("APPROVED") == 1


async def test_a_repeated_decision_with_another_reason_is_refused(server: RunningServer) -> None:
    """Same holder, token and outcome, but another reason or note: no retry of the
    decision made, so not answered as if it were recorded."""
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=5)
        token = offer.lease.fencing_token
        made = await authorizer.decide(rid, token, "reject", reason_code="ID_INVALID", note="n")
        again = await authorizer.decide(rid, token, "reject", reason_code="ID_INVALID", note="n")
        assert (again.version, again.reason_code) == (made.version, "ID_INVALID")
        for reason, note in (("SIGNATURE_MISMATCH", "n"), ("ID_INVALID", "other note")):
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await authorizer.decide(rid, token, "reject", reason_code=reason, note=note)
            assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "decided REJECTED under this fencing token already" in (
                failure.value.details() or ""
            )
        history = (await teller.get(rid)).history
        rejections = [h for h in history if h.event == "REJECTED"]
        assert [(h.reason_code, h.note) for h in rejections] == [("ID_INVALID", "n")]


async def test_a_session_keeps_its_lease_alive_and_loses_it_when_dropped(
    start_server: StartServer,
) -> None:
    server = await start_server(lease_ms=600)
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        session = authorizer.session()
        await session.open()
        session.credit(1)
        offer = await asyncio.wait_for(session.offers.get(), 5)
        await asyncio.sleep(1.5)  # well past one lease: renewed by the server
        assert (await teller.get(rid)).state == cpb.REQUEST_STATE_CLAIMED
        session.abort()  # the console crashes
        events = [u.event async for u in _until(teller, rid, "LEASE_EXPIRED")]
        assert events[-1] == "LEASE_EXPIRED"
        with pytest.raises(grpc.aio.AioRpcError):
            await authorizer.decide(rid, offer.lease.fencing_token, "approve")


async def test_twenty_authorizers_racing_for_a_thousand_items(server: RunningServer) -> None:
    total = 1000
    async with server.teller() as teller, teller.session() as session:
        for start in range(0, total, 200):
            await asyncio.gather(
                *(
                    session.submit(request(request_id=f"race-{i:05d}"))
                    for i in range(start, start + 200)
                )
            )
    decided: collections.Counter[str] = collections.Counter()
    holders: dict[str, str] = {}

    async def work(name: str) -> None:
        async with server.authorizer(name) as client, client.session() as console:
            console.credit(2)
            while sum(decided.values()) < total:
                try:
                    offer = await asyncio.wait_for(console.offers.get(), 0.5)
                except TimeoutError:
                    continue
                rid = offer.request.request_id
                assert rid not in holders, f"{rid} offered to {holders.get(rid)} and {name}"
                holders[rid] = name
                await console.decide(rid, offer.lease.fencing_token, "approve")
                decided[rid] += 1
                console.credit(1)

    await asyncio.wait_for(asyncio.gather(*(work(f"auth-{n:02d}") for n in range(20))), 120)
    assert len(decided) == total
    assert set(decided.values()) == {1}
    assert len(set(holders.values())) > 1
    counts = await server.runtime.store.overview()
    assert counts.waiting == 0
    assert counts.counts.get("APPROVED") == total


async def test_deciding_an_item_you_do_not_hold_is_refused(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer("a-1") as holder:
        rid = (await teller.submit(request())).request.request_id
        offer = await holder.next(timeout=5)
        async with server.authorizer("a-2") as other:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await other.decide(rid, offer.lease.fencing_token, "approve")
            assert failure.value.code() == grpc.StatusCode.ABORTED
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await other.image(
                    rid, offer.request.images[0].sha256 if offer.request.images else "0" * 64
                )
            assert failure.value.code() in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.INVALID_ARGUMENT,
            )
            with pytest.raises(SessionCallError) as refused:
                async with other.session() as console:
                    await console.decide(rid, offer.lease.fencing_token, "approve")
            assert refused.value.code == grpc.StatusCode.ABORTED


async def test_a_unary_client_keeps_its_lease_while_holding(start_server: StartServer) -> None:
    server = await start_server(lease_ms=400)
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=5)
        async with authorizer.holding(offer) as lease:
            await asyncio.sleep(1.2)  # three leases long
            update = await authorizer.decide(rid, lease.fencing_token, "approve")
        assert update.state == cpb.REQUEST_STATE_APPROVED
        events = [entry.event for entry in (await teller.get(rid)).history]
        assert "LEASE_EXPIRED" not in events
