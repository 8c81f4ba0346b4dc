"""An authorizer can set itself away (no new items) and back (issue: bank rules, 4)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from authq.v1 import common_pb2 as cpb

from server.center import Identity
from tests.conftest import RunningServer, StartServer
from tests.helpers import request, until


async def test_an_away_authorizer_gets_no_new_items_until_back(server: RunningServer) -> None:
    async with (
        server.teller() as teller,
        server.authorizer("auth-a") as away_one,
        away_one.session() as console,
    ):
        held_id = (await teller.submit(request())).request.request_id
        console.credit(1)
        held = await asyncio.wait_for(console.offers.get(), 5)
        assert held.request.request_id == held_id
        assert await away_one.set_away(True) is True
        console.credit(1)
        waiting_id = (await teller.submit(request())).request.request_id
        await asyncio.sleep(0.3)
        assert console.offers.empty()  # away: nothing new
        # What it holds stays its own and can still be decided.
        decided = await console.decide(held_id, held.lease.fencing_token, "approve")
        assert decided.state == cpb.REQUEST_STATE_APPROVED
        # Another authorizer is not held up meanwhile.
        async with server.authorizer("auth-b") as other:
            offer = await other.next(timeout=5)
            assert offer.request.request_id == waiting_id
            await other.release(waiting_id, offer.lease.fencing_token)
        assert await away_one.set_away(False) is False
        back = await asyncio.wait_for(console.offers.get(), 5)
        assert back.request.request_id == waiting_id
    await server.runtime.center.flush_audit()
    actions = [r.entry.action async for r in server.runtime.audit.read()]
    assert "AWAY" in actions
    assert "BACK" in actions


async def test_away_and_its_record_are_one_step(server: RunningServer) -> None:
    center = server.runtime.center
    audit = center.stage(Identity(user_id="auth-c", origin="test"), "AWAY", "auth-c")
    await server.runtime.store.set_away("auth-c", True, audit)
    assert audit.staged  # so Center.audited stages nothing more
    await center.flush_audit()
    records = [r.entry async for r in server.runtime.audit.read()]
    assert [(r.action, r.actor) for r in records if r.target == "auth-c"] == [("AWAY", "auth-c")]


async def test_next_while_away_is_refused_at_once_and_back_takes_again(
    server: RunningServer,
) -> None:
    """A unary Next would otherwise wait without a word until its deadline."""
    async with server.teller() as teller, server.authorizer("auth-d") as authorizer:
        waiting = (await teller.submit(request())).request.request_id
        await authorizer.set_away(True)
        with pytest.raises(grpc.aio.AioRpcError) as away:
            await authorizer.next(timeout=10)
        assert away.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert away.value.details() == "auth-d is away: no new items until back"
        await authorizer.set_away(False)
        offer = await authorizer.next(timeout=5)
    assert offer.request.request_id == waiting


def _blocked_away(server: RunningServer, authorizer_id: str) -> bool:
    """The authorizer waits in the server's line and no round is due: its last claim
    was answered (here: "away")."""
    dispatcher = server.runtime.center.dispatcher
    waiting = any(w.authorizer_id == authorizer_id for w in dispatcher._waiters)
    return waiting and not dispatcher._wake.is_set()


async def test_back_said_to_another_server_process_reaches_a_waiting_console(
    start_server: StartServer,
) -> None:
    """Two server processes share one Redis. The console waits on the first; away and
    back are said through the second (`authq-authorizer back`), whose dispatcher is
    not the one holding the console's credit. A request already waits, so no queue
    event would ever wake the first."""
    first = await start_server()
    second = await start_server()
    async with (
        first.teller() as teller,
        first.authorizer("auth-ab") as on_first,
        second.authorizer("auth-ab") as on_second,
    ):
        assert await on_second.set_away(True) is True
        rid = (await teller.submit(request())).request.request_id
        async with on_first.session() as console:
            console.credit(1)
            # Its claim was answered "away": the waiter is blocked until back.
            await until(lambda: _blocked_away(first, "auth-ab"))
            assert console.offers.empty()
            assert await on_second.set_away(False) is False
            offer = await asyncio.wait_for(console.offers.get(), 10)
    assert offer.request.request_id == rid
