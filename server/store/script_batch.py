"""Group commit for one Lua script: calls made while a batch is in flight go out
together as the next batch, in one pipeline.

Under load most of a script call's cost in this process is redis-py's per-command
machinery (a pooled connection, a timeout, one write and one read each), and in Redis
one fsync per write with ``appendfsync always``. A pipeline pays those once for the
whole batch; each call still gets its own reply or its own error, so one refused call
never fails the others. A call that finds nothing in flight goes out at once, so at
low load nothing waits. Only for scripts whose callers may run them in any order
among themselves (each submit touches its own request), and that are safe to retry
(a pipeline resent after a lost connection runs them again), like every script of
server/lua/."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

MAX_BATCH = 256


@dataclass(slots=True)
class _Call:
    keys: Sequence[Any]
    args: Sequence[Any]
    future: asyncio.Future[Any]


class ScriptBatcher:
    """Called like the AsyncScript it wraps: ``await batcher(keys=..., args=...)``."""

    def __init__(
        self, client: aioredis.Redis, script: AsyncScript, max_batch: int = MAX_BATCH
    ) -> None:
        self.client = client
        self.script = script
        self.max_batch = max_batch
        self._queue: deque[_Call] = deque()
        self._writer: asyncio.Task[None] | None = None
        # Batches sent and calls in them, for tests and profiling.
        self.batches = 0
        self.calls = 0

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Call(keys, args, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="script-batch")
        # A caller cancelled while waiting does not withdraw its call, which may be
        # sent already; its reply is dropped (_settle).
        return await future

    async def _write(self) -> None:
        while self._queue:
            size = min(len(self._queue), self.max_batch)
            batch = [self._queue.popleft() for _ in range(size)]
            self.batches += 1
            self.calls += size
            try:
                await self._run(batch)
            except asyncio.CancelledError:
                for call in (*batch, *self._queue):
                    if not call.future.done():
                        call.future.cancel()
                self._queue.clear()
                raise
            except Exception as exc:
                for call in batch:
                    if not call.future.done():
                        call.future.set_exception(exc)

    async def _run(self, batch: list[_Call]) -> None:
        if len(batch) == 1:
            (call,) = batch
            _settle(call, await self.script(keys=call.keys, args=call.args))
            return
        replies = await run_pipelined(
            self.client, self.script, [(call.keys, call.args) for call in batch]
        )
        for call, reply in zip(batch, replies, strict=True):
            _settle(call, reply)


async def run_pipelined(
    client: aioredis.Redis,
    script: AsyncScript,
    calls: Sequence[tuple[Sequence[Any], Sequence[Any]]],
) -> list[Any]:
    """Runs the script once per (keys, args) in one pipeline; each reply is the
    script's result or the exception of that call alone."""
    if not calls:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies = await pipe.execute(raise_on_error=False)
    for index, reply in enumerate(replies):
        if isinstance(reply, NoScriptError):
            # A Redis restarted without its scripts did not run this call: the
            # script object loads it and runs the call again.
            keys, args = calls[index]
            try:
                replies[index] = await script(keys=keys, args=args)
            except Exception as exc:
                replies[index] = exc
    return list(replies)


def _settle(call: _Call, reply: Any) -> None:
    if call.future.done():
        return
    if isinstance(reply, Exception):
        call.future.set_exception(reply)
    else:
        call.future.set_result(reply)
