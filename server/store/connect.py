"""The Redis client every server process (and its archiver) uses."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff


def redis_client(url: str, pool_size: int) -> aioredis.Redis:
    # Ride out a short Redis restart (about 7 s of backoff) instead of failing the
    # call: every script is safe to retry (submit and decide recognise their own
    # retries). With an explicit pool these settings must live on the pool's
    # connections: given to Redis() they would be silently ignored.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=10),
        retry_on_error=[aioredis.ConnectionError, aioredis.TimeoutError, OSError],
    )
    return aioredis.Redis(connection_pool=pool)
