"""The live queue a supervisor watches (SupervisorService.WatchQueue).

Snapshots are pushed, not polled: every queue event the EventHub fans out marks the
picture stale and wakes one loop, which builds a snapshot (a few pipelined reads) and
hands the same message to every watcher. Bursts are coalesced: after a snapshot the
loop waits MIN_INTERVAL_S before the next, so a thousand submits in a second cost a
handful of snapshots. When the queue is quiet a heartbeat every HEARTBEAT_S keeps wait
times moving on screen. With nobody watching, no snapshot is built at all.

Decisions per minute and queue-wait percentiles come from the events themselves,
kept in a bounded window in memory (RecentActivity): what this server process saw
since it started. "Waiting" authorizers are the ones this process's dispatcher holds
waiters for; with several server processes each reports its own."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from authq.v1 import common_pb2 as cpb
from authq.v1 import supervisor_pb2 as spb

from server.background import BackgroundLoop
from server.dispatch import WorkDispatcher
from server.domain.records import HistoryEntry, Submission
from server.domain.states import State
from server.store.emergencies import EmergencyStore
from server.store.moves import MoveStore, PendingMove
from server.store.queue_reads import Overview, as_text
from server.store.queue_store import QueueStore

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.25
HEARTBEAT_S = 5.0
WAITING_LIST_LIMIT = 50
WAIT_WINDOW_S = 300
MINUTES_KEPT = 30
# Requests whose queue entry time is remembered for the wait figures; past this the
# oldest are forgotten (their claim then simply adds no sample).
ENTRIES_KEPT = 200_000


def percentile(sorted_values: list[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0
    # The epsilon keeps 0.99 * 100 (99.00000000000001 in floating point) at rank 99.
    rank = math.ceil(fraction * len(sorted_values) - 1e-9)
    return sorted_values[max(0, min(len(sorted_values), rank) - 1)]


@dataclass(frozen=True, slots=True)
class Minute:
    start_ms: int
    decisions: int
    claims: int
    wait_p50_ms: int
    wait_max_ms: int


class RecentActivity:
    """Decisions and queue waits of the recent past, fed event by event."""

    def __init__(self) -> None:
        self._entered: OrderedDict[str, int] = OrderedDict()
        self._decisions: deque[int] = deque()
        self._claims: deque[tuple[int, int]] = deque()  # (at_ms, wait_ms)

    def add(self, entry: HistoryEntry) -> None:
        if entry.state is State.QUEUED:
            # Back in the queue (submitted, supplied, handed back, lapsed): its wait
            # restarts, except a reprioritized item, which never left it.
            if entry.event != "REPRIORITIZED" or entry.request_id not in self._entered:
                self._entered[entry.request_id] = entry.at_ms
                self._entered.move_to_end(entry.request_id)
                while len(self._entered) > ENTRIES_KEPT:
                    self._entered.popitem(last=False)
            return
        entered = self._entered.pop(entry.request_id, None)
        if entry.event == "CLAIMED" and entered is not None:
            self._claims.append((entry.at_ms, max(0, entry.at_ms - entered)))
        if entry.is_decision:
            self._decisions.append(entry.at_ms)
        self._trim(entry.at_ms)

    def _trim(self, now_ms: int) -> None:
        horizon = now_ms - max(WAIT_WINDOW_S, MINUTES_KEPT * 60) * 1000
        while self._decisions and self._decisions[0] < horizon:
            self._decisions.popleft()
        while self._claims and self._claims[0][0] < horizon:
            self._claims.popleft()

    def decisions_since(self, since_ms: int) -> int:
        return len(self._decisions) - bisect.bisect_left(self._decisions, since_ms)

    def waits_since(self, since_ms: int) -> list[int]:
        return sorted(wait for at, wait in self._claims if at >= since_ms)

    def minutes(self, now_ms: int, count: int = MINUTES_KEPT) -> list[Minute]:
        """The last ``count`` whole minutes and the current one, oldest first."""
        current = now_ms - now_ms % 60_000
        starts = [current - 60_000 * i for i in range(count - 1, -1, -1)]
        decisions = dict.fromkeys(starts, 0)
        waits: dict[int, list[int]] = {start: [] for start in starts}
        for at in self._decisions:
            start = at - at % 60_000
            if start in decisions:
                decisions[start] += 1
        for at, wait in self._claims:
            start = at - at % 60_000
            if start in waits:
                waits[start].append(wait)
        result = []
        for start in starts:
            sample = sorted(waits[start])
            result.append(
                Minute(start, decisions[start], len(sample), percentile(sample, 0.5),
                       sample[-1] if sample else 0)
            )  # fmt: skip
        return result


def overview_to_pb(overview: Overview) -> spb.QueueOverview:
    reply = spb.QueueOverview(
        waiting=overview.waiting,
        claimed=overview.counts.get("CLAIMED", 0),
        needs_supplement=overview.counts.get("NEEDS_SUPPLEMENT", 0),
        at_ms=overview.at_ms,
    )
    oldest: tuple[int, str] | None = None
    for lane in overview.lanes:
        wait = overview.at_ms - lane.oldest_submitted_ms if lane.oldest_submitted_ms else 0
        reply.by_class.append(
            spb.ClassDepth(
                importance=lane.priority.importance,
                urgency=cpb.URGENCY_URGENT if lane.priority.urgency == 2 else cpb.URGENCY_NORMAL,
                waiting=lane.waiting,
                oldest_wait_ms=max(0, wait),
            )
        )
        if lane.oldest_request_id and (oldest is None or wait > oldest[0]):
            oldest = (wait, lane.oldest_request_id)
    if oldest is not None:
        reply.oldest_wait_ms, reply.oldest_request_id = max(0, oldest[0]), oldest[1]
    for branch, waiting in sorted(overview.waiting_by_branch.items()):
        reply.by_branch.append(spb.BranchCount(branch_id=branch, waiting=waiting))
    return reply


def move_to_pb(move: PendingMove) -> spb.MoveReply:
    return spb.MoveReply(
        request_id=move.request_id,
        requester=move.requester,
        reason=move.reason,
        state=spb.MOVE_STATE_PENDING,
        requested_at_ms=move.created_ms,
        expires_at_ms=move.expires_ms,
    )


class QueueWatch:
    def __init__(
        self,
        store: QueueStore,
        dispatcher: WorkDispatcher,
        moves: MoveStore,
        emergencies: EmergencyStore,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.moves = moves
        self.emergencies = emergencies
        self.activity = RecentActivity()
        self.loop = BackgroundLoop("queue-watch")
        self._watchers: set[asyncio.Queue[spb.QueueSnapshot]] = set()
        self._seq = 0
        self.latest: spb.QueueSnapshot | None = None

    def on_event(self, entry: HistoryEntry) -> None:
        self.activity.add(entry)
        self.poke()

    def poke(self) -> None:
        """Something a supervisor sees has changed (also moves and emergencies,
        which are not queue events)."""
        if self._watchers:
            self.loop.wake.set()

    def start(self) -> None:
        self.loop.start(self._run)

    async def stop(self) -> None:
        await self.loop.stop()

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[spb.QueueSnapshot]]:
        """A queue that always holds at most the newest snapshot: a slow watcher
        skips stale pictures instead of piling them up."""
        queue: asyncio.Queue[spb.QueueSnapshot] = asyncio.Queue(maxsize=1)
        self._watchers.add(queue)
        self.loop.wake.set()
        try:
            yield queue
        finally:
            self._watchers.discard(queue)

    async def _run(self) -> None:
        while not self.loop.stopping:
            await self.loop.nap(HEARTBEAT_S)
            self.loop.wake.clear()
            if self.loop.stopping:
                return
            if not self._watchers:
                continue
            try:
                snapshot = await self.snapshot()
            except Exception:
                log.exception("queue snapshot failed")  # Redis away: next event or beat
            else:
                self._publish(snapshot)
            await asyncio.sleep(MIN_INTERVAL_S)

    def _publish(self, snapshot: spb.QueueSnapshot) -> None:
        self.latest = snapshot
        for queue in self._watchers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(snapshot)

    async def snapshot(self) -> spb.QueueSnapshot:
        overview = await self.store.overview()
        now_ms = overview.at_ms
        self._seq += 1
        snapshot = spb.QueueSnapshot(overview=overview_to_pb(overview), seq=self._seq)
        snapshot.waiting_list.extend(await self._waiting_list(now_ms))
        authorizers = await self._authorizers()
        snapshot.authorizers.extend(authorizers)
        snapshot.active_authorizers = sum(
            1 for a in authorizers if not a.away and (a.waiting or a.holding)
        )
        snapshot.away_authorizers = sum(1 for a in authorizers if a.away)
        snapshot.decisions_last_minute = self.activity.decisions_since(now_ms - 60_000)
        waits = self.activity.waits_since(now_ms - WAIT_WINDOW_S * 1000)
        snapshot.wait_p50_ms = percentile(waits, 0.5)
        snapshot.wait_p90_ms = percentile(waits, 0.9)
        snapshot.wait_p99_ms = percentile(waits, 0.99)
        snapshot.wait_window_s = WAIT_WINDOW_S
        snapshot.wait_samples = len(waits)
        for minute in self.activity.minutes(now_ms):
            snapshot.minutes.append(
                spb.MinuteStats(
                    minute_start_ms=minute.start_ms,
                    decisions=minute.decisions,
                    claims=minute.claims,
                    wait_p50_ms=minute.wait_p50_ms,
                    wait_max_ms=minute.wait_max_ms,
                )
            )
        snapshot.pending_moves.extend(move_to_pb(m) for m in await self.moves.pending())
        for emergency in await self.emergencies.active():
            snapshot.emergencies.append(
                spb.Emergency(
                    emergency_id=emergency.emergency_id,
                    reason=emergency.reason,
                    branch_ids=list(emergency.branch_ids),
                    declared_by=emergency.declared_by,
                    declared_at_ms=emergency.declared_at_ms,
                )
            )
        return snapshot

    async def _waiting_list(self, now_ms: int) -> list[spb.WaitingItem]:
        """The head of the queue across lanes, in offer order (smallest place first,
        as the claim script compares lane heads)."""
        client = self.store.client
        lanes = await self.store.lanes()
        async with client.pipeline(transaction=False) as pipe:
            for lane in lanes:
                pipe.zrange(lane, 0, WAITING_LIST_LIMIT - 1, withscores=True)
            per_lane = await pipe.execute()
        heads = sorted(
            ((float(score), as_text(rid)) for lane in per_lane for rid, score in lane),
        )[:WAITING_LIST_LIMIT]
        if not heads:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for _, rid in heads:
                pipe.hmget(self.store.keys.request(rid), ["d", "enq", "sub"])
            fields = await pipe.execute()
        items = []
        for position, ((_, rid), (packed, queued, submitted)) in enumerate(
            zip(heads, fields, strict=True)
        ):
            if packed is None:
                continue  # decided between the two reads
            submission = Submission.unpack(packed)
            item = spb.WaitingItem(
                request_id=rid,
                position=position,
                branch_id=submission.branch_id,
                business_type=submission.business_type,
                importance=submission.importance,
                urgency=cpb.URGENCY_URGENT if submission.urgency == 2 else cpb.URGENCY_NORMAL,
                # From joining the queue, as the overview's oldest wait counts.
                wait_ms=max(0, now_ms - int(queued or submitted or now_ms)),
            )
            if submission.currency:
                item.amount.CopyFrom(
                    cpb.Money(minor_units=submission.amount_minor, currency=submission.currency)
                )
            items.append(item)
        return items

    async def _authorizers(self) -> list[spb.AuthorizerActivity]:
        waiting = waiting_authorizers(self.dispatcher)
        holders = await self._holders()
        away = set(await self.store.away())
        names = sorted(set(waiting) | set(holders) | away)
        return [
            spb.AuthorizerActivity(
                authorizer_id=name,
                waiting=name in waiting,
                holding=holders.get(name, 0),
                away=name in away,
            )
            for name in names
        ]

    async def _holders(self) -> dict[str, int]:
        """Who holds how many leased items (the lease set names the items; each
        request's record names its holder)."""
        client = self.store.client
        ids = [as_text(rid) for rid in await client.zrange(self.store.keys.leases, 0, -1)]
        if not ids:
            return {}
        async with client.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hget(self.store.keys.request(rid), "h")
            holders = await pipe.execute()
        counts: dict[str, int] = {}
        for holder in holders:
            if holder:
                name = as_text(holder)
                counts[name] = counts.get(name, 0) + 1
        return counts


def waiting_authorizers(dispatcher: WorkDispatcher) -> set[str]:
    """Authorizers with an open request for work on this process (a unary Next or a
    session credit). The dispatcher's line is read, never changed."""
    return {w.authorizer_id for w in list(dispatcher._waiters) if not w.cancelled}
