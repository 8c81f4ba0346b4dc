"""How a command line that waits on the center (a teller following a request, an
authorizer waiting for the next item) rides out the center going away: a server
restarted, a network cut. It says so in one line, tries again with a growing pause,
each attempt bounded, and says when the center answers again. Ctrl-C ends it as
always (authq.exits).

Only a wait that has reached the center is resumed: a command pointed at a center it
never reached fails at once, as any other command does."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

import grpc

# Pauses between attempts: doubling from the first, then the last one again.
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
# An attempt that has not had the center's first answer within this long is given up
# (a center that takes the connection but does not answer counts as gone).
ATTEMPT_S = 10.0
# What a lost center looks like: the connection refused or dropped, the server
# stopping ("Cancelling all calls"), keepalive pings unanswered. Anything else (a
# refusal, an expired login) is an answer, and ends the command as before.
LOST_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
LOST_TEXT = "connection to the center lost; retrying..."
RESTORED_TEXT = "connection to the center restored"


class Reconnecting:
    """``async with Reconnecting(prog, channel) as link``: call ``await
    link.lost(exc)`` with each failure of the wait (it re-raises what is not a lost
    center, or comes before the center was ever reached, else waits the next pause)
    and ``link.answered()`` with each answer. ``ready_is_answer`` counts the channel
    connecting again as the center answering, for a wait that gets no answer until
    the thing it waits for comes (Next). ``sleep`` and ``clock`` (seconds, as
    time.monotonic) are the pause and the time read against a deadline: tests give
    their own, to see the pauses without waiting them."""

    def __init__(
        self,
        prog: str,
        channel: grpc.aio.Channel,
        *,
        reached: bool = False,
        ready_is_answer: bool = False,
        resumed: str = "",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prog = prog
        self.channel = channel
        self.reached = reached
        self.ready_is_answer = ready_is_answer
        self.resumed = resumed
        self._sleep = sleep
        self._clock = clock
        self.losing = False
        self._failures = 0
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._watcher = asyncio.create_task(self._watch_channel())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    @property
    def attempt_bound(self) -> float | None:
        """How long the current attempt may wait for its first answer: bounded only
        while trying again (the first attempt waits as any call of the command does)."""
        return ATTEMPT_S if self.losing else None

    def say(self, text: str) -> None:
        print(f"{self.prog}: {text}", file=sys.stderr, flush=True)

    def answered(self) -> None:
        self.reached = True
        self._failures = 0
        if self.losing:
            self.losing = False
            self.say(RESTORED_TEXT + (f": {self.resumed}" if self.resumed else ""))

    async def lost(self, exc: BaseException, deadline: float | None = None) -> None:
        """Waits before the next attempt; re-raises ``exc`` when it is not a lost
        center, when the center was never reached, or when the next attempt would
        start after ``deadline`` (time.monotonic())."""
        if not (self.reached and is_lost(exc)):
            raise exc
        pause = BACKOFF_S[min(self._failures, len(BACKOFF_S) - 1)]
        if deadline is not None and self._clock() + pause >= deadline:
            raise exc
        if not self.losing:
            self.losing = True
            self.say(LOST_TEXT)
        self._failures += 1
        await self._sleep(pause)

    async def _watch_channel(self) -> None:
        """Notes the channel connecting: the center reached (so a wait cut later is
        resumed) and, for ``ready_is_answer``, back after a loss."""
        state: Any = self.channel.get_state()
        while True:
            if state == grpc.ChannelConnectivity.READY:
                if self.ready_is_answer and self.losing:
                    self.answered()
                self.reached = True
            await self.channel.wait_for_state_change(state)
            state = self.channel.get_state()


def is_lost(exc: BaseException) -> bool:
    """A failure that means the center went away (or did not answer an attempt in
    time), not that it said no."""
    if isinstance(exc, TimeoutError):
        return True
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in LOST_CODES
