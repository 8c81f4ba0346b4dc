"""Where a report's facts come from: the audit trail, and the branches' regions as
stored with the branches (the regions recorded by BRANCH_CREATE audit records take
precedence, see figures.build_report).

A report reads the trail from where its period starts (AuditLog.first_seq_since), not
from its first record, and further back only as far as its period needs: a request
decided in the period may have been submitted long before, and its SUBMIT tells its
branch and teller; one claimed in the period waited in the queue from its SUBMIT (or a
later on-site confirmation or SUPPLY), which may be older still. The figures are those
of a read from the first record."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import redis.asyncio as aioredis

from server.reports.history import History, HistoryCollector
from server.reports.period import Period
from server.store.audit import AuditLog
from server.store.keys import Keys

_DAY_MS = 86_400_000


async def load_history(
    log: AuditLog, period: Period | None = None, *, known_branches: Collection[str] = ()
) -> History:
    """The facts a report over ``period`` counts (None: the whole trail's). Reads from
    the period's start, then, while a request with a fact in the period has no
    SUBMIT in what was read or its branch no known region, from a day earlier, two
    days, four... up to the first record. ``known_branches``: the branches whose
    region is known without the trail."""
    if period is None:
        return await _collect(log, 1)
    first = await log.first_seq_since(period.start_ms)
    look_back_ms = _DAY_MS
    while True:
        history = await _collect(log, first)
        if first <= 1 or not unresolved(history, period, known_branches):
            return history
        # Back to the first look-back that starts earlier: one that starts at the
        # same seq would read the same records again.
        earlier = first
        while earlier == first:
            earlier = await log.first_seq_since(period.start_ms - look_back_ms)
            look_back_ms *= 2
        first = earlier


async def _collect(log: AuditLog, first: int) -> History:
    collector = HistoryCollector()
    collector.history.from_seq = first
    async for record in log.read(first):
        collector.add(record.entry)
    return collector.history


def unresolved(history: History, period: Period, known_branches: Collection[str]) -> set[str]:
    """The requests with a fact in ``period`` whose SUBMIT the history lacks, or whose
    branch has no region in it or in ``known_branches``."""
    facts: Iterable[tuple[str, int]] = (
        *((r.request_id, r.at_ms) for r in history.reviews),
        *((d.request_id, d.at_ms) for d in history.decisions),
        *((h.request_id, h.ended_ms) for h in history.handlings),
        *((w.request_id, w.claimed_ms) for w in history.waits),
        # A claim whose wait began before the read: its SUBMIT is further back.
        *((c.request_id, c.at_ms) for c in history.unplaced_claims),
        *((lapse.request_id, lapse.at_ms) for lapse in history.lapses),
        *((i.request_id, i.submitted_ms) for i in history.requests.values()),
    )
    missing: set[str] = set()
    for request_id, at_ms in facts:
        if at_ms not in period:
            continue
        info = history.requests.get(request_id)
        if info is None or (
            info.branch != "?"
            and info.branch not in history.branch_regions
            and info.branch not in known_branches
        ):
            missing.add(request_id)
    return missing


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
