"""The background component that archives ended requests, removes the hot keys of
archived ones after the keep-hot window, and runs the blob GC.

Every server process runs one. Each learns of ended requests from the event stream
(a final state) and records them in the ended-not-archived index before working on
them; at start and on every GC round it also scans the hot requests for ended ones
that are not archived, for whatever happened while no process was following the
stream. Archiving one request is claimed in Redis first (archive_claim.lua), written
and fsynced (writer.py), then marked done (archive_done.lua): a process that dies in
between leaves the claim to lapse and another (or itself, restarted) writes the same
bytes again, which the writer and the manifest recognise."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass

from server.archive.blob_gc import BlobCollector
from server.archive.index import ArchiveIndex, ClaimStatus
from server.archive.writer import ArchiveWriter
from server.background import BackgroundLoop
from server.blobs import BlobStore
from server.domain.records import HistoryEntry
from server.errors import NotFound
from server.store.queue_store import QueueStore

log = logging.getLogger(__name__)

# Writing one request takes milliseconds; a claim older than this belongs to a process
# that died or hung, and another may take the job over.
CLAIM_MS = 60_000


@dataclass(frozen=True, slots=True)
class ArchiverConfig:
    keep_hot_s: float
    sweep_s: float
    gc_interval_s: float


class Archiver:
    def __init__(
        self,
        store: QueueStore,
        blobs: BlobStore,
        index: ArchiveIndex,
        writer: ArchiveWriter,
        collector: BlobCollector,
        config: ArchiverConfig,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.index = index
        self.writer = writer
        self.collector = collector
        self.config = config
        self.claimant = uuid.uuid4().hex
        self.loop = BackgroundLoop("archiver")
        self._seen_ended: set[str] = set()
        self.archived_total = 0

    def on_event(self, entry: HistoryEntry) -> None:
        if entry.state.is_final:
            self._seen_ended.add(entry.request_id)
            self.loop.wake.set()

    def start(self) -> None:
        self.loop.start(self._run)

    async def stop(self) -> None:
        await self.loop.stop()

    async def _run(self) -> None:
        next_gc = time.monotonic()
        while not self.loop.stopping:
            self.loop.wake.clear()
            try:
                if time.monotonic() >= next_gc:
                    await self.sweep()
                    await self.collector.collect()
                    next_gc = time.monotonic() + self.config.gc_interval_s
                await self.archive_pending()
                await self.remove_hot()
            except Exception:
                log.exception("archiving round failed")
            if self.loop.stopping:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.sweep_s):
                    await self.loop.wake.wait()

    async def sweep(self) -> int:
        """Adds the hot ended requests not archived yet to the index (start, GC rounds)."""
        missed = await self.index.unarchived_final()
        await self.index.note_ended(missed, int(time.time() * 1000))
        return len(missed)

    async def archive_pending(self) -> int:
        seen, self._seen_ended = self._seen_ended, set()
        await self.index.note_ended(sorted(seen), int(time.time() * 1000))
        archived = 0
        for request_id in await self.index.ended():
            if self.loop.stopping:
                break
            try:
                archived += await self.archive(request_id)
            except Exception:
                # One bad request (its files conflict, its bytes are damaged) must not
                # hold up the others: it stays in the index and is retried.
                log.exception("archiving %s failed", request_id)
        return archived

    async def archive(self, request_id: str) -> bool:
        """Archives one ended request unless already done or being done elsewhere."""
        status = await self.index.claim(request_id, self.claimant, CLAIM_MS)
        if status in (ClaimStatus.DONE, ClaimStatus.GONE):
            await self.index.forget_ended(request_id)
            return False
        if status is ClaimStatus.BUSY:
            return False
        try:
            record = await self.store.get(request_id)
        except NotFound:
            await self.index.forget_ended(request_id)
            return False
        if not record.state.is_final:
            await self.index.forget_ended(request_id)
            return False
        images = {}
        for image in record.images:
            try:
                images[image.sha256] = await self.blobs.get(image.sha256)
            except FileNotFoundError:
                # Left in the index and retried each round: an operator must see this.
                log.error("cannot archive %s: image %s is missing", request_id, image.sha256)
                return False
        written = await asyncio.to_thread(self.writer.write, record, images)
        await self.index.done(
            request_id,
            written.day.isoformat(),
            record.state,
            record.submission.branch_id,
            written.head,
        )
        self.archived_total += 1
        log.info("request %s archived under %s", request_id, written.day.isoformat())
        return True

    async def remove_hot(self) -> int:
        keep_ms = int(self.config.keep_hot_s * 1000)
        removed = 0
        for request_id in await self.index.due_for_removal(keep_ms):
            removed += await self.index.remove_hot(request_id, keep_ms)
        return removed
