"""The background component that archives ended requests, removes the hot keys of
archived ones after the keep-hot window, runs the blob GC, and moves the audit trail's
records older than the keep-hot window out of Redis into segment files
(audit_mover.py).

Every server process runs one. Each learns of ended requests from the event stream
(a final state) and records them in the ended-not-archived index before working on
them; at start and on every GC round it also scans the hot requests for ended ones
that are not archived, for whatever happened while no process was following the
stream. Archiving one request is claimed in Redis first (archive_claim.lua), written
and fsynced (writer.py), then marked done (archive_done.lua): a process that dies in
between leaves the claim to lapse and another (or itself, restarted) writes the same
bytes again, which the writer and the manifest recognise. While the center is busy
the rounds wait, for a bounded time (deferral.py)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from server.archive.audit_mover import AuditMover
from server.archive.blob_gc import BlobCollector
from server.archive.deferral import Deferral
from server.archive.index import ArchiveIndex, ClaimStatus, DoneMark
from server.archive.writer import ArchiveWriter
from server.background import BackgroundLoop
from server.blobs import BlobStore
from server.domain.records import HistoryEntry, RequestRecord
from server.store.queue_store import QueueStore

log = logging.getLogger(__name__)

# Writing one request takes milliseconds; a claim older than this belongs to a process
# that died or hung, and another may take the job over.
CLAIM_MS = 60_000
# Requests written together: one manifest append and one directory fsync for all,
# and one pipeline per step. Small enough that a batch's work in this event loop (its
# replies parsed, its records built) is a short slice between requests, not a stall.
BATCH = 32
# Ended requests taken from the index per round.
ROUND_LIMIT = 1024
# After a round that archived something the next waits this long, so that under load
# a round finds a batch rather than a request or two: per request, a round of its own
# cost more than the request's whole trip through the queue (bench: half-load p99
# submit ack 50 ms against 15 ms without archiving). Nothing waits on the archive.
PACE_S = 0.5
# While rounds are held, the event rate is looked at again this often, and the ended
# requests seen meanwhile are written to the index.
HOLD_CHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class ArchiverConfig:
    keep_hot_s: float
    sweep_s: float
    gc_interval_s: float
    pace_s: float = PACE_S
    # Rounds are held while the event stream runs this fast, for at most
    # defer_max_s (deferral.py). 0: never held.
    defer_events_per_s: float = 0.0
    defer_max_s: float = 0.0


class Archiver:
    def __init__(
        self,
        store: QueueStore,
        blobs: BlobStore,
        index: ArchiveIndex,
        writer: ArchiveWriter,
        collector: BlobCollector,
        config: ArchiverConfig,
        audit_mover: AuditMover | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.index = index
        self.writer = writer
        self.collector = collector
        self.config = config
        self.audit_mover = audit_mover
        self.claimant = uuid.uuid4().hex
        self.loop = BackgroundLoop("archiver")
        self.deferral = Deferral(config.defer_events_per_s, config.defer_max_s)
        self._seen_ended: set[str] = set()
        self.archived_total = 0

    def on_event(self, entry: HistoryEntry) -> None:
        self.deferral.saw_event()
        if entry.state.is_final:
            self._seen_ended.add(entry.request_id)
            self.loop.wake.set()

    def start(self) -> None:
        self.loop.start(self._run)

    async def stop(self) -> None:
        await self.loop.stop()

    async def _run(self) -> None:
        next_gc = time.monotonic()
        held = False
        while not self.loop.stopping:
            self.loop.wake.clear()
            if self.deferral.holds():
                if not held:
                    log.info(
                        "the center is busy (%.0f events/s): archiving waits, for at most %.0f s",
                        self.deferral.rate,
                        self.config.defer_max_s,
                    )
                held = True
                if self._seen_ended:
                    # Into the index, not kept in memory through a long hold: the
                    # backlog it shows (metrics, bench) stays whole.
                    try:
                        await self._note_seen()
                    except Exception:
                        log.exception("noting ended requests failed")
                await asyncio.sleep(HOLD_CHECK_S)
                continue
            if held:
                log.info("archiving resumes (%.0f events/s)", self.deferral.rate)
                held = False
            try:
                if time.monotonic() >= next_gc:
                    await self.sweep()
                    await self.collector.collect()
                    next_gc = time.monotonic() + self.config.gc_interval_s
                archived = await self.archive_pending()
                await self.remove_hot()
                await self.move_audit()
            except Exception:
                archived = 0
                log.exception("archiving round failed")
            if self.loop.stopping:
                return
            if archived:
                await asyncio.sleep(self.config.pace_s)
            await self.loop.nap(self.config.sweep_s)

    async def sweep(self) -> int:
        """Adds the hot ended requests not archived yet to the index (start, GC rounds)."""
        missed = await self.index.unarchived_final()
        await self.index.note_ended(missed, int(time.time() * 1000))
        return len(missed)

    async def _note_seen(self) -> None:
        seen, self._seen_ended = self._seen_ended, set()
        try:
            await self.index.note_ended(sorted(seen), int(time.time() * 1000))
        except BaseException:
            self._seen_ended |= seen
            raise

    async def archive_pending(self) -> int:
        """Archives what the index holds, batch by batch, until it is empty, the loop
        stops, or the center turns busy (a peak that starts during a long catch-up)."""
        await self._note_seen()
        archived = 0
        while not self._interrupted():
            ended = await self.index.ended(limit=ROUND_LIMIT)
            this_round = 0
            for start in range(0, len(ended), BATCH):
                if self._interrupted():
                    break
                this_round += await self.archive_batch(ended[start : start + BATCH])
            archived += this_round
            # A full round may have left more behind; one that archived nothing only
            # found requests that cannot be archived now (logged).
            if len(ended) < ROUND_LIMIT or not this_round:
                break
        return archived

    def _interrupted(self) -> bool:
        return self.loop.stopping or self.deferral.holds()

    async def archive(self, request_id: str) -> bool:
        """Archives one ended request unless already done or being done elsewhere."""
        return await self.archive_batch([request_id]) == 1

    async def archive_batch(self, request_ids: Sequence[str]) -> int:
        """Archives those of the requests that are ended and not archived or being
        archived elsewhere: claimed, written together (one manifest append and
        directory fsync per day), then marked done, each step one pipeline for the
        whole batch. Returns how many it archived."""
        records = await self._claimed(request_ids)
        if not records:
            return 0
        loop = asyncio.get_running_loop()

        def read_image(sha256: str) -> bytes:
            return asyncio.run_coroutine_threadsafe(self.blobs.get(sha256), loop).result()

        results = await asyncio.to_thread(self.writer.write_many, records, read_image)
        done = []
        for record, result in zip(records, results, strict=True):
            if isinstance(result, Exception):
                # One bad request (its files conflict, an image is missing or damaged)
                # does not hold up the others. It stays in the index and is retried
                # each round: an operator must see this.
                log.error("cannot archive %s: %s", record.request_id, result)
                continue
            done.append(
                DoneMark(record.request_id, result.day.isoformat(), record.state,
                         record.submission.branch_id, result.head)
            )  # fmt: skip
        await self.index.done_many(done)
        self.archived_total += len(done)
        return len(done)

    async def _claimed(self, request_ids: Sequence[str]) -> list[RequestRecord]:
        """The records of the requests this process now holds the job of archiving;
        those already archived, gone or not ended leave the index."""
        statuses = await self.index.claim_many(request_ids, self.claimant, CLAIM_MS)
        forget = [
            rid
            for rid, status in zip(request_ids, statuses, strict=True)
            if status in (ClaimStatus.DONE, ClaimStatus.GONE)
        ]
        mine = [
            rid
            for rid, status in zip(request_ids, statuses, strict=True)
            if status is ClaimStatus.CLAIMED
        ]
        records = []
        for rid, record in zip(mine, await self.store.get_many(mine), strict=True):
            if record is None or not record.state.is_final:
                forget.append(rid)
            else:
                records.append(record)
        await self.index.forget_ended(forget)
        return records

    async def remove_hot(self) -> int:
        keep_ms = int(self.config.keep_hot_s * 1000)
        removed = 0
        for request_id in await self.index.due_for_removal(keep_ms):
            removed += await self.index.remove_hot(request_id, keep_ms)
        return removed

    async def move_audit(self) -> int:
        """Moves the audit records older than the keep-hot window to segment files,
        while the center stays quiet, and notes the chain's head beside them."""
        if self.audit_mover is None:
            return 0
        older_than_ms = int((time.time() - self.config.keep_hot_s) * 1000)
        moved = await self.audit_mover.move_due(older_than_ms, self._interrupted)
        await self.audit_mover.note_head()
        return moved
