"""The ceiling of the gRPC layer: a bare grpc.aio echo server on uvloop, with no
protobuf and no application work. Run as ``python -m bench.echo PORT``.

Methods (raw bytes in and out):
  /bench.Echo/Echo    unary, answers the request bytes
  /bench.Echo/Sink    unary, answers 32 bytes (a large request, a small reply)
  /bench.Echo/Upload  client stream of chunks, answers 32 bytes
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import uvloop

# Large enough for the 1 MB single-chunk case of the chunk-size scenario.
OPTIONS = [
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
]
ACK = b"\x00" * 32


def _raw(value: bytes) -> bytes:
    return value


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _sink(request: bytes, context: Any) -> bytes:
    return ACK


async def _upload(requests: AsyncIterator[bytes], context: Any) -> bytes:
    async for _chunk in requests:
        pass
    return ACK


async def serve(port: int) -> None:
    server = grpc.aio.server(options=OPTIONS)
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo, _raw, _raw),
        "Sink": grpc.unary_unary_rpc_method_handler(_sink, _raw, _raw),
        "Upload": grpc.stream_unary_rpc_method_handler(_upload, _raw, _raw),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("echo listening", flush=True)
    await server.wait_for_termination()


class EchoClient:
    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target, options=OPTIONS)
        self.echo = self.channel.unary_unary("/bench.Echo/Echo", _raw, _raw)
        self.sink = self.channel.unary_unary("/bench.Echo/Sink", _raw, _raw)
        self.upload = self.channel.stream_unary("/bench.Echo/Upload", _raw, _raw)

    async def send_chunks(self, chunks: list[bytes]) -> bytes:
        async def stream() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        reply: bytes = await self.upload(stream())
        return reply

    async def close(self) -> None:
        await self.channel.close()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
