"""A record staged by a command of its own is staged once (R15), even when redis-py
sends that command again because its connection died after Redis ran it and before
the reply came back: the transactions of server/store/staging.py and the records
the server stages itself (refusals, logins) go through stage_once.lua.

The loss is made by a proxy between the client and the real Redis, which forwards
the command, lets Redis run it, and closes the connection instead of passing the
reply on (tests/reply_cutter.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest
import redis.asyncio as aioredis

from server.store import connect
from server.store.audit import AuditLog
from server.store.audit_records import StagedAudit
from server.store.keys import Keys
from server.store.staging import audited_transaction
from tests.reply_cutter import ReplyCutter

PREFIX = "{once}"
STAGED = Keys(PREFIX).audit_staged


async def staged_bodies(redis_client: aioredis.Redis) -> list[bytes]:
    entries = await redis_client.xrange(STAGED)
    assert entries is not None
    return [cast(bytes, (fields or {})[b"b"]) for _, fields in entries]


@pytest.fixture
async def cutter(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[ReplyCutter]:
    proxy = ReplyCutter(redis_url)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def client(cutter: ReplyCutter) -> AsyncIterator[aioredis.Redis]:
    # The server's own client, with its retries, reaching Redis through the proxy.
    proxied = connect.redis_client(cutter.url, 2)
    yield proxied
    await proxied.aclose(close_connection_pool=True)


async def test_a_transaction_sent_again_after_its_reply_was_lost_stages_its_record_once(
    client: aioredis.Redis, cutter: ReplyCutter, redis_client: aioredis.Redis
) -> None:
    await client.ping()
    audit = StagedAudit(b"the away record")
    cutter.marker = b"EXEC"
    async with audited_transaction(client, STAGED, audit) as pipe:
        pipe.sadd(f"{PREFIX}:away", "authorizer-1")
    # The transaction ran, its reply was lost, and redis-py sent it again.
    assert cutter.cuts == 1
    assert cutter.connections == 2
    assert audit.staged
    assert await redis_client.smembers(f"{PREFIX}:away") == {b"authorizer-1"}
    assert await staged_bodies(redis_client) == [b"the away record"]


async def test_a_record_staged_on_its_own_is_staged_once_after_a_lost_reply(
    client: aioredis.Redis, cutter: ReplyCutter, redis_client: aioredis.Redis
) -> None:
    trail = AuditLog(client, prefix=PREFIX)
    await client.ping()
    cutter.marker = b"EVAL"
    await trail.stage(b"a refusal")
    await trail.stage(b"the next refusal")
    assert cutter.cuts == 1
    assert await staged_bodies(redis_client) == [b"a refusal", b"the next refusal"]


async def test_each_record_has_a_once_key_of_its_own_that_does_not_outlive_its_resends(
    client: aioredis.Redis, redis_client: aioredis.Redis
) -> None:
    """Two records with the same bytes are two records; the keys that tell a resend
    apart expire."""
    trail = AuditLog(client, prefix=PREFIX)
    await trail.stage(b"same bytes")
    await trail.stage(b"same bytes")
    assert await redis_client.xlen(STAGED) == 2
    once_keys = [key async for key in redis_client.scan_iter(match=f"{STAGED}:once:*")]
    assert len(once_keys) == 2
    for key in once_keys:
        assert 0 < await redis_client.pttl(key) <= 60_000
