"""Domain errors to gRPC status codes, in one place: each status carries, besides its
code and message, the refusal a program acts on (a google.rpc.ErrorInfo in the
trailing metadata, proto/authq/refusals.py)."""

from __future__ import annotations

import functools
import inspect
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, NamedTuple, NoReturn, TypeVar

import grpc
import redis.exceptions
from authq.refusals import FieldViolation, Refusal
from authq.v1 import common_pb2 as cpb
from google.protobuf.message import DecodeError

from server import errors
from server.store.redis_pipe import ReplyLost

log = logging.getLogger(__name__)

_CODES: list[tuple[type[errors.AuthqError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    # Submit answers it with an OnsiteFallback (server/api/teller_session.py); should
    # it reach a caller elsewhere, the center refuses new work while the emergency lasts.
    (errors.OnsiteFallbackRequired, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.LeaseLost, grpc.StatusCode.ABORTED),
    (errors.AccountChanged, grpc.StatusCode.ABORTED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
]

_STORE_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# What translate_errors answers itself; anything else is a fault of the server. An
# error reply of Redis is one of the store's refusals below, or else a fault (INTERNAL).
_EXPECTED = (errors.AuthqError, DecodeError, *_STORE_DOWN, redis.exceptions.ResponseError)

# Redis refusing every write: full (OOM under maxmemory with noeviction), unable to
# write its disk (MISCONF: a failed AOF write or snapshot), or a read-only replica.
# Inside a script Redis 6.2 wraps the refusal ("Error running script ...: -OOM ...");
# later versions and plain commands lead with it. Redis refuses a script's first write
# and then all of them, so a refused script has changed nothing.
_WRITE_REFUSED = re.compile(r"(?:^|-)(OOM|MISCONF|READONLY) ")
_STORE_REFUSALS = {
    "OOM": (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "STORE_FULL",
        "the queue store is full (Redis reached its maxmemory): nothing was changed; the "
        "center takes no change until its operators give Redis more memory",
    ),
    "MISCONF": (
        grpc.StatusCode.UNAVAILABLE,
        "STORE_CANNOT_PERSIST",
        "the queue store cannot write to its disk (Redis MISCONF): nothing was changed; "
        "the center takes no change until its operators fix the disk",
    ),
    "READONLY": (
        grpc.StatusCode.UNAVAILABLE,
        "STORE_READ_ONLY",
        "the queue store is a read-only replica (Redis READONLY): nothing was changed; "
        "the center takes no change until it is pointed at the primary",
    ),
}
# A store refusing writes fails every call at once: one warning per kind this often,
# with how many calls it refused since, rather than a line each.
STORE_WARNING_EVERY_S = 10.0
_store_warned: dict[str, tuple[float, int]] = {}
clock = time.monotonic

# How protobuf (upb) names the type a message failed to parse as.
_PARSE_FAILURE = re.compile(r"Error parsing message with type '([\w.]+)'(?:: (.*))?", re.DOTALL)


class Unparsed:
    """A unary request that did not parse, handed to the handler in its place
    (server/api/registration.py): grpc would answer its DecodeError UNKNOWN."""

    __slots__ = ("error",)

    def __init__(self, error: DecodeError) -> None:
        self.error = error


# A status message travels in the trailing metadata, which the peer refuses beyond
# 8 KB (grpc's soft limit; between it and 16 KB at random): a message naming a
# caller's far too long id is cut. The limits are UTF-8 bytes, since grpc-message
# percent-encodes each byte past ASCII (a CJK character takes 9): at most 3 KB
# there. The refusal travels in the same trailers, base64-encoded, beside the
# message: its facts are ids and states, and a caller's far too long id is cut
# there too.
MESSAGE_MAX_BYTES = 1000
VALUE_MAX_BYTES = 200
DESCRIPTION_MAX_BYTES = 500


class Refused(NamedTuple):
    """How a call ends for an exception: for people, the code and message; for
    programs, the refusal."""

    code: grpc.StatusCode
    message: str
    refusal: Refusal

    def session_error(self) -> cpb.SessionError:
        """The same, as a refusal inside a session stream."""
        return cpb.SessionError(
            code=self.code.value[0],
            message=self.message,
            reason=self.refusal.reason,
            metadata=self.refusal.metadata,
        )


def refused(exc: BaseException) -> Refused:
    """The status, message and refusal a caller gets for an exception."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return Refused(code, _cut(str(exc)), _refusal(exc))
    if isinstance(exc, ReplyLost):
        message = (
            "the queue store's connection was lost while it was making the change: "
            "whether it was made is unknown; look before trying again"
        )
        return Refused(grpc.StatusCode.UNAVAILABLE, message, Refusal("OUTCOME_UNKNOWN"))
    if isinstance(exc, _STORE_DOWN):
        message = "the queue store is unreachable: retry shortly"
        return Refused(grpc.StatusCode.UNAVAILABLE, message, Refusal("STORE_UNREACHABLE"))
    if isinstance(exc, redis.exceptions.ResponseError):
        kind = _write_refused(exc)
        if kind is not None:
            code, reason, message = _STORE_REFUSALS[kind]
            _warn_store_refusal(kind, exc)
            return Refused(code, message, Refusal(reason))
    if isinstance(exc, DecodeError):
        # The server parses no protobuf but its callers' requests: the caller's fault.
        message, message_type = _parse_failure(exc)
        facts = {"message_type": _cut(message_type, VALUE_MAX_BYTES)} if message_type else {}
        refusal = Refusal("REQUEST_UNPARSABLE", facts)
        return Refused(grpc.StatusCode.INVALID_ARGUMENT, _cut(message), refusal)
    log.exception("internal error", exc_info=exc)
    message = f"internal error ({type(exc).__name__})"
    return Refused(grpc.StatusCode.INTERNAL, message, Refusal("INTERNAL"))


def _write_refused(exc: redis.exceptions.ResponseError) -> str | None:
    """OOM, MISCONF or READONLY if Redis refused the write as such, else None."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "OOM"  # redis-py took the word off the message
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return "READONLY"
    found = _WRITE_REFUSED.search(str(exc))
    return found[1] if found is not None else None


def _warn_store_refusal(kind: str, exc: redis.exceptions.ResponseError) -> None:
    now = clock()
    warned_at, refused_since = _store_warned.get(kind, (-STORE_WARNING_EVERY_S, 0))
    if now - warned_at < STORE_WARNING_EVERY_S:
        _store_warned[kind] = (warned_at, refused_since + 1)
        return
    _store_warned[kind] = (now, 0)
    more = f" ({refused_since} more refused since the last warning)" if refused_since else ""
    log.warning("Redis refuses writes: %s%s", exc, more)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and message a caller gets for an exception."""
    code, message, _ = refused(exc)
    return code, message


def _refusal(exc: errors.AuthqError) -> Refusal:
    facts = _facts(exc.metadata)
    field = exc.metadata.get("field")
    if isinstance(exc, errors.InvalidArgument) and field is not None:
        problem = str(exc).removeprefix(f"{field}: ")
        violation = FieldViolation(facts["field"], _cut(problem, DESCRIPTION_MAX_BYTES))
        return Refusal(exc.reason, facts, (violation,))
    return Refusal(exc.reason, facts)


def _facts(metadata: Mapping[str, str]) -> dict[str, str]:
    return {key: _cut(value, VALUE_MAX_BYTES) for key, value in metadata.items()}


def _parse_failure(exc: DecodeError) -> tuple[str, str]:
    """The message, and the type the request failed to parse as (if protobuf said)."""
    said = str(exc)
    named = _PARSE_FAILURE.fullmatch(said)
    if named is None:
        return f"the request is not a valid message: {said}", ""
    return f"the request is not a valid {named[1]}: {named[2] or 'it does not parse'}", named[1]


def _cut(message: str, limit: int = MESSAGE_MAX_BYTES) -> str:
    """At most ``limit`` bytes of UTF-8, whole characters only."""
    encoded = message.encode()
    if len(encoded) <= limit:
        return message
    said = f"... ({len(message)} characters)"
    return encoded[: limit - len(said)].decode(errors="ignore") + said


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> NoReturn:
    code, message, refusal = refused(exc)
    await context.abort(code, message, trailing_metadata=(refusal.trailer(code, message),))
    raise AssertionError("unreachable")  # context.abort always raises


F = TypeVar("F", bound=Callable[..., Any])


def translate_errors(handler: F) -> F:
    """Wraps a servicer method (coroutine or async generator) so that any error
    becomes a status with a message, never a crash of the server."""
    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            if request.__class__ is Unparsed:
                await abort(context, request.error)
            try:
                async for item in handler(self, request, context):
                    yield item
            except _EXPECTED as exc:
                await abort(context, exc)

        return stream  # type: ignore[return-value]

    @functools.wraps(handler)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        if request.__class__ is Unparsed:
            await abort(context, request.error)
        try:
            return await handler(self, request, context)
        except _EXPECTED as exc:
            await abort(context, exc)

    return unary  # type: ignore[return-value]
