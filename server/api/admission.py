"""The admission ceiling: how much work the server takes at once. Past it a new call is
answered RESOURCE_EXHAUSTED at once, before any Redis work or anything beyond the
parsing grpc already did, instead of joining a backlog in which latency and memory
grow until callers time out (R8: a severe backlog in the center is an emergency; the
queue side of it is server/backlog.py, this is the process side).

Three counts, each with its ceiling (server/settings.py):
- calls in flight (``max_calls_in_flight``): unary and client-streaming calls (image
  uploads) and image downloads, while they run;
- open streams (``max_open_streams``): the session streams, watches, and the
  authorizer's long-polling Next (LONG_POLLS says why);
- logins in flight (``max_logins_in_flight``): the calls that run scrypt
  (PASSWORD_CHECKS), which also count as calls.

Not grpc's ``maximum_concurrent_rpcs``: it counts every RPC alike, so the shift-long
session streams would take the places of the short calls, and its refusal says
nothing of what to do. The counts are plain integers changed on the event loop's one
thread: the good path of a call pays one compare and one increment and decrement, no
lock and no await of its own. Every way out of a call (an answer, an error, an abort,
the client cancelling) passes the ``finally`` that gives its place back.

A call whose deadline passed before it reached its handler (it waited behind a busy
event loop) is dropped at the door as well: its caller has already been told
DEADLINE_EXCEEDED, and may be retrying it or authorizing on site, so the work would be
wasted where the server is shortest of time, and a submit would put in the queue a
request its teller believes failed."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, NoReturn

import grpc
from authq.refusals import Refusal

log = logging.getLogger(__name__)

Handler = Any  # grpc.RpcMethodHandler: grpcio ships no type information
Behavior = Callable[..., Any]

# What a caller refused at the ceiling is told. Clients know such a refusal by its
# reason (authq.reconnect.is_at_capacity), which says that the center did nothing.
AT_CAPACITY_REASON = "CENTER_AT_CAPACITY"
AT_CAPACITY = (
    "the center is at capacity: {limit} {what}, the most it takes ({setting}); "
    "try again in a moment, or authorize on site if it lasts (R8)"
)

# Unary in shape, a stream in use: Next waits for work until an item comes or its
# deadline ends, so an idle authorizer holds it open for its whole deadline. Counted
# with the streams: among the calls, the center's hundreds of idle authorizers would
# hold the places meant for submits, and a quiet queue would refuse tellers. A flood
# of Next is still bounded (by max_open_streams), and the work it does once an item
# comes is one claim.
LONG_POLLS = frozenset({"/authq.v1.AuthorizerService/Next"})
# Streaming in shape, a call in use: a download ends when the image is sent, and what
# it costs (reading, watermarking) is a call's work, not a wait.
DOWNLOADS = frozenset(
    {
        "/authq.v1.TellerService/GetImage",
        "/authq.v1.AuthorizerService/GetImage",
        "/authq.v1.SupervisorService/GetImage",
    }
)
# Each runs scrypt (16 MiB, ~40 ms of a core) in the default thread pool, which the
# image views share: under max_calls_in_flight alone, a flood of logins would queue
# there for tens of seconds and hold every call's place meanwhile.
PASSWORD_CHECKS = frozenset({"/authq.v1.AuthService/Login", "/authq.v1.AuthService/ChangePassword"})

EXPIRED = (
    "the call's deadline passed before the center could start it (a busy server): nothing was done"
)

# Shedding is over once no call has been refused for this long: its end is logged then.
SHEDDING_QUIET_S = 5.0


class Ceiling:
    """One count and its limit; ``refusal`` is what a caller past it is told."""

    __slots__ = ("count", "limit", "refusal", "trailer")

    def __init__(self, limit: int, what: str, setting: str) -> None:
        self.count = 0
        self.limit = limit
        self.refusal = AT_CAPACITY.format(limit=limit, what=what, setting=setting)
        facts = {"setting": setting, "limit": str(limit)}
        self.trailer = Refusal(AT_CAPACITY_REASON, facts).trailer(
            grpc.StatusCode.RESOURCE_EXHAUSTED, self.refusal
        )


class Admission:
    """The ceilings of one server process, and the refusals counted by method."""

    def __init__(
        self,
        max_calls_in_flight: int,
        max_open_streams: int,
        max_logins_in_flight: int,
        *,
        quiet_s: float = SHEDDING_QUIET_S,
    ) -> None:
        self.calls = Ceiling(max_calls_in_flight, "calls in flight", "max_calls_in_flight")
        self.streams = Ceiling(max_open_streams, "open streams", "max_open_streams")
        self.logins = Ceiling(max_logins_in_flight, "logins in flight", "max_logins_in_flight")
        self._refused: dict[str, int] = {}
        self._expired: dict[str, int] = {}
        self._shedding = _Shedding(quiet_s)

    @property
    def calls_in_flight(self) -> int:
        return self.calls.count

    @property
    def open_streams(self) -> int:
        return self.streams.count

    @property
    def refused(self) -> Mapping[str, int]:
        """Calls refused at a ceiling since start, by method (/package.Service/Method)."""
        return self._refused

    @property
    def expired(self) -> Mapping[str, int]:
        """Calls dropped since start because their deadline had passed, by method."""
        return self._expired

    def wrap(self, method: str, handler: Handler) -> Handler:
        """``handler`` with its behavior counted against the ceiling its method takes."""
        if handler.unary_unary is not None:
            if method in PASSWORD_CHECKS:
                call = _login(handler.unary_unary, self, method)
            else:
                ceiling = self.streams if method in LONG_POLLS else self.calls
                call = _call(handler.unary_unary, self, ceiling, method)
            return handler._replace(unary_unary=call)
        if handler.stream_unary is not None:
            return handler._replace(
                stream_unary=_call(handler.stream_unary, self, self.calls, method)
            )
        if handler.unary_stream is not None:
            ceiling = self.calls if method in DOWNLOADS else self.streams
            return handler._replace(
                unary_stream=_stream(handler.unary_stream, self, ceiling, method)
            )
        return handler._replace(
            stream_stream=_stream(handler.stream_stream, self, self.streams, method)
        )

    async def refuse(self, context: Any, method: str, ceiling: Ceiling) -> NoReturn:
        self._refused[method] = self._refused.get(method, 0) + 1
        self._shedding.note(ceiling.refusal)
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            ceiling.refusal,
            trailing_metadata=(ceiling.trailer,),
        )
        raise AssertionError("unreachable")  # context.abort always raises

    async def drop_expired(self, context: Any, method: str) -> NoReturn:
        self._expired[method] = self._expired.get(method, 0) + 1
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, EXPIRED)
        raise AssertionError("unreachable")


def _expired(context: Any) -> bool:
    remaining = context.time_remaining()  # None: the caller set no deadline
    return remaining is not None and remaining <= 0


def _call(behavior: Behavior, gate: Admission, ceiling: Ceiling, method: str) -> Behavior:
    async def call(request: Any, context: Any) -> Any:
        if _expired(context):
            await gate.drop_expired(context, method)
        if ceiling.count >= ceiling.limit:
            await gate.refuse(context, method, ceiling)
        ceiling.count += 1
        try:
            return await behavior(request, context)
        finally:
            ceiling.count -= 1

    return call


def _login(behavior: Behavior, gate: Admission, method: str) -> Behavior:
    calls, logins = gate.calls, gate.logins

    async def login(request: Any, context: Any) -> Any:
        if _expired(context):
            await gate.drop_expired(context, method)
        if calls.count >= calls.limit:
            await gate.refuse(context, method, calls)
        if logins.count >= logins.limit:
            await gate.refuse(context, method, logins)
        calls.count += 1
        logins.count += 1
        try:
            return await behavior(request, context)
        finally:
            calls.count -= 1
            logins.count -= 1

    return login


def _stream(behavior: Behavior, gate: Admission, ceiling: Ceiling, method: str) -> Behavior:
    # grpc.aio tells a write()-style handler (a coroutine) from a generator by the
    # function it is given, so the wrapper must be of the same kind.
    if inspect.iscoroutinefunction(behavior):
        return _call(behavior, gate, ceiling, method)

    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        if _expired(context):
            await gate.drop_expired(context, method)
        if ceiling.count >= ceiling.limit:
            await gate.refuse(context, method, ceiling)
        ceiling.count += 1
        try:
            async for response in behavior(request, context):
                yield response
        finally:
            ceiling.count -= 1

    return stream


class _Shedding:
    """Logs a period of refusals twice, not once per refusal: a warning at the first,
    and their count once none has come for ``quiet_s`` (checked by a timer that runs
    only while refusals come)."""

    def __init__(self, quiet_s: float) -> None:
        self.quiet_s = quiet_s
        self.refused = 0
        self._seen = 0
        self._since = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def note(self, refusal: str) -> None:
        self.refused += 1
        if self._timer is not None:
            return
        self._since = time.monotonic()
        log.warning("refusing new work: %s", refusal)
        self._seen = self.refused
        self._timer = asyncio.get_running_loop().call_later(self.quiet_s, self._check)

    def _check(self) -> None:
        if self.refused != self._seen:
            self._seen = self.refused
            self._timer = asyncio.get_running_loop().call_later(self.quiet_s, self._check)
            return
        log.warning(
            "no longer at capacity: %d call(s) refused over %.1f s",
            self.refused,
            time.monotonic() - self._since - self.quiet_s,
        )
        self.refused = self._seen = 0
        self._timer = None
