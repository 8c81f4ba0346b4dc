"""Returns items whose lease ran out to the queue, at their original place.

The reaper sleeps until the earliest lease deadline (renewals only move deadlines
later, so waking then is exact) or, with no lease out, until a claim is made. The
expiry itself is a script that re-checks the deadline against Redis's clock, so
several server processes may reap side by side; only the one whose script expired it
stages the LEASE_EXPIRED audit record, in the same step, from ``audit.lapse_audit``."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from server.background import BackgroundLoop
from server.domain.records import HistoryEntry
from server.store.audit_records import StagedAudit
from server.store.queue_store import QueueStore

log = logging.getLogger(__name__)

# Guards against a busy loop if this host's clock runs ahead of Redis's.
_MIN_SLEEP_S = 0.02


class LapseAudit(Protocol):
    """Who audits lapsed leases (Center)."""

    def lapse_audit(self, request_id: str) -> StagedAudit:
        """The LEASE_EXPIRED record of an item, for the requeue script to complete."""
        ...

    def staged(self) -> None:
        """Records were staged: chain them."""
        ...


class LeaseReaper:
    def __init__(self, store: QueueStore) -> None:
        self.store = store
        # None: lapses are not audited (tests, tools).
        self.audit: LapseAudit | None = None
        self.loop = BackgroundLoop("lease-reaper")
        self.expired_total = 0
        # When the sleeping reaper wakes by itself (monotonic s); None: no deadline.
        self._sleeping_until: float | None = None

    def on_event(self, entry: HistoryEntry) -> None:
        # A new lease ends lease_ms from now: it needs the reaper awake sooner only if
        # the reaper sleeps with no deadline or a later one. Otherwise waking it would
        # cost three Redis calls per claim for nothing.
        if entry.event != "CLAIMED":
            return
        due = self._sleeping_until
        if due is None or time.monotonic() + self.store.config.lease_ms / 1000 < due:
            self.loop.wake.set()

    def wake(self) -> None:
        """Events may have been missed (the hub lost the stream): look again."""
        self.loop.wake.set()

    def start(self) -> None:
        self.loop.start(self._run)

    async def stop(self) -> None:
        await self.loop.stop()

    async def _run(self) -> None:
        while not self.loop.stopping:
            # Cleared before reading Redis: a claim made meanwhile wakes the next wait.
            self.loop.wake.clear()
            self._sleeping_until = None
            try:
                timeout = await self._reap_due()
            except Exception:
                log.exception("lease reaping failed")
                timeout = 1.0
            if self.loop.stopping:
                return
            if timeout is not None:
                self._sleeping_until = time.monotonic() + timeout
            await self.loop.nap(timeout)

    async def _reap_due(self) -> float | None:
        """Expires what is due; returns seconds until the next deadline (None: none)."""
        seconds, micros = await self.store.client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        for request_id in await self.store.expired_leases(now_ms):
            audit = self.audit.lapse_audit(request_id) if self.audit is not None else None
            lapsed = await self.store.expire(request_id, audit)
            if lapsed is None:
                continue
            self.expired_total += 1
            log.info("lease of %s held by %s expired: back in the queue", request_id,
                     lapsed.holder)  # fmt: skip
            if self.audit is not None:
                self.audit.staged()
        deadline = await self.store.next_lease_deadline()
        if deadline is None:
            return None
        return max(_MIN_SLEEP_S, (deadline - now_ms) / 1000)
