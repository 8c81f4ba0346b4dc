"""Fills the classes' waiting-since sets (Keys.waiting_since) with the items that were
waiting before those sets existed, once per Redis: the scripts keep them from then on
(enqueue and dequeue in server/lua/_lib.lua). Until it has run, the overview's oldest
wait, the backlog monitor and the oldest-wait metric would not see those items."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from server.store.keys import Keys
from server.store.queue_reads import as_text
from server.store.scripts import load_script

log = logging.getLogger(__name__)

# Request ids per script call: one call holds Redis for about a millisecond.
BATCH = 500


async def index_waiting_since(client: aioredis.Redis, keys: Keys) -> int:
    """Adds every waiting item missing from its class's set; returns how many. Safe with
    work going on and with several server processes starting at once: each batch is
    checked against its lane atomically (server/lua/waiting_since_index.lua)."""
    if await client.exists(keys.waiting_since_built):
        return 0
    script = load_script(client, "waiting_since_index")
    added = 0
    for lane in sorted(as_text(name) for name in await client.smembers(keys.lanes)):
        batch: list[str] = []
        async for member, _score in client.zscan_iter(lane, count=BATCH):
            batch.append(as_text(member))
            if len(batch) == BATCH:
                added += int(await script(keys=[lane], args=[keys.request_prefix, *batch]))
                batch = []
        if batch:
            added += int(await script(keys=[lane], args=[keys.request_prefix, *batch]))
    await client.set(keys.waiting_since_built, "1")
    if added:
        log.info("queue: %d waiting items indexed by when they joined the queue", added)
    return added
