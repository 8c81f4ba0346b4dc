"""Runs the full image check (server/images/renditions.py) in a small process pool,
off the request path, and records each verdict once per image.

An upload is acknowledged after the cheap probe; its check starts right after (the
bytes are still in hand) and usually ends long before an authorizer could be offered
the request. The verdict goes into the blob's Redis hash (field ``ck``: "OK" or the
fault in plain words), after the renditions are stored, so "OK" always means the
renditions exist (server/images/views.py finds them). Images are content-addressed,
so a verdict never changes: it is also kept in a bounded in-process cache, and an
image uploaded twice is checked once. Only while its record lives, though: the blob
GC (server/archive/blob_gc.py, usually in the archive's process, out of this cache's
reach) removes an unused image's bytes, renditions and hash, so each upload hands in
the verdict stored with its record (read in the same round trip that writes it), and
the same bytes uploaded after the GC are checked and rendered again.

``verdict()`` is what the dispatch gate (server/images/gate.py) awaits: a check
already running, a stored verdict, or (after a restart, or for an upload another
process took) a check run now from the stored bytes. A verdict speaks of the image
only: when the stored bytes cannot be read for now, verdict() raises (OSError)
instead; bytes the store has lost while it is there are the fault LOST."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Final

import redis.asyncio as aioredis

from server.blobs import BlobStore
from server.images.probe import ImageLimits
from server.images.renditions import CheckResult, check_and_render
from server.store.keys import Keys
from server.store.queue_reads import as_text

log = logging.getLogger(__name__)

OK: Final = "OK"
# The fault of an image the blob store has lost (the teller is asked for it again).
LOST: Final = "the center lost this image from its store (not a fault of the capture)"
_CACHE_ENTRIES: Final = 50_000
FACTS_TTL_S: Final = 5.0
CHECK_NICENESS: Final = 10


@dataclass(frozen=True, slots=True)
class BlobFacts:
    """What Redis knows of an uploaded image; ``check`` is None until checked."""

    size_bytes: int
    content_type: str
    check: str | None

    @property
    def fault(self) -> str:
        return "" if self.check in (None, OK) else str(self.check)


def _pool_context() -> multiprocessing.context.BaseContext:
    # Never fork the server itself (gRPC and event loop threads); a forkserver that has
    # imported Pillow already starts each worker in milliseconds.
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["server.images.renditions"])
        return context
    return multiprocessing.get_context("spawn")


def _new_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=_pool_context(), initializer=_lower_priority
    )


def _lower_priority() -> None:
    # A check may wait; the acknowledgements and offers of the server process may not.
    # On a busy machine the scheduler now runs the server first, and the checks in
    # the time it leaves (they still finish long before an authorizer opens the item).
    with contextlib.suppress(OSError):
        os.nice(CHECK_NICENESS)


class ImageChecker:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        blobs: BlobStore,
        limits: ImageLimits,
        workers: int,
        facts_ttl_s: float = FACTS_TTL_S,
    ) -> None:
        self.client = client
        self.keys = keys
        self.blobs = blobs
        self.limits = limits
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._running: dict[str, asyncio.Task[str]] = {}
        self._known: OrderedDict[str, str] = OrderedDict()
        # Facts of checked images, read from Redis at most facts_ttl_s ago (monotonic
        # time read, facts). Kept short: the blob GC counts on a submit having read the
        # blob's hash lately (server/archive/blob_gc.py), and its grace is far longer.
        self.facts_ttl_s = facts_ttl_s
        self._facts: OrderedDict[str, tuple[float, BlobFacts]] = OrderedDict()
        self._failed_in_a_row = 0

    def start(self) -> None:
        # Workers start on the first check, not here.
        self._pool = _new_pool(self.workers)

    async def stop(self) -> None:
        """Abandons checks in flight: each is run again when it is next needed."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    # -- starting checks -------------------------------------------------------------

    def schedule(self, sha256: str, data: bytes, stored: str | None) -> None:
        """Starts the check of a fresh upload unless one is coming. ``stored``: the
        verdict stored for it, read with its record (QueueStore.record_blob). None when
        never checked, or when the blob GC removed it (and the renditions with it)
        since: then a verdict this process holds no longer holds either."""
        if stored is not None:
            self._remember(sha256, stored)
            return
        self._known.pop(sha256, None)
        if sha256 not in self._running:
            self._launch(sha256, data)

    async def verdict(self, sha256: str) -> str:
        """ "OK" or the image's fault; waits for a running check or runs one now.
        Raises OSError when the image's bytes cannot be read from the blob store for
        now (LOST when it has lost them)."""
        # A running check first: after the blob GC, the verdict held here may speak of
        # renditions that are being made again.
        if (task := self._running.get(sha256)) is None:
            if (known := self._known.get(sha256)) is not None:
                return known
            task = self._launch(sha256, None)
        # Shielded: a caller giving up must not abandon the check for everyone else.
        return await asyncio.shield(task)

    def _launch(self, sha256: str, data: bytes | None) -> asyncio.Task[str]:
        task = asyncio.create_task(self._check(sha256, data), name=f"image-check-{sha256[:12]}")
        self._running[sha256] = task
        task.add_done_callback(functools.partial(self._finished, sha256))
        return task

    def _finished(self, sha256: str, task: asyncio.Task[str]) -> None:
        self._running.pop(sha256, None)
        if task.cancelled():
            return
        # Retrieved here: a check started by schedule() may have nobody awaiting it,
        # and asyncio would otherwise report it only when the task is collected.
        exc = task.exception()
        if exc is None:
            if self._failed_in_a_row:
                log.info(
                    "image checks finish again; %d could not meanwhile and run again "
                    "when their images are next needed",
                    self._failed_in_a_row,
                )
                self._failed_in_a_row = 0
            return
        # Nothing was recorded or remembered, so whoever next needs the verdict (the
        # dispatch gate, before any offer) runs the check again. An outage fails every
        # check in it: the first is said with its traceback, the rest counted.
        self._failed_in_a_row += 1
        if self._failed_in_a_row == 1:
            log.warning(
                "the check of image %s could not finish: %s: %s; nothing is recorded, "
                "and it runs again when the image is next needed",
                sha256,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        else:
            log.debug("the check of image %s could not finish either: %s", sha256, exc)

    async def _check(self, sha256: str, data: bytes | None) -> str:
        stored = await self.client.hget(self.keys.blob(sha256), "ck")
        if stored is not None:
            return self._remember(sha256, as_text(stored))
        if data is None:
            # Bytes that cannot be read now (EIO, refused, a share not mounted) are the
            # storage failing, not the capture: no verdict, so the exception goes on
            # (logged in _finished), nothing is recorded or remembered, and the gate's
            # caller puts the item back in the queue.
            try:
                data = await self.blobs.get(sha256)
            except FileNotFoundError:
                if not self.blobs.reachable():
                    raise
                # The store is there and the image is not: lost, and the request cannot
                # be decided without it, so it goes back to the teller, told that the
                # center lost it. Not recorded: a restore from backup brings it back.
                log.error("image %s: its bytes are missing from the blob store", sha256)
                return LOST
        result = await self._run(data)
        if result.ok:
            if result.preview:  # else the original is its own preview (bare_preview)
                await self.blobs.put_rendition(sha256, "preview", result.preview)
            await self.blobs.put_rendition(sha256, "thumbnail", result.thumbnail)
        verdict = OK if result.ok else result.fault[:500]
        await self.client.hset(self.keys.blob(sha256), "ck", verdict)
        if not result.ok:
            log.info("image %s failed the full check: %s", sha256, verdict)
        return self._remember(sha256, verdict)

    async def _run(self, data: bytes) -> CheckResult:
        loop = asyncio.get_running_loop()
        for attempt in range(2):
            pool = self._pool
            if pool is None:
                raise RuntimeError("the image checker is stopped")
            try:
                return await loop.run_in_executor(pool, check_and_render, data, self.limits)
            except BrokenProcessPool:
                # A worker died (a decoder crash, or killed): a fresh pool, one more try.
                if self._pool is pool:
                    self._pool = _new_pool(self.workers)
                    with contextlib.suppress(Exception):
                        pool.shutdown(wait=False, cancel_futures=True)
                if attempt == 1:
                    break
        return CheckResult(fault="damaged image: the decoder crashed on it")

    def known(self, sha256: str) -> str | None:
        """The verdict this process already holds, or None (not checked here yet, or
        being looked up or checked again)."""
        return None if sha256 in self._running else self._known.get(sha256)

    def _remember(self, sha256: str, verdict: str) -> str:
        self._known[sha256] = verdict
        self._known.move_to_end(sha256)
        while len(self._known) > _CACHE_ENTRIES:
            self._known.popitem(last=False)
        return verdict

    # -- reading what is known -------------------------------------------------------

    async def facts(self, hashes: Sequence[str]) -> list[BlobFacts | None]:
        """Size, content type and check verdict of each image (None: not uploaded),
        in one round trip, or none when every image was checked and read lately."""
        if not hashes:
            return []
        now = time.monotonic()
        cached = [self._facts.get(sha256) for sha256 in hashes]
        if all(hit is not None and now - hit[0] < self.facts_ttl_s for hit in cached):
            return [hit[1] for hit in cached if hit is not None]
        async with self.client.pipeline(transaction=False) as pipe:
            for sha256 in hashes:
                pipe.hmget(self.keys.blob(sha256), ["sz", "ct", "ck"])
            replies = await pipe.execute()
        found = [
            BlobFacts(int(size), ct.decode(), ck.decode() if ck is not None else None)
            if size is not None
            else None
            for size, ct, ck in replies
        ]
        for sha256, facts in zip(hashes, found, strict=True):
            if facts is not None and facts.check is not None:  # a verdict never changes
                self._facts[sha256] = (now, facts)
                self._facts.move_to_end(sha256)
        while len(self._facts) > _CACHE_ENTRIES:
            self._facts.popitem(last=False)
        return found
