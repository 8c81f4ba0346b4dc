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
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from server.accounts.model import Qualification
from server.background import BackgroundLoop
from server.domain.records import HistoryEntry
from server.domain.routing import ClaimFilter
from server.domain.states import State
from server.errors import AccountInactive, AuthorizerAway, AuthqError
from server.store.audit_records import StagedAudit
from server.store.queue_store import Claim, NothingToClaim, QueueStore

log = logging.getLogger(__name__)

# Waiters served per round: their claims share one pipeline to Redis.
ROUND = 32

# While dispatching keeps failing (Redis away, or refusing writes), it is tried again
# every RETRY_PAUSE_S; the first failure is logged with its traceback, then a short
# line at most this often, and one line once it works again.
RETRY_PAUSE_S = 0.2
STILL_FAILING_EVERY_S = 10.0

# A claim whose image gate could not finish (Redis, the checker or the blob store
# away) is held this long before it is put back, doubling with each failure in a row
# of that request, up to GATE_PAUSE_MAX_S or a quarter of the lease, whichever is less
# (the lease must not run out while it is held). Put back at once, the same item would
# be claimed and put back five times a second for as long as the fault lasts, each
# time in its history and the audit trail.
GATE_PAUSE_FIRST_S = 0.2
GATE_PAUSE_MAX_S = 10.0
# A request's failures in a row are forgotten once its gate finishes, or this long
# after the last one; at most this many requests are remembered, the oldest dropped.
GATE_FAILURES_FORGET_S = 60.0
GATE_FAILURES_KEPT = 1024

# Why a claim nobody will get was released (the item's history shows it).
LEFT = "authorizer left before the offer arrived"
NOT_MADE = "the offer could not be made"
GATE_FAILED = "the image check could not finish"


class PutBackAudit(Protocol):
    """Who audits put-backs (Center)."""

    def put_back_audit(
        self, request_id: str, authorizer_id: str, token: int, note: str
    ) -> StagedAudit:
        """The PUT_BACK record of a claim nobody got, for the release to stage."""
        ...

    def staged(self) -> None:
        """Records were staged: chain them."""
        ...


class Gate(Protocol):
    def ready(self, claim: Claim) -> bool:
        """True when admit() would say True without waiting for anything."""

    async def admit(self, claim: Claim) -> bool: ...


@dataclass(eq=False)
class Waiter:
    authorizer_id: str
    # Takes this waiter and the item claimed for it; returns False if the authorizer
    # has gone meanwhile. Given the waiter rather than closing over it, so that a
    # waiter and its callback are no reference cycle: one per offer would otherwise
    # be left for the garbage collector's full passes, which stall the event loop.
    deliver: Callable[[Waiter, Claim], bool]
    # What it may decide (issue 3 §4); None: anything.
    qualification: Qualification | None = None
    # Its CLAIM audit record without the target, which the claim script fills in and
    # stages (Center.claim_audit); empty: not audited (tests, tools).
    audit: bytes = b""
    cancelled: bool = field(default=False)
    # Told why when deliver raised (the dispatcher has logged it, naming the item: not
    # to be logged again), or when its account was found disabled (AccountInactive).
    # Such a waiter is not put back in line: the same fault would most likely fail it
    # again, item after item, each one claimed and released in vain. None: nobody to
    # tell.
    failed: Callable[[Waiter, Exception], None] | None = None


class GateFailures:
    """The image-gate failures in a row of each request lately claimed here, which set
    how long its claim is held before it is put back (GATE_PAUSE_FIRST_S, doubling),
    and of the gate as a whole, which set how long the authorizer whose claim failed
    waits before claiming again. In memory and bounded: after a restart, or once
    forgotten, a request starts again at the first pause."""

    def __init__(self, cap_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.cap_s = cap_s
        self._clock = clock
        # Request id -> (failures in a row, when the last one was), oldest first.
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()
        # Failures of any request since a gate last finished. A store or checker away
        # fails every item in turn: were the authorizer to claim again at once, a deep
        # queue of items with images would be swept, each claimed and put back, at the
        # speed of claims for as long as the fault lasts.
        self.streak = 0

    def count(self, request_id: str) -> int:
        """Counts one more failure of the request's gate; returns its failures in a row."""
        self.streak += 1
        now = self._clock()
        while self._seen and next(iter(self._seen.values()))[1] < now - GATE_FAILURES_FORGET_S:
            self._seen.popitem(last=False)
        failures = self._seen.pop(request_id, (0, now))[0] + 1
        self._seen[request_id] = (failures, now)
        if len(self._seen) > GATE_FAILURES_KEPT:
            self._seen.popitem(last=False)
        return failures

    def pause(self, failures: int) -> float:
        """How long to hold a claim after this many failures in a row of its gate."""
        return _growing(failures, self.cap_s)

    def line_pause(self) -> float:
        """How long the authorizer whose claim just failed waits before claiming again:
        not at all after a first failure (the items behind may pass), then growing
        with the streak."""
        return _growing(self.streak - 1, self.cap_s) if self.streak > 1 else 0.0

    def forget(self, request_id: str) -> None:
        """The request's gate finished (admitted, or dealt with otherwise): the gate
        works again, whatever failed before."""
        self._seen.pop(request_id, None)
        self.streak = 0


def _growing(failures: int, cap_s: float) -> float:
    # The exponent bounded: a fault lasting days must not overflow the float.
    return min(GATE_PAUSE_FIRST_S * 2.0 ** min(failures - 1, 32), cap_s)


class WorkDispatcher:
    def __init__(self, store: QueueStore) -> None:
        self.store = store
        self._waiters: deque[Waiter] = deque()
        self.loop = BackgroundLoop("work-dispatcher")
        self._wake = self.loop.wake
        # Asked about every claim before it is delivered; False: the item was dealt
        # with otherwise (sent back for its images, server/images/gate.py), so the
        # waiter gets the next one.
        self.gate: Gate | None = None
        # How long a claim whose gate failed is held before it is put back.
        lease_s = store.config.lease_ms / 1000
        self.gate_failures = GateFailures(min(GATE_PAUSE_MAX_S, lease_s / 4))
        # Every put-back is in the audit trail, closing the CLAIM record that took
        # the item (R15, and the reports of R16). None: not audited (tests, tools).
        self.audit: PutBackAudit | None = None
        # Gated deliveries and put-backs, which must not hold up the line.
        self._tasks: set[asyncio.Task[None]] = set()
        # Told when an authorizer starts or stops waiting (the supervisors' live view).
        self.on_waiters_changed: Callable[[], None] | None = None
        # False once a claim left every lane empty and no item entered the queue
        # since (QUEUED events counted by _queued_seen); True at start.
        self._maybe_work = True
        self._queued_seen = 0

    def on_event(self, entry: HistoryEntry) -> None:
        if entry.state is State.QUEUED:
            self._queued_seen += 1
            self._maybe_work = True
            if self._waiters:
                self._wake.set()

    def add(self, waiter: Waiter) -> None:
        self._waiters.append(waiter)
        # A claim for an authorizer back for more costs a script in Redis; when the
        # last round found the queue empty and nothing entered it since, it would
        # find nothing. The next QUEUED event wakes the dispatcher for it.
        if self._maybe_work:
            self._wake.set()
        if self.on_waiters_changed is not None:
            self.on_waiters_changed()

    def wake(self) -> None:
        """Something changed for the waiters (an authorizer is back): look again."""
        self._maybe_work = True
        self._wake.set()

    def remove(self, waiter: Waiter) -> None:
        waiter.cancelled = True
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        if self.on_waiters_changed is not None:
            self.on_waiters_changed()

    async def next_item(
        self, authorizer_id: str, qualification: Qualification | None = None, audit: bytes = b""
    ) -> Claim:
        """Waits for and claims the next item (for a unary Next call)."""
        future: asyncio.Future[Claim] = asyncio.get_running_loop().create_future()

        def deliver(_waiter: Waiter, claim: Claim) -> bool:
            if future.done():
                return False
            future.set_result(claim)
            return True

        def failed(_waiter: Waiter, exc: Exception) -> None:
            if not future.done():
                future.set_exception(exc)

        waiter = Waiter(authorizer_id, deliver, qualification, audit, failed=failed)
        self.add(waiter)
        try:
            return await future
        except asyncio.CancelledError:
            # Cancelled (the caller's deadline, or its cancel) after the claim was
            # handed over but before this call resumed to return it: nobody has it.
            if future.done() and not future.cancelled() and future.exception() is None:
                claim = future.result()
                self.put_back(authorizer_id, claim.record.request_id, claim.token, LEFT)
            raise
        finally:
            self.remove(waiter)

    @contextlib.contextmanager
    def handing_over(self, authorizer_id: str, claim: Claim) -> Iterator[None]:
        """Guards what a caller of next_item does with its claim before the claim
        reaches its authorizer (building the reply): if that raises, or the call is
        cancelled meanwhile, the item goes back at once instead of staying CLAIMED
        under a token nobody got until its lease runs out. The exception goes on,
        noting the item, and is logged once, by whoever handles it."""
        try:
            yield
        except BaseException as exc:
            request_id = claim.record.request_id
            if isinstance(exc, asyncio.CancelledError | GeneratorExit):
                note = LEFT
            else:
                note = NOT_MADE
                exc.add_note(f"offering {request_id} to {authorizer_id} failed: put back")
            self.put_back(authorizer_id, request_id, claim.token, note)
            raise

    def put_back(self, authorizer_id: str, request_id: str, token: int, note: str) -> None:
        """Releases a claim nobody will get, at once, by a task of its own that tries
        again while Redis is away (_put_back)."""
        self._spawn(self._put_back(authorizer_id, request_id, token, note))

    def start(self) -> None:
        self.loop.start(self._run)

    async def stop(self) -> None:
        await self.loop.stop()
        # Put-backs in flight and claims held after a failed gate included: their items
        # go back when their leases run out (the reaper of another process, or of this
        # one when it starts again), as for any claim out at a stop.
        for task in list(self._tasks):
            task.cancel()

    async def _run(self) -> None:
        clock = asyncio.get_running_loop().time
        # When the first of the failures in a row began (a claim may ride out seconds
        # of outage before it fails: server/store/redis_pipe.py), and when the last
        # line about them was logged.
        failing_since: float | None = None
        told_at = 0.0
        while not self.loop.stopping:
            await self._wake.wait()
            self._wake.clear()
            if self.loop.stopping:
                return
            began = clock()
            try:
                claimed = await self._serve_waiters()
            except Exception as exc:
                # Redis away (or refusing writes): tried again after a pause, and on
                # every event or waiter meanwhile; said once, then now and then.
                now = clock()
                if failing_since is None:
                    failing_since, told_at = began, now
                    log.exception("dispatching work failed; trying again until it works")
                elif now - told_at >= STILL_FAILING_EVERY_S:
                    told_at = now
                    log.warning(
                        "dispatching work still failing after %.0f s: %s",
                        now - failing_since,
                        _why(exc),
                    )
                await asyncio.sleep(RETRY_PAUSE_S)
                self._wake.set()
            else:
                # Only a claim that reached Redis says it works again: with nobody
                # waiting, the round tried nothing.
                if failing_since is not None and claimed:
                    # As loud as the failure: whoever saw it begin sees it end.
                    log.warning(
                        "dispatching work works again after %.0f s", clock() - failing_since
                    )
                    failing_since = None

    async def _serve_waiters(self) -> bool:
        """Claims for the waiters at the head of the line in rounds: a round's claim
        scripts go to Redis together in one write, in line order, so the first
        waiter still gets the best item (server/store/redis_pipe.py). A round is one
        claim at first and doubles (to ROUND) while every claim finds an item, so a
        trickle of work costs one claim per item and a backlog is served in bulk.
        Returns whether any claim was answered."""
        blocked: list[Waiter] = []
        size = 1
        queued_seen = self._queued_seen
        nothing_left = False  # a claim saw every lane empty after it
        answered = False
        try:
            drained = False
            while self._waiters and not drained:
                # Off the line before the await: a waiter that leaves meanwhile is
                # marked cancelled, and no other waiter is disturbed.
                round_: list[Waiter] = []
                while self._waiters and len(round_) < size:
                    waiter = self._waiters.popleft()
                    if not waiter.cancelled:
                        round_.append(waiter)
                results = await asyncio.gather(
                    *(
                        self.store.claim_or_nothing(
                            w.authorizer_id,
                            w.qualification,
                            StagedAudit(w.audit) if w.audit else None,
                        )
                        for w in round_
                    ),
                    return_exceptions=True,
                )
                failure: BaseException | None = None
                offered: list[tuple[Waiter, Claim]] = []
                for waiter, result in zip(round_, results, strict=True):
                    # Redis answered: an item, nothing, or "away".
                    reached = isinstance(
                        result, AuthorizerAway | AccountInactive | Claim | NothingToClaim
                    )
                    answered = answered or reached
                    if isinstance(result, AuthorizerAway):
                        blocked.append(waiter)  # waits until it is back (wake)
                    elif isinstance(result, AccountInactive):
                        if waiter.failed is None:
                            blocked.append(waiter)  # until its caller leaves
                        else:
                            waiter.failed(waiter, result)
                    elif isinstance(result, BaseException):
                        blocked.append(waiter)
                        failure = failure or result
                    elif isinstance(result, NothingToClaim):
                        # Nothing this waiter may take; others may hold other
                        # qualifications. For an unrestricted one the queue holds
                        # nothing anyone (not involved) may take.
                        blocked.append(waiter)
                        drained = drained or ClaimFilter.of(waiter.qualification).unrestricted
                        if not result.more_waiting:
                            # The queue is empty: until an item enters it, a claim for
                            # an authorizer back for more would find nothing either.
                            drained = nothing_left = True
                    else:
                        offered.append((waiter, result))
                size = min(2 * size, ROUND) if len(offered) == len(round_) else 1
                # The claims report whether anything was left after them: when
                # nothing was, another round would only find the queue empty.
                if offered and not any(claim.more_waiting for _, claim in offered):
                    drained = nothing_left = True
                self._offer(offered)
                if failure is not None:
                    raise failure
            if nothing_left and self._queued_seen == queued_seen:
                self._maybe_work = False
            return answered
        finally:
            back = [w for w in blocked if not w.cancelled]
            self._waiters.extendleft(reversed(back))
            # An item queued while the round held them found nobody in line to wake
            # (on_event): a claim that reached Redis before it and was answered after
            # its event would otherwise leave it waiting beside them.
            if back and self._queued_seen != queued_seen:
                self._wake.set()

    def _offer(self, offered: list[tuple[Waiter, Claim]]) -> None:
        """Delivers each claim the gate admits at once; a claim the gate must wait for
        (an image check still running) is gated and delivered by a task of its own, so
        that one slow check never holds up dispatch for everyone else. Nothing here
        raises: one waiter's trouble must not cost the others in the round their
        items."""
        for waiter, claim in offered:
            if self.gate is None or self.gate.ready(claim):
                self._deliver(waiter, claim)
            else:
                self._spawn(self._gate_then_deliver(waiter, claim))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        # The tasks handle their own failures; this only keeps a slip from passing
        # unseen (an exception nobody retrieves is reported only at collection).
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("dispatch task failed: %s", _why(exc))

    async def _gate_then_deliver(self, waiter: Waiter, claim: Claim) -> None:
        assert self.gate is not None
        request_id = claim.record.request_id
        try:
            admitted = await self.gate.admit(claim)
        except Exception as exc:
            # Redis, the checker or the blob store away: no verdict. The waiter goes on
            # to the next item (items the gate would admit are not kept behind this
            # one), at once after a first failure, later while they go on; this claim
            # is held a pause growing while the fault lasts, so that it is not offered
            # again meanwhile, and then put back, to be checked again when next
            # claimed. Not held until its lease runs out: that would keep it from
            # everyone for the whole lease after the fault ended.
            failures = self.gate_failures.count(request_id)
            pause = self.gate_failures.pause(failures)
            line_pause = self.gate_failures.line_pause()
            # Said once per run of failures: a lasting fault fails every item in turn.
            log.log(
                logging.WARNING if failures == 1 else logging.DEBUG,
                "image gate failed for %s (%d in a row): %s; put back in %.1f s",
                request_id,
                failures,
                _why(exc),
                pause,
            )
            await asyncio.gather(
                self._back_in_line_after(line_pause, waiter),
                self._put_back_after(pause, waiter.authorizer_id, request_id, claim.token),
            )
            return
        self.gate_failures.forget(request_id)
        if admitted:
            self._deliver(waiter, claim)
        else:
            # The item went back to its teller (or to the queue): this waiter gets the
            # next one.
            self._back_in_line(waiter)

    async def _back_in_line_after(self, pause: float, waiter: Waiter) -> None:
        if pause > 0:
            await asyncio.sleep(pause)
        self._back_in_line(waiter)

    async def _put_back_after(
        self, pause: float, authorizer_id: str, request_id: str, token: int
    ) -> None:
        await asyncio.sleep(pause)
        await self._put_back(authorizer_id, request_id, token, GATE_FAILED)

    def _back_in_line(self, waiter: Waiter) -> None:
        """A waiter whose claim came to nothing goes back to the head of the line."""
        if not waiter.cancelled:
            self._waiters.appendleft(waiter)
            self._wake.set()

    def _deliver(self, waiter: Waiter, claim: Claim) -> None:
        try:
            if not waiter.cancelled and waiter.deliver(waiter, claim):
                return
            note = LEFT
        except Exception as exc:
            # Logged here, the one place that knows the item, the authorizer and the
            # fault; whoever is told (Waiter.failed) answers without logging it again.
            log.error(
                "offering %s to %s failed: %s",
                claim.record.request_id,
                waiter.authorizer_id,
                _why(exc),
                exc_info=exc,
            )
            note = NOT_MADE
            waiter.cancelled = True  # out of line for good; see Waiter.failed
            if waiter.failed is not None:
                try:
                    waiter.failed(waiter, exc)
                except Exception as told:
                    log.error("telling %s of it failed: %s", waiter.authorizer_id, _why(told))
        self.put_back(waiter.authorizer_id, claim.record.request_id, claim.token, note)

    async def _put_back(self, authorizer_id: str, request_id: str, token: int, note: str) -> None:
        """Releases a claim nobody will get, so the item is not kept from the queue
        until its lease runs out. Tries again while Redis is away, until the lease
        runs out (the reaper returns the item then). Nobody opened the item: the
        release restores its review flag, so the teller may still withdraw it (R4)."""
        deadline = asyncio.get_running_loop().time() + self.store.config.lease_ms / 1000
        pause = 0.1
        warned = False
        auditor = self.audit
        while True:
            audit = (
                None
                if auditor is None
                else auditor.put_back_audit(request_id, authorizer_id, token, note)
            )
            try:
                await self.store.release(
                    request_id, token, authorizer_id, note, audit, put_back=True
                )
                if auditor is not None and audit is not None and audit.staged:
                    auditor.staged()
                return
            except AuthqError as exc:
                # No longer this claim's (withdrawn by a fallback report, reaped, or
                # released by an earlier try whose reply was lost): nothing to return.
                log.info("%s was not put back: %s", request_id, exc)
                return
            except Exception as exc:
                if not warned:  # once per item: a Redis outage touches many
                    warned = True
                    log.warning(
                        "putting %s back failed: %s; trying again until its lease ends",
                        request_id,
                        _why(exc),
                    )
                if asyncio.get_running_loop().time() + pause > deadline:
                    return
                await asyncio.sleep(pause)
                pause = min(2 * pause, 2.0)


def _why(exc: BaseException) -> str:
    # Not repr(): redis-py's errors show only their class there, not what happened.
    return f"{type(exc).__name__}: {exc}"
