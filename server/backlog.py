"""The automatic backlog emergency (R8): when the queue is too far behind, the center
declares an emergency by itself, so branches authorize on site instead of waiting; it
ends the emergency once the backlog has cleared.

Two measures, each with a declare threshold and a lower clear threshold (hysteresis):
the oldest waiting item's wait, and the estimated wait of a new item (items waiting
divided by the decision rate of the last few minutes). Either passing its declare
threshold declares; both must stay under their clear thresholds for ``clear_hold_s``
before the emergency ends, so a queue hovering at a threshold does not flap.

Several server processes may run: one at a time holds a short lease on the
monitor (renewed at every check), and the emergency it declared is remembered in
Redis, so exactly one automatic emergency exists however many processes watch (one
in force that none is remembered for, its declare's reply lost, is taken on). A
supervisor may end it early (EndEmergency): the monitor then does not declare again
until the backlog has once cleared. Nor does it while a supervisor's center-wide
emergency is in force."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass

from server.background import BackgroundLoop
from server.center import Center, Identity
from server.domain.records import HistoryEntry
from server.store.emergencies import Emergency, EmergencyStore
from server.store.keys import Keys
from server.store.queue_reads import as_text
from server.store.queue_store import QueueStore

log = logging.getLogger(__name__)

SYSTEM = Identity(user_id="system", origin="backlog-monitor")
# How far back the decision rate looks.
RATE_WINDOW_S = 300.0


@dataclass(frozen=True, slots=True)
class BacklogThresholds:
    """Seconds; a declare threshold of 0 turns that measure off."""

    declare_oldest_s: float = 1800.0
    clear_oldest_s: float = 600.0
    declare_estimated_s: float = 2400.0
    clear_estimated_s: float = 900.0
    clear_hold_s: float = 120.0
    check_every_s: float = 5.0

    @property
    def enabled(self) -> bool:
        return self.declare_oldest_s > 0 or self.declare_estimated_s > 0


@dataclass(frozen=True, slots=True)
class Reading:
    waiting: int
    oldest_s: float
    # None while no decision was seen in the window: the rate is unknown, not zero.
    estimated_s: float | None

    def describe(self) -> str:
        estimated = "unknown" if self.estimated_s is None else f"{self.estimated_s / 60:.0f} min"
        return (
            f"{self.waiting} waiting, oldest {self.oldest_s / 60:.0f} min, "
            f"estimated wait {estimated}"
        )


def over(reading: Reading, limits: BacklogThresholds) -> str | None:
    """Why the backlog calls for an emergency, or None."""
    if limits.declare_oldest_s > 0 and reading.oldest_s >= limits.declare_oldest_s:
        return f"oldest waiting item at {reading.oldest_s / 60:.0f} min " \
               f"(threshold {limits.declare_oldest_s / 60:.0f} min)"  # fmt: skip
    estimated = reading.estimated_s
    if estimated is not None and 0 < limits.declare_estimated_s <= estimated:
        return f"estimated wait {estimated / 60:.0f} min " \
               f"(threshold {limits.declare_estimated_s / 60:.0f} min)"  # fmt: skip
    return None


def cleared(reading: Reading, limits: BacklogThresholds) -> bool:
    if reading.oldest_s >= limits.clear_oldest_s:
        return False
    return reading.estimated_s is None or reading.estimated_s < limits.clear_estimated_s


class BacklogMonitor:
    def __init__(
        self,
        store: QueueStore,
        emergencies: EmergencyStore,
        center: Center,
        keys: Keys,
        limits: BacklogThresholds,
    ) -> None:
        self.store = store
        self.emergencies = emergencies
        self.center = center
        self.keys = keys
        self.limits = limits
        self.loop = BackgroundLoop("backlog-monitor")
        self._decisions: deque[float] = deque()
        self._clear_since: float | None = None
        self._owner = f"{os.getpid()}-{id(self)}"

    @property
    def _leader_key(self) -> str:
        return f"{self.keys.prefix}:backlog-leader"

    @property
    def _state_key(self) -> str:
        """Hash: ``id`` the automatic emergency in force; ``hold`` "1" when a
        supervisor ended it early and the backlog has not cleared since."""
        return f"{self.keys.prefix}:backlog"

    def on_event(self, entry: HistoryEntry) -> None:
        if entry.is_decision:
            self._decisions.append(time.monotonic())

    def decision_rate(self) -> float:
        """Decisions per second over the last RATE_WINDOW_S."""
        horizon = time.monotonic() - RATE_WINDOW_S
        while self._decisions and self._decisions[0] < horizon:
            self._decisions.popleft()
        return len(self._decisions) / RATE_WINDOW_S

    def start(self) -> None:
        if self.limits.enabled:
            self.loop.start(self._run)

    async def stop(self) -> None:
        await self.loop.stop()

    async def _run(self) -> None:
        while not self.loop.stopping:
            try:
                if await self._lead():
                    await self.check()
            except Exception:
                log.exception("backlog check failed")
            self.loop.wake.clear()
            await self.loop.nap(self.limits.check_every_s)

    async def _lead(self) -> bool:
        """Holds (or takes) the monitor lease for three check periods."""
        ttl_ms = int(self.limits.check_every_s * 3000)
        client = self.store.client
        if await client.set(self._leader_key, self._owner, nx=True, px=ttl_ms):
            return True
        holder = await client.get(self._leader_key)
        if holder is not None and as_text(holder) == self._owner:
            await client.pexpire(self._leader_key, ttl_ms)
            return True
        return False

    async def reading(self) -> Reading:
        overview = await self.store.overview()
        oldest_ms = min(
            (lane.oldest_submitted_ms for lane in overview.lanes if lane.oldest_submitted_ms),
            default=None,
        )
        oldest_s = 0.0 if oldest_ms is None else max(0.0, (overview.at_ms - oldest_ms) / 1000)
        rate = self.decision_rate()
        estimated = overview.waiting / rate if rate > 0 else None
        return Reading(overview.waiting, oldest_s, estimated)

    async def check(self) -> None:
        """One look at the queue: declare, keep, or end the automatic emergency."""
        reading = await self.reading()
        state = await self.store.client.hgetall(self._state_key)
        current = as_text(state.get(b"id", b""))
        held_off = state.get(b"hold") == b"1"
        if current:
            emergency = await self.emergencies.get(current)
            if emergency.ended_at_ms:
                # A supervisor ended it: stay off until the backlog has once cleared.
                await self.store.client.hset(self._state_key, mapping={"id": "", "hold": "1"})
                return
            await self._maybe_end(current, reading)
            return
        if held_off:
            if cleared(reading, self.limits):
                await self.store.client.hset(self._state_key, "hold", "0")
            return
        active = await self.emergencies.active()
        if await self._adopt(active):
            return
        if any(not emergency.branch_ids for emergency in active):
            # A supervisor's center-wide emergency is in force: every branch falls back
            # already, and a second record would split one period in two (R8).
            return
        why = over(reading, self.limits)
        if why is None:
            return
        reason = f"automatic backlog emergency: {why}; {reading.describe()}"
        async with self.center.audited(SYSTEM, "EMERGENCY_DECLARE", "*", reason=reason) as audit:
            emergency = await self.emergencies.declare(reason, [], SYSTEM.user_id, audit)
        await self.store.client.hset(self._state_key, mapping={"id": emergency.emergency_id})
        self._clear_since = None
        log.warning("declared emergency %s: %s", emergency.emergency_id, reason)

    async def _adopt(self, active: list[Emergency]) -> bool:
        """Takes on an automatic emergency in force that none is recorded for: the
        declare ran but its reply was lost (or the process died before recording it).
        Declaring another would leave that one in force for good, as only the recorded
        one is ever ended."""
        orphan = next((e for e in active if e.declared_by == SYSTEM.user_id), None)
        if orphan is None:
            return False
        await self.store.client.hset(self._state_key, mapping={"id": orphan.emergency_id})
        self._clear_since = None
        log.warning("took on emergency %s, declared without a reply", orphan.emergency_id)
        return True

    async def _maybe_end(self, emergency_id: str, reading: Reading) -> None:
        if not cleared(reading, self.limits):
            self._clear_since = None
            return
        now = time.monotonic()
        if self._clear_since is None:
            self._clear_since = now
        if now - self._clear_since < self.limits.clear_hold_s:
            return
        note = (
            f"automatic: the backlog has cleared ({reading.describe()}) for "
            f"{self.limits.clear_hold_s:.0f} s"
        )
        async with self.center.audited(SYSTEM, "EMERGENCY_END", emergency_id, note=note) as audit:
            await self.emergencies.end(emergency_id, SYSTEM.user_id, note, audit)
        await self.store.client.hset(self._state_key, "id", "")
        self._clear_since = None
        log.warning("ended emergency %s: %s", emergency_id, note)
