"""The ceiling of the gRPC layer: a bare grpc.aio echo server on uvloop, with no
protobuf and no application work. Run as ``python -m bench.echo PORT [REDIS_URL DIR]``.

Methods (raw bytes in and out):
  /bench.Echo/Echo    unary, answers the request bytes
  /bench.Echo/Sink    unary, answers 32 bytes (a large request, a small reply)
  /bench.Echo/Upload  client stream of chunks, answers 32 bytes

With a Redis URL and a directory, the least a durable server does, with no checks:
  /bench.Echo/Store       unary: one script (lua/store_like.lua) on the server's kind
                          of pipelined Redis connection, then 32 bytes
  /bench.Echo/StoreUpload client stream: the bytes hashed, appended to one file and
                          fsynced (group commit), then the same script, then 32 bytes
  /bench.Echo/StoreStream bidi stream, as authq's sessions: each RECORD-byte record
                          of a message stored by the same script, its tag (its first
                          8 bytes) sent back once stored; what is waiting to be sent
                          on either side travels as one message
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import uvloop

from server.store.redis_pipe import PipedScript, RedisPipe

# Large enough for the 1 MB single-chunk case of the chunk-size scenario.
OPTIONS = [
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
]
ACK = b"\x00" * 32
RECORD = 256  # bytes per record on StoreStream: an 8-byte tag, then filler
TAG = 8


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


STORE_LIKE = (Path(__file__).parent / "lua" / "store_like.lua").read_text()


class DurableSink:
    """Store and StoreUpload: what any durable design pays at least per request."""

    def __init__(self, redis_url: str, directory: Path) -> None:
        self.pipe = RedisPipe(redis_url)
        self.script = PipedScript(self.pipe, STORE_LIKE)
        self.serial = itertools.count()
        self.fd = os.open(directory / "uploads.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.lock = threading.Lock()
        self.sync_lock = threading.Lock()
        self.written = self.synced = 0

    async def _stored(self, request_id: str, body: bytes) -> bytes:
        await self.script(keys=("be:lane", "be:events"), args=(request_id, body, 1))
        return ACK

    async def store(self, request: bytes, context: Any) -> bytes:
        return await self._stored(f"r{next(self.serial)}", request)

    async def store_stream(
        self, requests: AsyncIterator[bytes], context: Any
    ) -> AsyncIterator[bytes]:
        stored: list[bytes] = []
        ready = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        outstanding = 0
        failures: list[BaseException] = []

        async def one(record: bytes) -> None:
            nonlocal outstanding
            try:
                await self._stored(f"r{next(self.serial)}", record)
                stored.append(record[:TAG])
            except Exception as error:
                failures.append(error)
            finally:
                outstanding -= 1
                ready.set()

        async def read() -> None:
            nonlocal outstanding
            try:
                async for message in requests:
                    for start in range(0, len(message), RECORD):
                        outstanding += 1
                        task = asyncio.create_task(one(message[start : start + RECORD]))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
            finally:
                ready.set()

        reader = asyncio.create_task(read())
        try:
            while True:
                await ready.wait()
                ready.clear()
                if failures:
                    raise failures[0]
                if stored:
                    tags = b"".join(stored)
                    stored.clear()
                    yield tags
                if reader.done() and not outstanding:
                    return
        finally:
            reader.cancel()

    async def store_upload(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        data = b"".join([chunk async for chunk in requests])
        digest = hashlib.sha256(data).hexdigest()
        await asyncio.to_thread(self._append, data)
        return await self._stored(digest, digest.encode())

    def _append(self, data: bytes) -> None:
        # Group commit: one fsync covers every upload written before it began.
        with self.lock:
            os.write(self.fd, data)
            self.written += 1
            mine = self.written
        with self.sync_lock:
            if self.synced < mine:
                covered = self.written
                os.fsync(self.fd)
                self.synced = covered


async def serve(port: int, redis_url: str | None = None, directory: Path | None = None) -> None:
    server = grpc.aio.server(options=OPTIONS)
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo, _raw, _raw),
        "Sink": grpc.unary_unary_rpc_method_handler(_sink, _raw, _raw),
        "Upload": grpc.stream_unary_rpc_method_handler(_upload, _raw, _raw),
    }
    if redis_url is not None and directory is not None:
        durable = DurableSink(redis_url, directory)
        handlers["Store"] = grpc.unary_unary_rpc_method_handler(durable.store, _raw, _raw)
        handlers["StoreUpload"] = grpc.stream_unary_rpc_method_handler(
            durable.store_upload, _raw, _raw
        )
        handlers["StoreStream"] = grpc.stream_stream_rpc_method_handler(
            durable.store_stream, _raw, _raw
        )
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
        self.store = self.channel.unary_unary("/bench.Echo/Store", _raw, _raw)
        self.store_upload = self.channel.stream_unary("/bench.Echo/StoreUpload", _raw, _raw)
        self.store_stream = self.channel.stream_stream("/bench.Echo/StoreStream", _raw, _raw)

    async def send_chunks(self, chunks: list[bytes], *, durable: bool = False) -> bytes:
        async def stream() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        call = self.store_upload if durable else self.upload
        reply: bytes = await call(stream())
        return reply

    async def close(self) -> None:
        await self.channel.close()


class DurableStream:
    """One StoreStream call: ``await stream.store()`` returns once the server has stored
    the record. Records sent while a write is under way go out together in the next."""

    def __init__(self, client: EchoClient) -> None:
        self.call = client.store_stream()
        self.tags = itertools.count()
        self.waiting: dict[bytes, asyncio.Future[None]] = {}
        self.outbox: list[bytes] = []
        self.wake = asyncio.Event()
        self.tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._receive())]

    async def store(self) -> None:
        tag = next(self.tags).to_bytes(TAG, "big")
        stored = asyncio.get_running_loop().create_future()
        self.waiting[tag] = stored
        self.outbox.append(tag.ljust(RECORD, b"x"))
        self.wake.set()
        await stored

    async def _send(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.outbox:
                message = b"".join(self.outbox)
                self.outbox.clear()
                await self.call.write(message)

    async def _receive(self) -> None:
        failure: BaseException = ConnectionError("the StoreStream call ended")
        try:
            while (message := await self.call.read()) is not grpc.aio.EOF:
                assert isinstance(message, bytes)
                for start in range(0, len(message), TAG):
                    self.waiting.pop(message[start : start + TAG]).set_result(None)
        except Exception as error:  # the call failed, or answered a tag never sent
            failure = error
        for stored in self.waiting.values():
            if not stored.done():
                stored.set_exception(failure)
        self.waiting.clear()

    async def close(self) -> None:
        self.tasks[0].cancel()
        self.call.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task


if __name__ == "__main__":
    durable_args = (sys.argv[2], Path(sys.argv[3])) if len(sys.argv) > 3 else ()
    uvloop.run(serve(int(sys.argv[1]), *durable_args))
