"""A TCP proxy in front of the tests' Redis that loses one reply: the command ran and
the client's connection died before its answer came, the case a resend must
recognise (server/store/redis_pipe.py, server/lua/stage_once.lua). Muted, it stands
for a Redis that stopped answering while its host still acknowledges every packet."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.connection import parse_url


class ReplyCutter:
    """A TCP proxy in front of Redis. Once armed with a marker, it forwards the first
    client write that holds the marker to Redis, and when Redis answers it cuts the
    client's connection instead of forwarding the reply: the command ran, and its
    reply was lost with the connection."""

    def __init__(self, redis_url: str) -> None:
        self.upstream: dict[str, Any] = parse_url(redis_url)  # type: ignore[no-untyped-call]
        self.marker: bytes | None = None
        # While set, what clients send is taken and dropped, on old connections and new.
        self.muted = False
        self.url = ""  # the proxy's, once started
        self.cuts = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if "path" in self.upstream:
            return await asyncio.open_unix_connection(self.upstream["path"])
        return await asyncio.open_connection(
            self.upstream.get("host", "localhost"), self.upstream.get("port", 6379)
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        up_reader, up_writer = await self._open_upstream()
        cut = asyncio.Event()

        async def upward() -> None:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    if self.muted:
                        continue
                    if self.marker is not None and self.marker in data:
                        self.marker = None
                        cut.set()  # before the write: its reply is the next to come
                    up_writer.write(data)
                    await up_writer.drain()

        async def downward() -> None:
            with contextlib.suppress(OSError):
                while data := await up_reader.read(65536):
                    if cut.is_set():
                        self.cuts += 1
                        return  # the reply is dropped, the client cut below
                    writer.write(data)
                    await writer.drain()

        try:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(upward()), asyncio.ensure_future(downward())],
                return_when=asyncio.FIRST_COMPLETED,
            )
            for side in pending:
                side.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            for side_writer in (writer, up_writer):
                side_writer.close()
                with contextlib.suppress(OSError):
                    await side_writer.wait_closed()
            self._tasks.discard(task)
