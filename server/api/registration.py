"""Adds a service to the server so that a unary request that does not parse is answered
INVALID_ARGUMENT, naming its type, rather than UNKNOWN.

grpc.aio parses a unary request (unary-unary, server-streaming) before the handler
runs: a DecodeError there is logged by grpc as a crash of the servicer and answered
UNKNOWN. Registered through add_service, such a request reaches the handler as an
``Unparsed`` in its place, which status.translate_errors answers. The good path pays
one Python call around FromString and one class check in translate_errors. A streamed
request is parsed as the handler reads it, where translate_errors (and the sessions'
readers) already see the DecodeError: those handlers are left as they are.

Given an Admission, each handler is also counted against its ceiling
(server/api/admission.py), outside the parse check: the refusal comes first."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from server.api.admission import Admission
from server.api.status import Unparsed

S = TypeVar("S")
Handler = Any  # grpc.RpcMethodHandler: grpcio ships no type information


def add_service(
    add_to_server: Callable[[S, Any], None],
    servicer: S,
    server: Any,
    admission: Admission | None = None,
) -> None:
    """``add_to_server`` is a generated ``add_..._to_server``; it registers through
    this module's stand-in for ``server``, which wraps each handler first."""
    add_to_server(servicer, _Registrar(server, admission))


def checked(handler: Handler) -> Handler:
    if handler.request_streaming or handler.request_deserializer is None:
        return handler
    parse = handler.request_deserializer

    def parse_or_hand_over(raw: bytes) -> Any:
        try:
            return parse(raw)
        except DecodeError as exc:
            return Unparsed(exc)

    return handler._replace(request_deserializer=parse_or_hand_over)


def _wrapped(method: str, handler: Handler, admission: Admission | None) -> Handler:
    handler = checked(handler)
    return handler if admission is None else admission.wrap(method, handler)


class _Registrar:
    """The two calls generated code makes on the server."""

    def __init__(self, server: Any, admission: Admission | None) -> None:
        self.server = server
        self.admission = admission

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        self.server.add_generic_rpc_handlers(
            tuple(_Generic(inner, self.admission) for inner in handlers)
        )

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        wrapped = {
            name: _wrapped(f"/{service}/{name}", handler, self.admission)
            for name, handler in handlers.items()
        }
        self.server.add_registered_method_handlers(service, wrapped)


class _Generic(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The fallback path grpc tries for a method it did not find registered."""

    def __init__(self, inner: Any, admission: Admission | None) -> None:
        self.inner = inner
        self.admission = admission
        # Wrapped once per method: service() is asked on every call.
        self._wrapped: dict[str, Handler] = {}

    def service(self, handler_call_details: Any) -> Handler:
        method = handler_call_details.method
        handler = self._wrapped.get(method)
        if handler is None:
            handler = self.inner.service(handler_call_details)
            if handler is None:
                return None
            handler = self._wrapped[method] = _wrapped(method, handler, self.admission)
        return handler
