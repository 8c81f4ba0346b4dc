"""How a command line that waits on the center (a teller following a request, an
authorizer waiting for the next item) rides out the center going away: a server
restarted, a network cut. It says so in one line, tries again with a growing pause,
each attempt bounded, and says when the center answers again. Ctrl-C ends it as
always (authq.exits).

Only a wait that has reached the center is resumed: a command pointed at a center it
never reached fails at once, as any other command does.

A center that answers but is at its admission ceiling is not lost: it refused the call
before doing anything. An idempotent call may be tried again a few times, with
jittered pauses, within its caller's deadline (CapacityBackoff)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

import grpc

from authq.refusals import reason_of

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

# The reason of the center's refusal at its admission ceiling (server/api/admission.py):
# it did no work for the call. grpc answers RESOURCE_EXHAUSTED itself too (a message
# too large), and so does a full queue store: no retry within seconds cures those.
AT_CAPACITY_REASON = "CENTER_AT_CAPACITY"
STORE_REASONS = frozenset({"STORE_FULL", "STORE_CANNOT_PERSIST", "STORE_READ_ONLY"})
# Pauses between tries of an idempotent call refused at capacity: doubling, each
# drawn from half to one and a half times its step so that the callers the center
# refused together do not come back together; at most CAPACITY_TRIES tries in all.
CAPACITY_STEPS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
CAPACITY_TRIES = 6
CAPACITY_TEXT = "the center is at capacity; trying again..."
# Said once when a submit gets no answer (UNAVAILABLE without a reason: a lost
# connection, a center restarting) and is about to be tried again.
UNANSWERED_TEXT = "the center did not answer; trying again..."


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


class CapacityBackoff:
    """Bounded tries of an idempotent call the center refused at capacity: ``await
    backoff.pause(exc, tries, deadline)`` after each failure of try number ``tries``
    (from 1) waits before the next one, or re-raises ``exc`` when it is not a refusal
    at capacity, the tries are spent, or the next try would start after ``deadline``
    (on ``clock``). Never for a call that is not idempotent: a refusal from something
    between the caller and the center's ceiling would not say that nothing was done.
    ``say`` hears CAPACITY_TEXT at the first pause; ``sleep``, ``clock`` (seconds, as
    time.monotonic) and ``jitter`` (as random.random) are for tests to replace."""

    def __init__(
        self,
        *,
        say: Callable[[str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.say = say
        self.sleep = sleep
        self.clock = clock
        self.jitter = jitter

    async def pause(self, exc: BaseException, tries: int, deadline: float) -> None:
        if not is_at_capacity(exc) or tries >= CAPACITY_TRIES:
            raise exc
        step = CAPACITY_STEPS_S[min(tries, len(CAPACITY_STEPS_S)) - 1]
        pause = step * (0.5 + self.jitter())
        if self.clock() + pause >= deadline:
            raise exc
        if tries == 1 and self.say is not None:
            self.say(CAPACITY_TEXT)
        await self.sleep(pause)


def is_at_capacity(exc: BaseException) -> bool:
    """The center refused the call at its admission ceiling, before doing anything."""
    return reason_of(exc) == AT_CAPACITY_REASON


def store_refuses_writes(exc: BaseException) -> bool:
    """The center's queue store refused the call's writes (full, its disk failing, a
    read-only replica: server/api/status.py): the center took nothing, and will take
    nothing until its operators act."""
    return reason_of(exc) in STORE_REASONS


def is_lost(exc: BaseException) -> bool:
    """A failure that means the center went away (or did not answer an attempt in
    time), not that it said no."""
    if isinstance(exc, TimeoutError):
        return True
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in LOST_CODES
