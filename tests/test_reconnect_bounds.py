"""The bounds of a wait that rides out a lost center (authq.reconnect), and how often
a channel tries to connect again (authq.channel): the pauses, the bound on an attempt
tried again, a deadline, and what is not waited out. Unit tests: the pauses are
recorded, never waited."""

from __future__ import annotations

from typing import Any, cast

import grpc
import pytest
from authq.channel import ClientTLS, open_channel
from authq.reconnect import LOST_TEXT, RESTORED_TEXT, Reconnecting


def failure(code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "test")


class Pauses:
    """Stands in for asyncio.sleep: notes each pause and returns at once."""

    def __init__(self) -> None:
        self.taken: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)


def link(pauses: Pauses, *, reached: bool = True, now: float = 0.0) -> Reconnecting:
    # lost() and answered() never touch the channel: only the watcher started by
    # ``async with`` does.
    return Reconnecting("authq-test", cast(Any, None), reached=reached, sleep=pauses,
                        clock=lambda: now)  # fmt: skip


async def test_pauses_grow_from_half_a_second_to_eight_and_stay_there(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pauses = Pauses()
    waiting = link(pauses)
    for _ in range(7):
        await waiting.lost(failure())
    assert pauses.taken == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]

    # The center answering starts the pauses over, and is said once, as the loss was.
    waiting.answered()
    await waiting.lost(failure())
    assert pauses.taken[-1] == 0.5
    said = capsys.readouterr().err.splitlines()
    assert said == [f"authq-test: {LOST_TEXT}", f"authq-test: {RESTORED_TEXT}",
                    f"authq-test: {LOST_TEXT}"]  # fmt: skip


async def test_an_attempt_tried_again_is_bounded_to_ten_seconds() -> None:
    waiting = link(Pauses())
    # The first attempt waits as any call of the command does.
    assert waiting.attempt_bound is None
    await waiting.lost(failure())
    assert waiting.attempt_bound == 10.0
    # An attempt that hit that bound is a lost center too: tried again, not given up.
    await waiting.lost(TimeoutError())
    assert waiting.attempt_bound == 10.0
    waiting.answered()
    assert waiting.attempt_bound is None


async def test_a_pause_that_would_end_past_the_deadline_is_not_taken() -> None:
    pauses = Pauses()
    waiting = link(pauses, now=100.0)
    await waiting.lost(failure(), deadline=101.0)
    # The next pause (1 s) would start the next attempt at the deadline itself.
    lost = failure()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await waiting.lost(lost, deadline=101.0)
    assert raised.value is lost
    assert pauses.taken == [0.5]


@pytest.mark.parametrize(
    ("reached", "code"),
    [(False, grpc.StatusCode.UNAVAILABLE), (True, grpc.StatusCode.PERMISSION_DENIED)],
)
async def test_a_center_never_reached_or_an_answer_is_not_waited_out(
    reached: bool, code: grpc.StatusCode
) -> None:
    pauses = Pauses()
    with pytest.raises(grpc.aio.AioRpcError):
        await link(pauses, reached=reached).lost(failure(code))
    assert pauses.taken == []


@pytest.mark.parametrize("tls", [None, ClientTLS()], ids=["plaintext", "tls"])
def test_a_channel_tries_to_connect_again_at_least_every_five_seconds(
    monkeypatch: pytest.MonkeyPatch, tls: ClientTLS | None
) -> None:
    given: dict[str, object] = {}

    def opened(target: str, *args: object, options: list[tuple[str, object]]) -> object:
        given.update(options)
        return object()

    monkeypatch.setattr(grpc.aio, "insecure_channel", opened)
    monkeypatch.setattr(grpc.aio, "secure_channel", opened)
    open_channel("center.example", tls=tls)
    # gRPC's own cap is two minutes: a center back after a long outage would wait that
    # long for a channel, whatever the pauses of authq.reconnect.
    assert given["grpc.max_reconnect_backoff_ms"] == 5_000
