"""Where a report's facts come from: the audit trail, read from its first record, and
the branches' regions as stored with the branches (the regions recorded by
BRANCH_CREATE audit records take precedence, see figures.build_report)."""

from __future__ import annotations

import redis.asyncio as aioredis

from server.reports.history import History, HistoryCollector
from server.store.audit import AuditLog
from server.store.keys import Keys


async def load_history(log: AuditLog) -> History:
    collector = HistoryCollector()
    async for record in log.read():
        collector.add(record.entry)
    return collector.history


async def branch_regions(client: aioredis.Redis, keys: Keys) -> dict[str, str]:
    branches = sorted(
        b.decode() if isinstance(b, bytes) else str(b) for b in await client.smembers(keys.branches)
    )
    if not branches:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for branch in branches:
            pipe.hget(keys.branch(branch), "region")
        regions = await pipe.execute()
    return {
        branch: region.decode() if isinstance(region, bytes) else str(region or "default")
        for branch, region in zip(branches, regions, strict=True)
    }
