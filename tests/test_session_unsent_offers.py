"""An offer the session's batcher has taken from the queue but that was never written
when the stream ends goes back at once, as one still queued does: neither reached the
console, and its lease would otherwise keep it from everyone until it ran out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from authq import batching

from server.api import authorizer_session
from server.domain.states import State
from tests.conftest import RunningServer
from tests.helpers import request


async def _until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.05)


async def _state(server: RunningServer, request_id: str) -> State:
    return (await server.runtime.store.get(request_id)).state


async def _back_in_queue(server: RunningServer, request_id: str) -> bool:
    record = await server.runtime.store.get(request_id)
    claimed = any(entry.state is State.CLAIMED for entry in record.history)
    return record.state is State.QUEUED and not record.holder and claimed


async def test_offers_taken_into_a_batch_but_never_written_go_back_at_close(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each message goes alone: the one after it is taken from the queue and carried
    # to the next round, as when a batch reaches its byte limit.
    monkeypatch.setattr(batching, "MAX_BYTES", 1)
    stuck = asyncio.Event()
    left_in_queue: list[int] = []

    async def stalling(queue: asyncio.Queue[Any], *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        # The first message is written; the second never is (a congested link, a
        # console that stopped reading): gRPC holds it in a write that never ends.
        count = 0
        async for message in batching.batched(queue, *args, **kwargs):
            count += 1
            if count == 2:
                left_in_queue.append(queue.qsize())
                stuck.set()
                await asyncio.Event().wait()
            yield message

    monkeypatch.setattr(authorizer_session, "batched", stalling)
    async with (
        server.teller() as teller,
        server.authorizer("auth-u") as authorizer,
        authorizer.session() as console,
    ):
        console.credit(1)
        first = (await teller.submit(request())).request.request_id
        offer = await asyncio.wait_for(console.offers.get(), 10)
        assert offer.request.request_id == first
        second = (await teller.submit(request())).request.request_id
        third = (await teller.submit(request())).request.request_id
        console.credit(2)
        await asyncio.wait_for(stuck.wait(), 10)
        assert await _state(server, second) is State.CLAIMED
        assert await _state(server, third) is State.CLAIMED
        console.abort()
        await _until(lambda: _back_in_queue(server, second), 5)
        await _until(lambda: _back_in_queue(server, third), 5)
        # The one it got stays its own until its lease runs out.
        assert await _state(server, first) is State.CLAIMED
    # Nothing of the two was left in the session's queue: one was with the stream,
    # the other with the batcher.
    assert left_in_queue == [0]
