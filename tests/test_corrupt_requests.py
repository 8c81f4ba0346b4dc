"""A request that does not parse as its protobuf type is bad input: INVALID_ARGUMENT,
naming the type, rather than grpc's UNKNOWN (and its logged crash of the servicer);
a session stream is ended with it rather than left open with nobody reading."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from authq.v1 import auth_pb2, auth_pb2_grpc, teller_pb2, teller_pb2_grpc

from tests.conftest import PASSWORD, RunningServer

# A field tag of number 0 can never be valid, so no type parses this.
CORRUPT = b"\xff\xff\xff"


def _said(exc: grpc.aio.AioRpcError, type_name: str) -> None:
    assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
    assert exc.details() == f"the request is not a valid {type_name}: Wire format was corrupt"


async def _then_silent() -> AsyncIterator[bytes]:
    # The client keeps its side open: only the server can end the stream.
    yield CORRUPT
    await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("method", "type_name"),
    [
        ("/authq.v1.TellerService/Session", "authq.v1.TellerSessionIn"),
        ("/authq.v1.AuthorizerService/Session", "authq.v1.AuthorizerSessionIn"),
    ],
)
async def test_a_session_message_that_does_not_parse_ends_the_stream_with_it(
    server: RunningServer, method: str, type_name: str
) -> None:
    client_of = server.authorizer("auth-p") if "Authorizer" in method else server.teller()
    async with client_of as client, grpc.aio.insecure_channel(server.target) as channel:
        call = channel.stream_stream(method)(_then_silent(), metadata=client.metadata)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(call.read(), 10)
    _said(refused.value, type_name)


async def test_an_upload_chunk_that_does_not_parse_is_invalid(server: RunningServer) -> None:
    async with server.teller() as teller, grpc.aio.insecure_channel(server.target) as channel:
        upload = channel.stream_unary("/authq.v1.TellerService/UploadImage")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await upload(iter([CORRUPT]), metadata=teller.metadata)
    _said(refused.value, "authq.v1.ImageChunk")


async def test_a_unary_request_that_does_not_parse_is_invalid(server: RunningServer) -> None:
    async with server.teller() as teller, grpc.aio.insecure_channel(server.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.unary_unary("/authq.v1.AuthService/Login")(CORRUPT)
        _said(refused.value, "authq.v1.LoginRequest")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.unary_stream("/authq.v1.TellerService/Watch")(CORRUPT).read()
        _said(refused.value, "authq.v1.WatchRequest")
        # A streamed request is parsed by the handler itself, after its login check.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.stream_unary("/authq.v1.TellerService/UploadImage")(iter([CORRUPT]))
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        # What parses is served as before.
        login: Any = auth_pb2_grpc.AuthServiceStub(channel).Login
        reply = await login(auth_pb2.LoginRequest(user_id="teller-1", password=PASSWORD))
        assert reply.token
        watch = teller_pb2_grpc.TellerServiceStub(channel).Watch(
            teller_pb2.WatchRequest(request_id="no-such-request"), metadata=teller.metadata
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await watch.read()
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND
