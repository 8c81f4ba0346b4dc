"""Domain errors to gRPC status codes, in one place."""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar

import grpc
import redis.exceptions
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
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
]

_STORE_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# What translate_errors answers itself; anything else is a fault of the server.
_EXPECTED = (errors.AuthqError, DecodeError, *_STORE_DOWN)

# How protobuf (upb) names the type a message failed to parse as.
_PARSE_FAILURE = re.compile(r"Error parsing message with type '([\w.]+)'(?:: (.*))?", re.DOTALL)


class Unparsed:
    """A unary request that did not parse, handed to the handler in its place
    (server/api/registration.py): grpc would answer its DecodeError UNKNOWN."""

    __slots__ = ("error",)

    def __init__(self, error: DecodeError) -> None:
        self.error = error


# A status message travels in the trailing metadata, which the peer refuses beyond
# 8 KB (grpc's default): a message naming a caller's far too long id is cut.
MESSAGE_MAX_CHARS = 1000


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and message a caller gets for an exception."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code, _cut(str(exc))
    if isinstance(exc, ReplyLost):
        return grpc.StatusCode.UNAVAILABLE, (
            "the queue store's connection was lost while it was making the change: "
            "whether it was made is unknown; look before trying again"
        )
    if isinstance(exc, _STORE_DOWN):
        return grpc.StatusCode.UNAVAILABLE, "the queue store is unreachable: retry shortly"
    if isinstance(exc, DecodeError):
        # The server parses no protobuf but its callers' requests: the caller's fault.
        return grpc.StatusCode.INVALID_ARGUMENT, _cut(_parse_failure(exc))
    log.exception("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__})"


def _parse_failure(exc: DecodeError) -> str:
    said = str(exc)
    named = _PARSE_FAILURE.fullmatch(said)
    if named is None:
        return f"the request is not a valid message: {said}"
    return f"the request is not a valid {named[1]}: {named[2] or 'it does not parse'}"


def _cut(message: str) -> str:
    if len(message) <= MESSAGE_MAX_CHARS:
        return message
    said = f"... ({len(message)} characters)"
    return message[: MESSAGE_MAX_CHARS - len(said)] + said


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> NoReturn:
    code, message = status_of(exc)
    await context.abort(code, message)
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
