"""One waiter's failed delivery costs nobody else anything: the other waiters in the
dispatcher's round still get their items, and the item that could not be handed over
goes back to the queue at once rather than when its lease runs out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

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
