"""A long call (a console's session, a waiting Next, a teller's Watch, a supervisor's
live queue) runs under the login and the rights it began with: it ends when the
account is disabled or deregistered (R12) or its roles, qualification or branch
change (R13), and a disabled authorizer's claim takes nothing (server/lua/claim.lua)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from authq.refusals import Refusal, refusal_of

from server.accounts.model import Qualification, Role, Status
from server.accounts.store import AccountStore
from server.api import session_guard
from tests.conftest import RunningServer
from tests.helpers import request, until


async def _to_its_end(stream: AsyncIterator[object]) -> None:
    async with asyncio.timeout(10):
        async for _ in stream:
            pass


async def _state(server: RunningServer, request_id: str) -> str:
    return (await server.runtime.store.get(request_id)).state.value


async def test_a_disabled_authorizers_waiting_next_takes_nothing(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim itself refuses a disabled account, whatever the guard's period: the
    request arriving after the disable stays in the queue for others."""
    monkeypatch.setattr(session_guard, "REVALIDATE_S", 3600.0)  # the guard out of play
    async with server.teller() as teller, server.authorizer("auth-leave") as authorizer:
        waiting = asyncio.create_task(authorizer.next(timeout=20))
        await until(lambda: bool(server.runtime.center.dispatcher._waiters))
        await server.runtime.accounts.set_status("auth-leave", Status.DISABLED)
        rid = (await teller.submit(request())).request.request_id
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await waiting
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert refusal_of(ended.value) == Refusal("TOKEN_INVALID", {"user_id": "auth-leave"})
        assert await _state(server, rid) == "QUEUED"


async def test_a_waiting_next_ends_when_the_authorizer_role_is_taken_away(
    server: RunningServer,
) -> None:
    async with server.authorizer("auth-promoted") as authorizer:
        waiting = asyncio.create_task(authorizer.next(timeout=20))
        await until(lambda: bool(server.runtime.center.dispatcher._waiters))
        await server.runtime.accounts.set_roles("auth-promoted", [Role.SUPERVISOR])
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await waiting
    assert ended.value.code() == grpc.StatusCode.ABORTED
    assert refusal_of(ended.value) == Refusal("ACCOUNT_CHANGED", {"user_id": "auth-promoted"})
    assert not server.runtime.center.dispatcher._waiters


async def _promoted(accounts: AccountStore, user: str) -> None:
    await accounts.set_roles(user, [Role.SUPERVISOR])


async def _narrowed(accounts: AccountStore, user: str) -> None:
    await accounts.set_qualification(user, Qualification(frozenset({"CASH_DEPOSIT"}), 0))


@pytest.mark.parametrize("change", [_promoted, _narrowed])
async def test_an_open_session_ends_when_its_rights_change(
    server: RunningServer, change: Callable[[AccountStore, str], Awaitable[None]]
) -> None:
    """Its offers were routed, and its decisions allowed, by the roles and qualification
    it opened with: the authorizer role taken away, or the qualification narrowed to
    deposits, a withdrawal submitted afterwards is not offered to it."""
    async with server.teller() as teller, server.authorizer("auth-changed") as authorizer:
        async with authorizer.session() as console:
            console.credit(1)
            await until(lambda: bool(server.runtime.center.dispatcher._waiters))
            await change(server.runtime.accounts, "auth-changed")
            await until(lambda: console.failure is not None)
            rid = (await teller.submit(request("CASH_WITHDRAWAL"))).request.request_id
        assert console.failure is not None
        assert console.failure.code == grpc.StatusCode.ABORTED
        assert console.failure.refusal == Refusal("ACCOUNT_CHANGED", {"user_id": "auth-changed"})
        assert console.offers.empty()
        assert await _state(server, rid) == "QUEUED"


async def test_a_deregistered_supervisors_live_queue_ends(server: RunningServer) -> None:
    async with server.supervisor("supervisor-gone") as supervisor:
        stream = supervisor.watch_queue()
        await asyncio.wait_for(anext(stream), 5)  # the first snapshot, at once
        await server.runtime.accounts.set_status("supervisor-gone", Status.DEREGISTERED)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await _to_its_end(stream)
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refusal_of(ended.value) == Refusal("TOKEN_INVALID")


async def test_a_disabled_tellers_watch_ends(server: RunningServer) -> None:
    async with server.teller("teller-w", "branch-1") as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        updates = teller.watch(rid)
        await asyncio.wait_for(anext(updates), 5)  # the request as it is
        await server.runtime.accounts.set_status("teller-w", Status.DISABLED)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await _to_its_end(updates)
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # The request goes on without its watcher.
        offer = await authorizer.next(timeout=5)
        await authorizer.decide(rid, offer.lease.fencing_token, "approve")
    assert await _state(server, rid) == "APPROVED"


async def test_a_watch_whose_login_holds_follows_to_the_decision(server: RunningServer) -> None:
    """The guard leaves alone what it should: an unchanged login's watch and Next."""
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        updates = teller.watch(rid)
        await asyncio.wait_for(anext(updates), 5)
        await asyncio.sleep(session_guard.REVALIDATE_S * 1.5)  # the guard has looked
        offer = await authorizer.next(timeout=5)
        await authorizer.decide(rid, offer.lease.fencing_token, "approve")
        states = [update.event async for update in updates]
    assert states[-1] == "APPROVED"
