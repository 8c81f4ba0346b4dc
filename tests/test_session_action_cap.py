"""One authorizer session makes at most MAX_ACTIONS_IN_FLIGHT decisions and hand-backs
at once: a console that floods them waits for its earlier ones, by gRPC's flow
control, rather than starting a task per message without end."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from authq.channel import SessionCallError

from server.api import authorizer_session
from tests.conftest import RunningServer
from tests.helpers import until


async def test_a_session_makes_at_most_its_cap_of_decisions_at_once(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A console that floods decisions is held back by flow control: the session
    reads no further message while MAX_ACTIONS_IN_FLIGHT are being made, and every
    one is answered in the end."""
    center = server.runtime.center
    decide = center.decide
    making = 0
    most = 0
    go = asyncio.Event()

    async def held(*args: Any, **kwargs: Any) -> Any:
        nonlocal making, most
        making += 1
        most = max(most, making)
        try:
            await go.wait()
            return await decide(*args, **kwargs)
        finally:
            making -= 1

    monkeypatch.setattr(center, "decide", held)
    flood = authorizer_session.MAX_ACTIONS_IN_FLIGHT + 8
    async with server.authorizer() as authorizer, authorizer.session() as console:
        calls = [
            asyncio.create_task(console.decide(f"flood-{i:04d}", 1, "approve"))
            for i in range(flood)
        ]
        try:
            await until(lambda: making >= authorizer_session.MAX_ACTIONS_IN_FLIGHT)
            await asyncio.sleep(0.5)  # the rest have had time to arrive: none is being made
            assert most == authorizer_session.MAX_ACTIONS_IN_FLIGHT
        finally:
            go.set()
        answers = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(answer) for answer in answers] == [SessionCallError] * flood
    assert {answer.code for answer in answers if isinstance(answer, SessionCallError)} == {
        grpc.StatusCode.NOT_FOUND
    }
    assert most == authorizer_session.MAX_ACTIONS_IN_FLIGHT
