"""Hands waiting authorizers their next item the moment one exists.

Authorizers who asked for work wait here in arrival order. Whenever the event hub
reports an item entering the queue (or a new authorizer starts waiting), the
dispatcher claims items for the waiters at the head of the line until the queue is
empty. No timers and no polling: the queue's own events drive it. Several server
processes may dispatch at once; the claim script decides who gets each item."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from server.accounts.model import Qualification
from server.background import BackgroundLoop
from server.domain.records import HistoryEntry
from server.domain.routing import ClaimFilter
from server.domain.states import State
from server.errors import AuthorizerAway
from server.store.queue_store import Claim, QueueStore

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Waiter:
    authorizer_id: str
    # Takes the claimed item; returns False if the authorizer has gone meanwhile.
    deliver: Callable[[Claim], bool]
    # What it may decide (issue 3 §4); None: anything.
    qualification: Qualification | None = None
    cancelled: bool = field(default=False)


class WorkDispatcher:
    def __init__(self, store: QueueStore) -> None:
        self.store = store
        self._waiters: deque[Waiter] = deque()
        self.loop = BackgroundLoop("work-dispatcher")
        self._wake = self.loop.wake
        # Asked about every claim before it is delivered; False: the item was dealt
        # with otherwise (sent back for its images, server/images/gate.py), so the
        # waiter gets the next one.
        self.gate: Callable[[Claim], Awaitable[bool]] | None = None
        # Told when an authorizer starts or stops waiting (the supervisors' live view).
        self.on_waiters_changed: Callable[[], None] | None = None

    def on_event(self, entry: HistoryEntry) -> None:
        if entry.state is State.QUEUED and self._waiters:
            self._wake.set()

    def add(self, waiter: Waiter) -> None:
        self._waiters.append(waiter)
        self._wake.set()
        if self.on_waiters_changed is not None:
            self.on_waiters_changed()

    def wake(self) -> None:
        """Something changed for the waiters (an authorizer is back): look again."""
        self._wake.set()

    def remove(self, waiter: Waiter) -> None:
        waiter.cancelled = True
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        if self.on_waiters_changed is not None:
            self.on_waiters_changed()

    async def next_item(
        self, authorizer_id: str, qualification: Qualification | None = None
    ) -> Claim:
        """Waits for and claims the next item (for a unary Next call)."""
        future: asyncio.Future[Claim] = asyncio.get_running_loop().create_future()

        def deliver(claim: Claim) -> bool:
            if future.done():
                return False
            future.set_result(claim)
            return True

        waiter = Waiter(authorizer_id, deliver, qualification)
        self.add(waiter)
        try:
            return await future
        finally:
            self.remove(waiter)

    def start(self) -> None:
        self.loop.start(self._run)

    async def stop(self) -> None:
        await self.loop.stop()

    async def _run(self) -> None:
        while not self.loop.stopping:
            await self._wake.wait()
            self._wake.clear()
            if self.loop.stopping:
                return
            try:
                await self._serve_waiters()
            except Exception:
                # Redis away: try again on the next event or waiter.
                log.exception("dispatching work failed")
                await asyncio.sleep(0.2)
                self._wake.set()

    async def _serve_waiters(self) -> None:
        blocked: list[Waiter] = []
        try:
            while self._waiters:
                # Off the line before the await: a waiter that leaves meanwhile is
                # marked cancelled, and no other waiter is disturbed.
                waiter = self._waiters.popleft()
                if waiter.cancelled:
                    continue
                try:
                    claim = await self.store.claim(waiter.authorizer_id, waiter.qualification)
                except AuthorizerAway:
                    blocked.append(waiter)  # waits until it is back (wake)
                    continue
                except BaseException:
                    blocked.append(waiter)
                    raise
                if claim is None:
                    # Nothing this waiter may take; others may hold other qualifications.
                    blocked.append(waiter)
                    if ClaimFilter.of(waiter.qualification).unrestricted:
                        break  # the queue holds nothing anyone (not involved) may take
                    continue
                if self.gate is not None:
                    try:
                        admitted = await self.gate(claim)
                    except BaseException:
                        blocked.append(waiter)
                        raise
                    if not admitted:
                        self._waiters.appendleft(waiter)
                        continue
                if waiter.cancelled or not waiter.deliver(claim):
                    # The authorizer left while we claimed: put the item straight back.
                    await self.store.release(
                        claim.record.request_id,
                        claim.token,
                        waiter.authorizer_id,
                        "authorizer left before the offer arrived",
                    )
        finally:
            self._waiters.extendleft(reversed([w for w in blocked if not w.cancelled]))
