"""A grpc.aio server interceptor timing every call, by method and status code.

Unary and client-streaming calls go to one histogram (their time to answer);
server-streaming calls (Watch, the sessions) to another, with the stream's lifetime:
its count by code is the number of streams that ended that way. The code is the one
the servicer set or aborted with; an exception that escapes it is UNKNOWN, a
cancelled call CANCELLED."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Histogram

from server.metrics.registry import ServerMetrics

Handler = Any  # grpc.RpcMethodHandler: grpcio ships no type information


def _code_name(context: Any, error: BaseException | None) -> str:
    code = context.code()
    if code is not None:
        return str(code.name)
    if error is None:
        return "OK"
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        # GeneratorExit: the stream was closed under us (the client went away).
        return "CANCELLED"
    return "UNKNOWN"


class _Timer:
    """Observes one call's duration under its final code; children are cached because
    ``labels()`` costs a lock and a dict lookup on the hot path of every call."""

    def __init__(self, histogram: Histogram, method: str) -> None:
        self.histogram = histogram
        self.method = method
        self._children: dict[str, Any] = {}

    def observe(self, context: Any, error: BaseException | None, started: float) -> None:
        code = _code_name(context, error)
        child = self._children.get(code)
        if child is None:
            child = self._children[code] = self.histogram.labels(self.method, code)
        child.observe(time.perf_counter() - started)


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        self._timers: dict[tuple[str, bool], _Timer] = {}

    def _timer(self, method: str, streaming: bool) -> _Timer:
        timer = self._timers.get((method, streaming))
        if timer is None:
            histogram = self.metrics.stream_seconds if streaming else self.metrics.rpc_seconds
            timer = self._timers[(method, streaming)] = _Timer(histogram, method)
        return timer

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Handler]],
        handler_call_details: Any,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = str(handler_call_details.method)
        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _timed_call(handler.unary_unary, self._timer(method, False)), **codec
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _timed_call(handler.stream_unary, self._timer(method, False)), **codec
            )
        timer = self._timer(method, True)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _timed_stream(handler.unary_stream, timer), **codec
            )
        return grpc.stream_stream_rpc_method_handler(
            _timed_stream(handler.stream_stream, timer), **codec
        )


def _timed_call(behavior: Callable[..., Any], timer: _Timer) -> Callable[..., Any]:
    async def call(request: Any, context: Any) -> Any:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            timer.observe(context, error, started)

    return call


def _timed_stream(behavior: Callable[..., Any], timer: _Timer) -> Callable[..., Any]:
    # grpc.aio tells a write()-style handler (a coroutine) from a generator by the
    # function it is given, so the wrapper must be of the same kind.
    if inspect.iscoroutinefunction(behavior):
        return _timed_call(behavior, timer)

    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            async for response in behavior(request, context):
                yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            timer.observe(context, error, started)

    return stream
