"""Fans the queue's changes out inside one server process.

Every transition script appends an entry to one Redis stream. Each server process
follows it with a blocking XREAD on a connection of its own (a RedisPipe: replies
parsed by hiredis, without redis-py's per-command machinery) and hands each entry to
the watchers of that request and to the listeners (the work dispatcher, the lease
reaper). A process that loses Redis resumes from the last entry it saw; if entries
were trimmed meanwhile, watchers are told to re-read the request (RESYNC)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from server.background import BackgroundLoop
from server.domain.records import HistoryEntry
from server.store.redis_pipe import RedisPipe

log = logging.getLogger(__name__)

Listener = Callable[[HistoryEntry], None]
# Entries asked for per XREAD.
READ_COUNT = 500


class Resync:
    """Put in a watcher's queue when entries may have been missed."""


RESYNC = Resync()
WatchItem = HistoryEntry | Resync


class Watcher(Protocol):
    """What a request's changes are handed to: an asyncio.Queue read by its own task,
    or an object that acts at once in the follower's turn (an authorizer session
    hearing that an item it holds has left its hands)."""

    def put_nowait(self, item: WatchItem) -> None: ...


class EventHub:
    def __init__(self, pipe: RedisPipe, stream_key: str, linger_s: float = 0.0) -> None:
        # Only this hub's XREAD BLOCK is sent on it: it holds the connection.
        self.pipe = pipe
        self.stream_key = stream_key
        # A follower that need not hear of each change at once (the archiver) waits this
        # long between reads, and reads what gathered meanwhile in one round trip.
        self.linger_s = linger_s
        self._watchers: dict[str, set[Watcher]] = defaultdict(set)
        self._listeners: list[Listener] = []
        # Told when events may have been missed (the stream was lost for a while).
        self._resync_listeners: list[Callable[[], None]] = []
        self.loop = BackgroundLoop("event-hub")
        # The last entry handed out: a follower started again resumes after it.
        self._last = b"0-0"

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def add_resync_listener(self, listener: Callable[[], None]) -> None:
        self._resync_listeners.append(listener)

    def add_watch(self, request_id: str, watcher: Watcher) -> None:
        """Subscribe before reading the request, so no change falls in between."""
        self._watchers[request_id].add(watcher)

    def remove_watch(self, request_id: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(request_id)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[request_id]

    @contextlib.contextmanager
    def watch(self, request_id: str) -> Iterator[asyncio.Queue[WatchItem]]:
        queue: asyncio.Queue[WatchItem] = asyncio.Queue()
        self.add_watch(request_id, queue)
        try:
            yield queue
        finally:
            self.remove_watch(request_id, queue)

    async def start(self, after: bytes | None = None) -> None:
        """Follows the stream from the entry after ``after`` (None: from now on)."""
        self._last = await self._last_id() if after is None else after
        self.loop.start(self._follow)

    async def stop(self) -> None:
        await self.loop.stop()
        await self.pipe.aclose()

    async def _last_id(self) -> bytes:
        newest: Any = await self.pipe.execute("XREVRANGE", self.stream_key, "+", "-", "COUNT", 1)
        return bytes(newest[0][0]) if newest else b"0-0"

    async def _follow(self) -> None:
        backoff = 0.05
        # Started again after an error (server/background.py): entries may have come
        # and gone meanwhile.
        lost = self.loop.restarts > 0
        connects = self.pipe.connects
        while not self.loop.stopping:
            try:
                reply: Any = await self.pipe.execute(
                    "XREAD", "COUNT", READ_COUNT, "BLOCK", 2000, "STREAMS", self.stream_key,
                    self._last,
                )  # fmt: skip
            # An error reply as well as a lost connection: Redis answers a blocked read
            # with -UNBLOCKED when a failover demotes it, and this process would hear
            # of no change again.
            except (ConnectionError, TimeoutError, OSError, ResponseError) as exc:
                log.warning("event stream lost (%s): retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                lost = True
                continue
            if lost or self.pipe.connects != connects:
                # The connection was lost (perhaps only for a moment, ridden out by
                # the pipe). Entries may have been trimmed, or Redis restarted from its
                # AOF with the stream shorter than we saw: watchers re-read.
                lost, backoff, connects = False, 0.05, self.pipe.connects
                self._resync_all()
            read = 0
            for _stream, entries in reply or ():
                read += len(entries)
                for entry_id, fields in entries:
                    self._last = entry_id
                    self._dispatch(_field(fields, b"m"))
            # A full read may have left more behind: read on at once, or a lingering
            # follower would fall behind any stream faster than READ_COUNT a linger
            # (the archiver did, at 900 requests/s, and missed what was trimmed).
            if self.linger_s > 0 and read < READ_COUNT:
                await asyncio.sleep(self.linger_s)

    def _dispatch(self, packed: bytes | None) -> None:
        if packed is None:
            log.error("event without its m field in %s", self.stream_key)
            return
        try:
            entry = HistoryEntry.unpack(packed)
        except Exception:  # a malformed entry must not stop the fan-out
            log.exception("unreadable event %r", packed[:80])
            return
        # A copy: a watcher may stop watching when it hears of the change.
        for watcher in tuple(self._watchers.get(entry.request_id, ())):
            watcher.put_nowait(entry)
        for listener in self._listeners:
            try:
                listener(entry)
            except Exception:
                log.exception("event listener failed on %s", entry.request_id)

    def _resync_all(self) -> None:
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.put_nowait(RESYNC)
        for listener in self._resync_listeners:
            try:
                listener()
            except Exception:
                log.exception("resync listener failed")


def _field(fields: list[bytes], name: bytes) -> bytes | None:
    """The value of ``name`` in a stream entry's flat [field, value, ...] list."""
    for index in range(0, len(fields) - 1, 2):
        if fields[index] == name:
            return fields[index + 1]
    return None
