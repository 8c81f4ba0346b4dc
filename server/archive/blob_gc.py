"""Removes images from the hot blob store that no live request references and nobody
has touched for the grace period: uploads never submitted, and images of requests
whose hot keys are gone (the archive keeps its own copy).

Why a submit racing the collector is safe:
- references are read first (every hot request's images and supplements); a request
  stored later resolved its images just before (Center._resolve reads the blob's
  Redis hash), which resets that hash's idle time;
- blob_gc.lua then forgets the hash only if it has been idle for the grace period, in
  one atomic step: a submission either touched it within the grace period (kept) or
  resolves it after it is gone and is asked to upload it again;
- the bytes are deleted after the hash, and if an upload of the same bytes recorded
  the hash meanwhile (it may have found the file and skipped writing it), they are
  put back from the copy read before deleting.
The grace period must therefore exceed any submission's time from resolving to being
stored, by far: the default is a day."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import msgpack
import redis.asyncio as aioredis

from server.archive.index import ArchiveIndex
from server.blobs import BlobStore
from server.domain.records import Image, Submission
from server.store.keys import Keys
from server.store.queue_reads import as_text
from server.store.scripts import load_script

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CollectReport:
    deleted: list[str] = field(default_factory=list)
    referenced: int = 0
    fresh: int = 0
    restored: int = 0


class BlobCollector:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        blobs: BlobStore,
        index: ArchiveIndex,
        grace_s: float,
    ) -> None:
        self.client = client
        self.keys = keys
        self.blobs = blobs
        self.index = index
        self.grace_s = grace_s
        self._forget = load_script(client, "blob_gc")

    async def referenced(self) -> set[str]:
        """The images of every hot request, supplements included."""
        found: set[str] = set()
        async for _rid, (data, supplements) in self.index.scan_requests(["d", "sx"]):
            if data is not None:
                found.update(image.sha256 for image in Submission.unpack(data).images)
            if supplements:
                found.update(Image.unpack(raw).sha256 for raw in msgpack.unpackb(supplements))
        return found

    async def collect(self) -> CollectReport:
        report = CollectReport()
        referenced = await self.referenced()
        cutoff = time.time() - self.grace_s
        for sha256, written in await self.blobs.stored():
            if sha256 in referenced:
                report.referenced += 1
                continue
            if written > cutoff:
                report.fresh += 1
                continue
            result = await self._forget(keys=[self.keys.blob(sha256)], args=[self.grace_s])
            if as_text(result[0]) == "FRESH":
                report.fresh += 1
                continue
            try:
                data = await self.blobs.get(sha256)
            except FileNotFoundError:
                continue
            await self.blobs.delete(sha256)
            if await self.client.exists(self.keys.blob(sha256)):
                await self.blobs.put(sha256, data)
                report.restored += 1
                log.info("blob %s was uploaded again while collected: kept", sha256)
                continue
            report.deleted.append(sha256)
        if report.deleted:
            log.info("blob GC removed %d unreferenced images", len(report.deleted))
        return report
