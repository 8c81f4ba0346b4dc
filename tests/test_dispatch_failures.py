"""One waiter's failed delivery costs nobody else anything: the other waiters in the
dispatcher's round still get their items, and the item that could not be handed over
goes back to the queue at once rather than when its lease runs out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from authq.batching import batched
from redis.exceptions import ConnectionError as RedisConnectionError

from server import dispatch
from server.api import authorizer as authorizer_api
from server.api import authorizer_session
from server.dispatch import Waiter
from server.domain.states import State
from server.store.queue_store import Claim
from tests.conftest import RunningServer
from tests.helpers import request, store_submission


async def _until(condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            met = condition()
            if met if isinstance(met, bool) else await met:
                return
            await asyncio.sleep(0.05)


async def _queued(server: RunningServer, request_id: str) -> bool:
    record = await server.runtime.store.get(request_id)
    return record.state is State.QUEUED and not record.holder


async def test_a_failed_put_back_leaves_the_rest_of_the_round_served(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = server.runtime.store
    dispatcher = server.runtime.dispatcher
    for i in range(5):
        await store.submit(store_submission(f"round-{i:04d}"))
        await asyncio.sleep(0.002)  # distinct submission times: a definite queue order
    release = store.release
    failed_put_backs: list[str] = []

    async def blip_once(request_id: str, *args: Any, **kwargs: Any) -> Any:
        if not failed_put_backs:
            failed_put_backs.append(request_id)
            raise RedisConnectionError("connection lost (injected)")
        return await release(request_id, *args, **kwargs)

    monkeypatch.setattr(store, "release", blip_once)
    got: dict[str, str] = {}

    def take(waiter: Waiter, claim: Claim) -> bool:
        got[waiter.authorizer_id] = claim.record.request_id
        return True

    def gone(_waiter: Waiter, _claim: Claim) -> bool:
        return False  # the authorizer left while its item was being claimed

    # Added in one go: rounds of 1, 2 and 2 waiters; the one who left is in the
    # second round, ahead of auth-2.
    for name in ("auth-0", "auth-gone", "auth-2", "auth-3", "auth-4"):
        dispatcher.add(Waiter(name, gone if name == "auth-gone" else take))
    await _until(lambda: len(got) == 4)
    assert sorted(got) == ["auth-0", "auth-2", "auth-3", "auth-4"]
    assert len(set(got.values())) == 4
    # The item of the one who left went back though its first put-back failed.
    assert len(failed_put_backs) == 1
    (left_behind,) = {f"round-{i:04d}" for i in range(5)} - set(got.values())
    assert failed_put_backs == [left_behind]
    await _until(lambda: _queued(server, left_behind))


async def test_an_offer_that_cannot_be_made_answers_its_credit_and_spares_the_rest(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        server.teller() as teller,
        server.authorizer("auth-s") as authorizer,
        authorizer.session() as console,
    ):
        ids = [(await teller.submit(request())).request.request_id for _ in range(3)]
        poisoned = ids[1]
        to_pb = authorizer_session.offer_to_pb

        def failing_for_one(claim: Claim) -> Any:
            if claim.record.request_id == poisoned:
                raise ValueError("cannot be shown (injected)")
            return to_pb(claim)

        monkeypatch.setattr(authorizer_session, "offer_to_pb", failing_for_one)
        console.credit(3)
        offered = {(await asyncio.wait_for(console.offers.get(), 10)).request.request_id}
        offered.add((await asyncio.wait_for(console.offers.get(), 10)).request.request_id)
        assert offered == {ids[0], ids[2]}
        # Not held until its lease runs out: back in the queue for anyone.
        await _until(lambda: _queued(server, poisoned))
        # The failed credit was used up, not left waiting: the session may grant a
        # fresh one, which gets the item once it can be shown.
        monkeypatch.setattr(authorizer_session, "offer_to_pb", to_pb)
        console.credit(1)
        again = await asyncio.wait_for(console.offers.get(), 10)
        assert again.request.request_id == poisoned


async def test_an_item_whose_image_gate_failed_goes_back_and_is_offered_again(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher = server.runtime.dispatcher
    admits: list[str] = []

    class FlakyGate:
        def ready(self, claim: Claim) -> bool:
            return False

        async def admit(self, claim: Claim) -> bool:
            admits.append(claim.record.request_id)
            if len(admits) == 1:
                raise RedisConnectionError("connection lost (injected)")
            return True

    monkeypatch.setattr(dispatcher, "gate", FlakyGate())
    await server.runtime.store.submit(store_submission("gated-0001"))
    claim = await asyncio.wait_for(dispatcher.next_item("auth-1"), 10)
    assert claim.record.request_id == "gated-0001"
    assert admits == ["gated-0001", "gated-0001"]


def _mentions(record: logging.LogRecord, text: str) -> bool:
    shown = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        shown += str(record.exc_info[1])
    return text in shown


async def test_an_offer_that_cannot_be_made_is_logged_once_naming_its_item(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        server.teller() as teller,
        server.authorizer("auth-s") as authorizer,
        authorizer.session() as console,
    ):
        poisoned = (await teller.submit(request())).request.request_id

        def failing(claim: Claim) -> Any:
            raise ValueError("cannot be shown (injected)")

        monkeypatch.setattr(authorizer_session, "offer_to_pb", failing)
        caplog.set_level(logging.INFO)
        console.credit(1)
        await _until(lambda: _queued_after_claim(server, poisoned))
    logged = [r for r in caplog.records if _mentions(r, "cannot be shown (injected)")]
    # Once, where the item and the authorizer are known, with the traceback.
    assert len(logged) == 1, [r.getMessage() for r in logged]
    (record,) = logged
    assert poisoned in record.getMessage()
    assert "auth-s" in record.getMessage()
    assert record.exc_info is not None


async def _queued_after_claim(server: RunningServer, request_id: str) -> bool:
    """Queued again, and not for never having been claimed: its history holds a claim."""
    record = await server.runtime.store.get(request_id)
    claimed = any(entry.state is State.CLAIMED for entry in record.history)
    return claimed and record.state is State.QUEUED and not record.holder


async def test_a_unary_offer_that_cannot_be_built_puts_its_item_back_at_once(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with server.teller() as teller, server.authorizer("auth-u") as authorizer:
        rid = (await teller.submit(request())).request.request_id

        def failing(claim: Claim) -> Any:
            raise ValueError("cannot be shown (injected)")

        monkeypatch.setattr(authorizer_api, "offer_to_pb", failing)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await authorizer.next(timeout=30)
        # Claimed, and then the reply failed (not a deadline before the claim).
        assert "cannot be shown (injected)" in (failure.value.details() or "")
        # Logged once (by gRPC, with the traceback), naming the item.
        logged = [r for r in caplog.records if _mentions(r, "cannot be shown (injected)")]
        assert len(logged) == 1
        assert f"offering {rid} to auth-u failed" in logging.Formatter().format(logged[0])
        # Back in the queue now, not when its lease (a minute) runs out.
        await _until(lambda: _queued_after_claim(server, rid), 5)
        monkeypatch.setattr(authorizer_api, "offer_to_pb", authorizer_session.offer_to_pb)
        again = await authorizer.next(timeout=10)
        assert again.request.request_id == rid
    # The trail closes the claim nobody got: not the authorizer's hand-back or lapse.
    await server.runtime.center.flush_audit()
    trail = [r.entry async for r in server.runtime.audit.read() if r.entry.target == rid]
    assert [e.action for e in trail] == ["SUBMIT", "CLAIM", "PUT_BACK", "CLAIM"]
    claim, put_back = trail[1], trail[2]
    assert (put_back.actor, put_back.origin) == ("system", "dispatcher")
    assert put_back.details == {
        "holder": "auth-u",
        "token": claim.details["token"],
        "note": dispatch.NOT_MADE,
    }


async def test_a_unary_next_cancelled_after_its_claim_puts_the_item_back_at_once(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    center = server.runtime.center
    dispatcher = server.runtime.dispatcher
    handlers: list[asyncio.Task[Any]] = []
    next_item = center.next_item

    async def noting_the_handler(identity: Any) -> Claim:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        return await next_item(identity)

    deliver = dispatcher._deliver

    def deliver_then_cancel(waiter: Waiter, claim: Claim) -> None:
        deliver(waiter, claim)
        # The caller's deadline or cancel lands after the claim reached the waiting
        # Next but before that resumed: gRPC cancels the handler's task.
        for handler in handlers:
            handler.cancel()

    monkeypatch.setattr(center, "next_item", noting_the_handler)
    monkeypatch.setattr(dispatcher, "_deliver", deliver_then_cancel)
    async with server.teller() as teller, server.authorizer("auth-c") as authorizer:
        rid = (await teller.submit(request())).request.request_id
        call = asyncio.create_task(authorizer.next(timeout=30))
        try:
            await _until(lambda: bool(handlers) and handlers[0].done())
            await _until(lambda: _queued_after_claim(server, rid), 5)
        finally:
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await call


async def test_offers_a_dropped_session_never_sent_go_back_at_once(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = asyncio.Event()

    async def stalling(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        # The stream takes the first message, then no more (a client that stopped
        # reading, a congested link): what is queued after it is never written.
        async for message in batched(*args, **kwargs):
            yield message
            stuck.set()
            await asyncio.Event().wait()

    monkeypatch.setattr(authorizer_session, "batched", stalling)
    async with (
        server.teller() as teller,
        server.authorizer("auth-d") as authorizer,
        authorizer.session() as console,
    ):
        console.credit(2)
        first = (await teller.submit(request())).request.request_id
        offer = await asyncio.wait_for(console.offers.get(), 10)
        assert offer.request.request_id == first
        await _until(stuck.is_set)
        second = (await teller.submit(request())).request.request_id
        await _until(lambda: _held(server, second))
        console.abort()  # the console crashes with the second offer unsent
        await _until(lambda: _queued_after_claim(server, second), 5)
        # The one it got stays its own until its lease runs out.
        assert await _held(server, first)


async def _held(server: RunningServer, request_id: str) -> bool:
    record = await server.runtime.store.get(request_id)
    return record.state is State.CLAIMED
