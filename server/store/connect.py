"""The Redis client every server process (and its archiver) uses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

from server.store.redis_pipe import (
    BACKOFF,
    CONNECT_TIMEOUT_S,
    KEEPALIVE_OPTIONS,
    REPLY_DEADLINE_S,
    RETRIES,
    RETRY_WINDOW_S,
    RedisPipe,
    tls_refusal,
)

C = TypeVar("C", bound=AbstractConnection)
T = TypeVar("T")


class PipedRedis(aioredis.Redis):
    """redis-py's client with a RedisPipe to the same Redis, closed along with it.
    The Lua scripts of server/lua/ run on the pipe (server/store/scripts.py)."""

    pipe: RedisPipe

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await self.pipe.aclose()
        await super().aclose(close_connection_pool)


class _Retry(Retry):
    """redis-py's retries, but a TLS refusal (``tls_refusal``) fails at once, and no
    attempt starts RETRY_WINDOW_S after the first, as on the pipe: with each attempt
    allowed REPLY_DEADLINE_S, ten of them against a Redis that does not answer would
    hold the caller for minutes."""

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + RETRY_WINDOW_S

        def retryable(error: Exception) -> bool:
            refused = tls_refusal(error) is not None
            late = loop.time() > give_up_at
            return not (refused or late) and (is_retryable is None or is_retryable(error))

        return await super().call_with_retry(do, fail, retryable, with_failure_count)


# For TCP only: a Unix socket's connection class takes no keepalive settings.
_KEEPALIVE: dict[str, Any] = {
    "socket_keepalive": True,
    "socket_keepalive_options": KEEPALIVE_OPTIONS,
}


def redis_client(url: str, pool_size: int) -> PipedRedis:
    # Ride out a short Redis restart with the pipe's backoff (about 7 s) instead of
    # failing the call; the Lua scripts go on the pipe, plain reads on this pool. With
    # an explicit pool these settings must live on the pool's connections: given to
    # Redis() they would be silently ignored.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=10,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        # The pipe's bound, not redis-py's default of 5 s: the pool holds no blocking
        # command (the event hub's read has a pipe of its own).
        socket_timeout=REPLY_DEADLINE_S,
        **({} if url.startswith("unix:") else _KEEPALIVE),
        retry=_Retry(BACKOFF, retries=RETRIES),
        retry_on_error=[aioredis.ConnectionError, aioredis.TimeoutError, OSError],
    )
    pool.connection_class = hiredis_packing(pool.connection_class)
    client = PipedRedis(connection_pool=pool)
    client.pipe = RedisPipe(url)
    return client


def event_client(url: str) -> RedisPipe:
    """For the event stream's blocking XREAD: a connection of its own, since a
    blocked read holds up every reply behind it. The read blocks for 2 s at most,
    well within the pipe's REPLY_DEADLINE_S, so a quiet stream is not taken for a
    silent Redis."""
    return RedisPipe(url)


def hiredis_packing(base: type[C]) -> type[C]:
    """``base`` packing commands with hiredis's C encoder when hiredis is installed.

    redis-py's synchronous connections already do, its asyncio ones pack in Python:
    for a submit script's 19 arguments 12.5 us against 4.7 us, several times per
    request on the event loop's one core. The encoding is the same (hiredis formats
    str as UTF-8 and numbers as repr does)."""
    if not HIREDIS_AVAILABLE:
        return base
    serializer = HiredisRespSerializer()

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        packed: list[bytes] = serializer.pack(*args)
        return packed

    return type(f"Hiredis{base.__name__}", (base,), {"pack_command": pack_command})


def admin_client(url: str) -> aioredis.Redis:
    """A plain client for a one-off command (authq-admin), with the server's bounds:
    a Redis that does not answer a connect, a host gone quiet or a Redis that stopped
    answering fails the command in seconds instead of leaving the operator waiting
    minutes, or for ever. Set here, not left to redis-py, whose defaults vary by
    version (none before 8)."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        # The admin's commands and scripts do not block; a wait this long is no Redis.
        socket_timeout=REPLY_DEADLINE_S,
        **({} if url.startswith("unix:") else _KEEPALIVE),
    )
