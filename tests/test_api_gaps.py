"""Who is calling is settled before anything else on every RPC: a caller without a
valid token is told so, and learns nothing of how the server reads its request (not
even that a field is malformed)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import authq.v1
import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from tests.conftest import RunningServer

# How a caller gets a token (Login, ChangePassword) or ends one (Logout answers an
# unknown token as already ended): no token is asked of them.
WITHOUT_LOGIN = "authq.v1.AuthService"


def _services() -> Iterator[ServiceDescriptor]:
    """Every service of the API, so that one added later is walked too."""
    for module in pkgutil.iter_modules(authq.v1.__path__):
        if module.name.endswith("_pb2"):
            pb2 = importlib.import_module(f"{authq.v1.__name__}.{module.name}")
            yield from pb2.DESCRIPTOR.services_by_name.values()


METHODS = [
    (service, method)
    for service in _services()
    if service.full_name != WITHOUT_LOGIN
    for method in service.methods
]


def _malformed(method: MethodDescriptor) -> Message:
    """The method's request with every text field set to what no field accepts (and
    the rest left empty, which most fields refuse too)."""
    request = message_factory.GetMessageClass(method.input_type)()
    for field in method.input_type.fields:
        if field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated:
            setattr(request, field.name, "not/a valid value\n")
    return request


async def _status(
    channel: grpc.aio.Channel,
    service: ServiceDescriptor,
    method: MethodDescriptor,
    metadata: tuple[tuple[str, str], ...],
) -> tuple[grpc.StatusCode, str]:
    path = f"/{service.full_name}/{method.name}"
    request = _malformed(method)
    serialize = type(request).SerializeToString
    try:
        if method.client_streaming and method.server_streaming:
            bidi = channel.stream_stream(path, request_serializer=serialize)
            async for _ in bidi(iter([request]), metadata=metadata, timeout=10):
                pass
        elif method.client_streaming:
            upload = channel.stream_unary(path, request_serializer=serialize)
            await upload(iter([request]), metadata=metadata, timeout=10)
        elif method.server_streaming:
            stream = channel.unary_stream(path, request_serializer=serialize)
            async for _ in stream(request, metadata=metadata, timeout=10):
                pass
        else:
            unary = channel.unary_unary(path, request_serializer=serialize)
            await unary(request, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize(
    "metadata",
    [(("authorization", "Bearer not-a-token-of-anyone"),), ()],
    ids=["bad-token", "no-token"],
)
async def test_every_rpc_asks_who_is_calling_before_reading_the_request(
    server: RunningServer, metadata: tuple[tuple[str, str], ...]
) -> None:
    assert {s.full_name for s, _ in METHODS} >= {
        "authq.v1.TellerService",
        "authq.v1.AuthorizerService",
        "authq.v1.SupervisorService",
    }
    answered = {}
    async with grpc.aio.insecure_channel(server.target) as channel:
        for service, method in METHODS:
            answered[f"{service.name}.{method.name}"] = await _status(
                channel, service, method, metadata
            )
    wrong = [
        f"{name}: {code.name} {details}"
        for name, (code, details) in answered.items()
        if code is not grpc.StatusCode.UNAUTHENTICATED
    ]
    assert not wrong, "\n".join(wrong)
