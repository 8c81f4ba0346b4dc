"""Domain errors to gRPC status codes, in one place."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar

import grpc
import redis.exceptions

from server import errors
from server.store.redis_pipe import ReplyLost

log = logging.getLogger(__name__)

_CODES: list[tuple[type[errors.AuthqError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.LeaseLost, grpc.StatusCode.ABORTED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
]

_STORE_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


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
    log.exception("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__})"


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
            try:
                async for item in handler(self, request, context):
                    yield item
            except (errors.AuthqError, *_STORE_DOWN) as exc:
                await abort(context, exc)

        return stream  # type: ignore[return-value]

    @functools.wraps(handler)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        try:
            return await handler(self, request, context)
        except (errors.AuthqError, *_STORE_DOWN) as exc:
            await abort(context, exc)

    return unary  # type: ignore[return-value]
