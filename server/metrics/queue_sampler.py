"""Refreshes the queue gauges from Redis at a fixed interval: depth and head wait per
priority lane (store/queue_reads.py overview), requests per state, the emergencies in
force (store/emergencies.py), the archive backlog, and a timed PING for the Redis
round-trip histogram.

A periodic sampler rather than a custom Collector: a scrape runs in the exporter's
HTTP thread, which cannot await the asyncio Redis client, and a scrape storm must not
turn into a Redis load storm either. Gauges are therefore up to one interval old;
``authq_metrics_last_sample_timestamp_seconds`` says how old."""

from __future__ import annotations

import logging
import time

from server.archive.index import ArchiveIndex
from server.background import BackgroundLoop
from server.metrics.registry import ServerMetrics
from server.store.emergencies import EmergencyStore
from server.store.queue_store import QueueStore

log = logging.getLogger(__name__)


class QueueSampler:
    def __init__(
        self,
        metrics: ServerMetrics,
        store: QueueStore,
        emergencies: EmergencyStore,
        archive: ArchiveIndex,
        interval_s: float,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.emergencies = emergencies
        self.archive = archive
        self.interval_s = interval_s
        self.loop = BackgroundLoop("metrics-sampler")
        self._failing = False

    def start(self) -> None:
        self.loop.start(self._run)

    async def stop(self) -> None:
        await self.loop.stop()

    async def _run(self) -> None:
        while not self.loop.stopping:
            try:
                await self.sample()
                self._failing = False
            except Exception as exc:
                self.metrics.sample_errors.inc()
                # Once per outage, not once per interval.
                if not self._failing:
                    log.warning("metrics: sampling the queue failed: %s", exc)
                self._failing = True
            await self.loop.nap(self.interval_s)

    async def sample(self) -> None:
        m = self.metrics
        started = time.perf_counter()
        await self.store.client.ping()
        m.redis_seconds.observe(time.perf_counter() - started)
        overview = await self.store.overview()
        oldest_s = 0.0
        for lane in overview.lanes:
            labels = (str(lane.priority.importance), str(lane.priority.urgency))
            m.queue_waiting.labels(*labels).set(lane.waiting)
            wait_s = 0.0
            if lane.oldest_submitted_ms is not None:
                wait_s = max(0.0, (overview.at_ms - lane.oldest_submitted_ms) / 1000)
            m.queue_head_wait.labels(*labels).set(wait_s)
            oldest_s = max(oldest_s, wait_s)
        m.queue_oldest_wait.set(oldest_s)
        for state, count in overview.counts.items():
            m.requests_by_state.labels(state).set(count)
        active = await self.emergencies.active()
        m.emergencies_active.set(len(active))
        m.emergency_center_wide.set(1 if any(not e.branch_ids for e in active) else 0)
        m.emergency_branches.set(len({b for e in active for b in e.branch_ids}))
        m.archive_backlog.set(await self.archive.backlog())
        m.last_sample.set(overview.at_ms / 1000)
