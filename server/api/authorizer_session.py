"""One authorizer console's session stream.

The console grants credits ("I can take one more item"); each credit waits in the
dispatcher and becomes an offer the moment an item exists. While the stream is
open the server renews the leases of every item the console holds; if the stream
drops, renewals stop and the leases run out, returning the items to the queue.

The session also watches each item it holds: when someone else changes one (the
branch withdraws it to authorize on site, R8; the reaper requeues a lapsed lease),
the console hears ``lease_lost`` with the change at once, rather than at the next
renewal or from a refused decision."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Coroutine, Sequence
from typing import Any

import grpc
from authq.batching import batched, unpacked
from authq.refusals import Refusal
from authq.v1 import authorizer_pb2 as apb

from server import dispatch
from server.api import convert
from server.api.session_guard import LoginCheck, watch_login
from server.api.status import Refused, refused
from server.center import Center, Identity
from server.dispatch import Waiter
from server.domain.records import HistoryEntry
from server.domain.states import Outcome, State
from server.errors import AuthqError, InvalidArgument
from server.events import WatchItem
from server.store.queue_store import Claim

MAX_CREDITS = 16
# Decisions and hand-backs of one session being made at once. A console has at most
# MAX_CREDITS items to act on; past this many the session reads no further message
# until one is done, and gRPC's flow control holds the console back.
MAX_ACTIONS_IN_FLIGHT = MAX_CREDITS

_OUTCOMES = {
    apb.OUTCOME_APPROVE: Outcome.APPROVE,
    apb.OUTCOME_REJECT: Outcome.REJECT,
    apb.OUTCOME_ASK_SUPPLEMENT: Outcome.ASK_SUPPLEMENT,
}


def outcome_of(value: int) -> Outcome:
    outcome: Outcome | None = _OUTCOMES.get(value)  # type: ignore[call-overload]
    if outcome is None:
        raise InvalidArgument("outcome", "must be APPROVE, REJECT or ASK_SUPPLEMENT")
    return outcome


def offer_to_pb(claim: Claim) -> apb.Offer:
    return apb.Offer(
        request=convert.record_to_pb(claim.record),
        lease=apb.Lease(
            request_id=claim.record.request_id,
            fencing_token=claim.token,
            expires_at_ms=claim.lease_until_ms,
        ),
    )


def _out_batch(messages: Sequence[apb.AuthorizerSessionOut]) -> apb.AuthorizerSessionOut:
    return apb.AuthorizerSessionOut(batch=apb.AuthorizerSessionOutBatch(messages=messages))


class AuthorizerSession:
    def __init__(
        self, center: Center, identity: Identity, lease_ms: int, batches: bool = False
    ) -> None:
        self.center = center
        self.identity = identity
        self.batches = batches  # the client reads batches (authq.batching)
        self.authorizer_id = identity.user_id
        # Every claim for this session stages this record, completed (R15).
        self.claim_audit = center.claim_audit(identity)
        self.lease_ms = lease_ms
        self.out: asyncio.Queue[apb.AuthorizerSessionOut | None] = asyncio.Queue()
        self.held: dict[str, int] = {}  # request id -> fencing token
        # Offers made but not yet written to the stream (queued, taken into a batch,
        # or in a write not yet done): request id -> fencing token.
        self.unsent: dict[str, int] = {}
        # Credits waiting in the dispatcher -> the ref of the message that granted them.
        self.waiters: dict[Waiter, str] = {}
        self.closed = False
        # Why the login no longer holds (session_guard.py): the stream ends with it.
        self.ended: AuthqError | None = None
        # Why the reader stopped before the client closed its side (a message that
        # does not parse): the stream ends with it.
        self.failure: Exception | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.actions = asyncio.Semaphore(MAX_ACTIONS_IN_FLIGHT)

    async def run(
        self, incoming: AsyncIterator[apb.AuthorizerSessionIn], login_holds: LoginCheck
    ) -> AsyncIterator[apb.AuthorizerSessionOut]:
        reader = asyncio.create_task(self._read(incoming))
        renewer = asyncio.create_task(self._renew_forever())
        guard = asyncio.create_task(watch_login(login_holds, self._end))
        try:
            async for message in batched(self.out, _out_batch, enabled=self.batches):
                yield message
                # gRPC asks for the next message only once this one is written.
                if self.unsent:
                    self._written(message)
        finally:
            self.closed = True
            for waiter in self.waiters:
                self.center.dispatcher.remove(waiter)
            self._put_back_unsent()
            for request_id in self.held:
                self.center.hub.remove_watch(request_id, self)
            for task in (reader, renewer, guard, *self.tasks):
                task.cancel()
        if self.ended is not None:
            raise self.ended
        if self.failure is not None:
            raise self.failure

    def _written(self, message: apb.AuthorizerSessionOut) -> None:
        body = message.WhichOneof("body")
        if body == "offer":
            self.unsent.pop(message.offer.lease.request_id, None)
        elif body == "batch":
            for inner in message.batch.messages:
                if inner.WhichOneof("body") == "offer":
                    self.unsent.pop(inner.offer.lease.request_id, None)

    def _put_back_unsent(self) -> None:
        """The offers not written when the stream ends never reached the console (it
        dropped the stream or stopped reading, the stream stopped at its end marker,
        or the login was revoked), whether still queued, taken into a batch, or in a
        write that never ended: their items go back now rather than lapse at the end
        of leases nobody knew of. What was written stays held until its lease runs
        out: the console has it."""
        unsent, self.unsent = self.unsent, {}
        for request_id, token in unsent.items():
            # Not held any more: someone else changed it meanwhile (_lost), and it is
            # not this session's to put back.
            if self._let_go(request_id) == token:
                self.center.dispatcher.put_back(
                    self.authorizer_id, request_id, token, dispatch.LEFT
                )

    def _end(self, refusal: AuthqError) -> None:
        self.ended = refusal
        self.out.put_nowait(None)

    async def _read(self, incoming: AsyncIterator[apb.AuthorizerSessionIn]) -> None:
        try:
            async for received in incoming:
                # then_credit belongs to a decide or release: _handle refuses an
                # envelope that carries it.
                for message in (received,) if received.then_credit else unpacked(received):
                    if message.WhichOneof("body") in ("decide", "release"):
                        await self.actions.acquire()  # freed as the action ends (_spawn)
                    self._handle(message)
        except Exception as exc:
            # Nobody awaits this task: unsaid, the stream would stay open with no
            # reader, answering nothing. What is in flight is still answered.
            self.failure = exc
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.out.put_nowait(None)

    def _handle(self, message: apb.AuthorizerSessionIn) -> None:
        body = message.WhichOneof("body")
        then = message.then_credit
        if then and body not in ("decide", "release"):
            refusal = "only with a decide or release message; send credit alone"
            self._error(message.ref, InvalidArgument("then_credit", refusal))
        elif body == "credit":
            self._credit(message.ref, message.credit)
        elif body == "decide":
            self._spawn(self._then_credit(
                message.ref, then, self._decide(message.ref, message.decide)))  # fmt: skip
        elif body == "release":
            self._spawn(self._then_credit(
                message.ref, then, self._release(message.ref, message.release)))  # fmt: skip
        elif body == "batch":  # only reached inside a batch
            self._error(message.ref, InvalidArgument("batch", "a batch cannot hold batches"))
        else:
            self._error(message.ref, InvalidArgument("body", "empty session message"))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs a decision or hand-back, which holds one of ``actions`` (_read)."""
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._action_done)

    def _action_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.actions.release()

    async def _then_credit(self, ref: str, count: int, work: Awaitable[None]) -> None:
        """Runs the decision or release, then grants the credit that came with it (its
        outcome does not matter: either way the authorizer's seat is free)."""
        try:
            await work
        finally:
            if count and not self.closed:
                self._credit(ref, count)

    def _error(self, ref: str, exc: BaseException) -> None:
        self.out.put_nowait(apb.AuthorizerSessionOut(ref=ref, error=refused(exc).session_error()))

    def _credit(self, ref: str, count: int) -> None:
        if count <= 0 or len(self.waiters) + len(self.held) + count > MAX_CREDITS:
            self._error(ref, InvalidArgument("credit", f"1 to {MAX_CREDITS} items at a time"))
            return
        for _ in range(count):
            waiter = Waiter(self.authorizer_id, self._deliver, self.identity.qualification,
                            self.claim_audit, failed=self._failed)  # fmt: skip
            self.waiters[waiter] = ref
            self.center.dispatcher.add(waiter)

    def _deliver(self, waiter: Waiter, claim: Claim) -> bool:
        if self.closed:
            self.waiters.pop(waiter, None)
            return False
        # Built before anything changes: if it fails, the dispatcher releases the item
        # and _failed answers the credit, and no trace of the item is left here.
        offer = apb.AuthorizerSessionOut(offer=offer_to_pb(claim))
        self.waiters.pop(waiter, None)
        self.held[claim.record.request_id] = claim.token
        self.unsent[claim.record.request_id] = claim.token
        self.center.hub.add_watch(claim.record.request_id, self)
        self.out.put_nowait(offer)
        self.center.staged()  # the claim script staged its CLAIM record
        return True

    def _failed(self, waiter: Waiter, exc: Exception) -> None:
        """The dispatcher could not hand this credit its item (and released the item):
        the credit is used up, and its grant is answered with the error, as a refused
        credit is. Not put back: the same fault would fail it again. The dispatcher
        logged the fault, naming the item: status_of, which would log an unexpected
        one again, is left to the errors it expects."""
        ref = self.waiters.pop(waiter, None)
        if ref is None or self.closed:
            return
        if isinstance(exc, AuthqError):
            self._error(ref, exc)
            return
        message = f"internal error ({type(exc).__name__}): the item could not be offered"
        error = Refused(grpc.StatusCode.INTERNAL, message, Refusal("INTERNAL")).session_error()
        self.out.put_nowait(apb.AuthorizerSessionOut(ref=ref, error=error))

    async def _decide(self, ref: str, request: apb.DecideRequest) -> None:
        try:
            convert.check_request_id(request.request_id)
            kinds = [
                convert.kind_name(kind, f"requested_kinds[{i}]")
                for i, kind in enumerate(request.requested_kinds)
            ]
            entry = await self.center.decide(
                self.identity,
                request.request_id,
                request.fencing_token,
                outcome_of(request.outcome),
                request.reason_code,
                request.note,
                kinds,
            )
        except Exception as exc:
            self._error(ref, exc)
            return
        self._let_go(request.request_id)
        self.out.put_nowait(apb.AuthorizerSessionOut(ref=ref, decided=convert.entry_to_pb(entry)))

    async def _release(self, ref: str, request: apb.ReleaseRequest) -> None:
        try:
            convert.check_request_id(request.request_id)
            entry = await self.center.release(
                self.identity, request.request_id, request.fencing_token, request.note
            )
        except Exception as exc:
            self._error(ref, exc)
            return
        self._let_go(request.request_id)
        self.out.put_nowait(apb.AuthorizerSessionOut(ref=ref, decided=convert.entry_to_pb(entry)))

    def _let_go(self, request_id: str) -> int | None:
        """Forgets a held item; returns its token, or None if it was not held."""
        token = self.held.pop(request_id, None)
        if token is not None:
            self.center.hub.remove_watch(request_id, self)
        return token

    def _lost(self, request_id: str, cause: HistoryEntry | None = None) -> None:
        token = self._let_go(request_id)
        if token is None:
            return
        lost = apb.AuthorizerSessionOut(
            lease_lost=apb.Lease(request_id=request_id, fencing_token=token)
        )
        if cause is not None:
            lost.cause.CopyFrom(convert.entry_to_pb(cause))
        self.out.put_nowait(lost)

    def put_nowait(self, item: WatchItem) -> None:
        """A change of a held item, from the event hub (server/events.py)."""
        if not isinstance(item, HistoryEntry):
            return  # changes may have been missed: the next renewal finds out
        # This console's own decision or release also arrives here, perhaps before
        # its reply: those are the holder's, and _decide or _release lets go.
        if item.actor != self.authorizer_id and item.state is not State.CLAIMED:
            self._lost(item.request_id, item)

    async def _renew_forever(self) -> None:
        # Renew well before expiry: a third of the lease leaves two tries of slack.
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            for request_id, token in list(self.held.items()):
                try:
                    await self.center.renew(self.authorizer_id, request_id, token)
                except AuthqError:
                    self._lost(request_id)
                    continue
                except Exception:
                    continue  # store away: try again next round
