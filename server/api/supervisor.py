"""SupervisorService: the queue as a supervisor sees it, and two-person moves up the
queue (R6).

A move is requested by one supervisor or director with a reason and confirmed by a
different one within ``move_confirm_window_ms``; only the confirmation changes the
request's place (to the front, see server/store/moves.py). Refusals: the same person
confirming is PERMISSION_DENIED naming R6; a request that is not waiting, no pending
move, a move already pending, or a lapsed move are FAILED_PRECONDITION; a missing
reason is INVALID_ARGUMENT. Every request, confirmation, refusal and lapse is written
to the audit trail (actions REPRIORITIZE_REQUEST, REPRIORITIZE_CONFIRM with outcome OK
or the refusal message; REPRIORITIZE_LAPSE by ``system``). Lapses are found by a
sweep at the start of every move call, so each is audited once, at the latest when
the next move call arrives. Refusals by the rights table (R13) are the
Authenticator's to audit."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeAlias

import grpc
from authq.v1 import common_pb2 as cpb
from authq.v1 import supervisor_pb2 as spb
from authq.v1 import supervisor_pb2_grpc

from server.accounts.model import Role, Status
from server.accounts.store import AccountStore
from server.api import convert, fallback_convert
from server.api.identity import Authenticator
from server.api.session_guard import while_login_holds_each
from server.api.status import translate_errors
from server.center import Center, Identity
from server.domain.reasons import NOTE_MAX_CHARS
from server.errors import AuthqError, FailedPrecondition, InvalidArgument, NotFound
from server.images.api import serve_image
from server.queue_watch import QueueWatch, overview_to_pb
from server.store.audit import AuditAction
from server.store.emergencies import Emergency, EmergencyStore, check_emergency_id
from server.store.fallbacks import MAX_LIST
from server.store.moves import MoveLapsed, MoveStore, PendingMove
from server.store.queue_store import QueueStore

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

LAPSE = "REPRIORITIZE_LAPSE"
SYSTEM = Identity(user_id="system", origin="server")
# Branches one declaration may name; the whole center is declared by naming none. It
# keeps the declaration's audit record within what a record holds.
MAX_EMERGENCY_BRANCHES = 500
# An emergency's reason and the note that ends it: said to the branches, and kept whole
# in the audit record.
MAX_EMERGENCY_TEXT = 500


class SupervisorServicer(supervisor_pb2_grpc.SupervisorServiceServicer):
    def __init__(
        self,
        store: QueueStore,
        auth: Authenticator,
        moves: MoveStore,
        center: Center,
        emergencies: EmergencyStore,
        *,
        watch: QueueWatch | None = None,
        accounts: AccountStore | None = None,
    ) -> None:
        self.store = store
        self.auth = auth
        self.moves = moves
        self.center = center
        self.emergencies = emergencies
        self.watch = watch
        self.accounts = accounts

    def _changed(self) -> None:
        """Moves and emergencies are not queue events: tell the live view."""
        if self.watch is not None:
            self.watch.poke()

    @translate_errors
    async def WatchQueue(
        self, request: spb.WatchQueueRequest, context: Context
    ) -> AsyncIterator[spb.QueueSnapshot]:
        identity = await self.auth.identify(context, "SupervisorService.WatchQueue")
        if self.watch is None:
            raise FailedPrecondition("the live queue view is not running on this server")
        async for snapshot in while_login_holds_each(
            _snapshots(self.watch), self.auth.login_check(context, identity)
        ):
            yield snapshot

    @translate_errors
    async def SetAccountEnabled(
        self, request: spb.SetAccountEnabledRequest, context: Context
    ) -> spb.AccountStatusReply:
        identity = await self.auth.identify(context, "SupervisorService.SetAccountEnabled")
        if self.accounts is None:
            raise FailedPrecondition("account management is not available on this server")
        user_id = request.user_id.strip()
        reason = request.reason.strip()
        action = "ACCOUNT_ENABLE" if request.enabled else "ACCOUNT_DISABLE"
        async with self.center.audited(identity, action, user_id[:128] or "-",
                                       reason=reason[:NOTE_MAX_CHARS]) as audit:  # fmt: skip
            if not user_id:
                raise InvalidArgument("user_id", "required: the authorizer's account id")
            if not request.enabled and not reason:
                raise InvalidArgument("reason", "required to disable an account (R12)")
            if len(reason) > NOTE_MAX_CHARS:
                raise InvalidArgument("reason", f"at most {NOTE_MAX_CHARS} characters")
            account = await self.accounts.get(user_id)  # NotFound names it
            if Role.AUTHORIZER not in account.roles:
                raise FailedPrecondition(
                    f"{user_id} is not an AUTHORIZER account: supervisors enable and "
                    "disable authorizers only; other accounts through authq-admin (R12, R13)"
                )
            status = Status.ACTIVE if request.enabled else Status.DISABLED
            account = await self.accounts.set_status(user_id, status, audit)
        self._changed()
        return spb.AccountStatusReply(user_id=user_id, status=account.status.value)

    @translate_errors
    async def DeclareEmergency(
        self, request: spb.DeclareEmergencyRequest, context: Context
    ) -> spb.Emergency:
        identity = await self.auth.identify(context, "SupervisorService.DeclareEmergency")
        reason = request.reason.strip()
        branches = list(dict.fromkeys(b.strip() for b in request.branch_ids if b.strip()))
        # Checked inside the audited block, so that a refused declaration is recorded
        # too (R15); cut, so that the record of one refused as too long or too wide
        # stays within what a record holds.
        target = ",".join(branches[:MAX_EMERGENCY_BRANCHES]) or "*"
        async with self.center.audited(identity, "EMERGENCY_DECLARE", target,
                                       reason=reason[:MAX_EMERGENCY_TEXT]) as audit:  # fmt: skip
            if not reason or len(reason) > MAX_EMERGENCY_TEXT:
                raise InvalidArgument(
                    "reason", f"an emergency needs a reason (R8), 1-{MAX_EMERGENCY_TEXT} characters"
                )
            if len(branches) > MAX_EMERGENCY_BRANCHES:
                raise InvalidArgument(
                    "branch_ids",
                    f"at most {MAX_EMERGENCY_BRANCHES} branches: for the whole center name none",
                )
            unknown = await self.center.branches.missing(branches)
            if unknown:
                raise NotFound(f"branch_ids: no branch {', '.join(b[:64] for b in unknown[:5])}")
            emergency = await self.emergencies.declare(reason, branches, identity.user_id, audit)
        self._changed()
        return emergency_to_pb(emergency)

    @translate_errors
    async def EndEmergency(
        self, request: spb.EndEmergencyRequest, context: Context
    ) -> spb.Emergency:
        identity = await self.auth.identify(context, "SupervisorService.EndEmergency")
        emergency_id, note = request.emergency_id, request.note
        async with self.center.audited(identity, "EMERGENCY_END", emergency_id or "-",
                                       note=note[:MAX_EMERGENCY_TEXT]) as audit:  # fmt: skip
            if not emergency_id:
                raise InvalidArgument("emergency_id", "name the emergency to end")
            check_emergency_id(emergency_id)  # before it is part of a key name
            if len(note) > MAX_EMERGENCY_TEXT:  # refused, not cut: kept as it was said
                raise InvalidArgument("note", f"at most {MAX_EMERGENCY_TEXT} characters")
            emergency = await self.emergencies.end(emergency_id, identity.user_id, note, audit)
        self._changed()
        return emergency_to_pb(emergency)

    @translate_errors
    async def HandBack(self, request: spb.HandBackRequest, context: Context) -> spb.HandBackReply:
        identity = await self.auth.identify(context, "SupervisorService.HandBack")
        try:
            ids = await self._hand_back_ids(request)
        except AuthqError as exc:
            # Refused as a whole: recorded as audited records a refusal (R15). Each
            # request handed back has its own record below, so no record of the whole.
            await self.center.record(identity, "HAND_BACK", _hand_back_target(request),
                                     str(exc), {"reason": request.reason[:200]})  # fmt: skip
            raise
        reply = spb.HandBackReply()
        for rid in ids:
            try:
                async with self.center.audited(identity, "HAND_BACK", rid,
                                               reason=request.reason[:200]) as audit:  # fmt: skip
                    entry = await self.store.hand_back(rid, identity.user_id, request.reason, audit)
            except AuthqError as exc:
                reply.refused.append(spb.HandBackRefusal(request_id=rid, reason=str(exc)))
                continue
            reply.handed_back.append(convert.entry_to_pb(entry))
        self._changed()
        return reply

    async def _hand_back_ids(self, request: spb.HandBackRequest) -> list[str]:
        """The requests a hand-back names, or the waiting ones of the branch it names;
        a typo in the branch is refused, not answered with nothing handed back."""
        if not request.reason.strip():
            raise InvalidArgument("reason", "handing work back needs a reason for the tellers (R8)")
        if len(request.reason) > NOTE_MAX_CHARS:
            raise InvalidArgument("reason", f"at most {NOTE_MAX_CHARS} characters")
        if bool(request.request_ids) == bool(request.branch_id):
            raise InvalidArgument("request_ids", "name the requests, or a branch_id, not both")
        for index, rid in enumerate(request.request_ids):
            convert.check_request_id(rid, f"request_ids[{index}]")
        if request.request_ids:
            return list(request.request_ids)
        if len(request.branch_id) > 64:
            raise InvalidArgument("branch_id", "at most 64 characters")
        if await self.center.branches.missing([request.branch_id]):
            raise NotFound(f"branch_id: no branch {request.branch_id}")
        return await self.store.waiting_of_branch(request.branch_id)

    @translate_errors
    async def ListEmergencies(
        self, request: spb.ListEmergenciesRequest, context: Context
    ) -> spb.ListEmergenciesReply:
        await self.auth.identify(context, "SupervisorService.ListEmergencies")
        active = await self.emergencies.active()
        return spb.ListEmergenciesReply(active=[emergency_to_pb(e) for e in active])

    @translate_errors
    async def ListFallbacks(
        self, request: spb.ListFallbacksRequest, context: Context
    ) -> spb.ListFallbacksReply:
        await self.auth.identify(context, "SupervisorService.ListFallbacks")
        if len(request.branch_id) > 64:
            raise InvalidArgument("branch_id", "at most 64 characters")
        for name in ("from_ms", "to_ms"):
            if getattr(request, name) < 0:
                raise InvalidArgument(name, "cannot be negative (0: unbounded)")
        if request.from_ms and request.to_ms and request.to_ms <= request.from_ms:
            raise InvalidArgument("to_ms", "must come after from_ms")
        if not 0 <= request.limit <= MAX_LIST:
            raise InvalidArgument("limit", f"between 0 (100) and {MAX_LIST}")
        fallbacks = await self.center.fallbacks.list(
            request.branch_id or None, request.from_ms, request.to_ms, request.limit or 100
        )
        return spb.ListFallbacksReply(
            records=[fallback_convert.fallback_to_pb(fallback) for fallback in fallbacks]
        )

    @translate_errors
    async def GetImage(
        self, request: cpb.RequestImageRequest, context: Context
    ) -> AsyncIterator[cpb.ImageChunk]:
        identity = await self.auth.identify(context, "SupervisorService.GetImage")
        async for chunk in serve_image(self.center, identity, request):
            yield chunk

    @translate_errors
    async def Overview(self, request: spb.OverviewRequest, context: Context) -> spb.QueueOverview:
        await self.auth.identify(context, "SupervisorService.Overview")
        return overview_to_pb(await self.store.overview())

    @translate_errors
    async def Position(self, request: spb.PositionRequest, context: Context) -> spb.PositionReply:
        await self.auth.identify(context, "SupervisorService.Position")
        convert.check_request_id(request.request_id)
        state, position, waiting = await self.store.position(request.request_id)
        return spb.PositionReply(
            request_id=request.request_id,
            state=convert.state_value(state),
            position=position,
            waiting=waiting,
        )

    # -- two-person moves (R6) -----------------------------------------------------

    @translate_errors
    async def RequestMove(self, request: spb.RequestMoveRequest, context: Context) -> spb.MoveReply:
        identity = await self.auth.identify(context, "SupervisorService.RequestMove")
        await self._sweep()
        reason = request.reason.strip()
        rid = request.request_id
        async with self.center.audited(identity, AuditAction.REPRIORITIZE_REQUEST, rid[:128],
                                       reason=reason[:NOTE_MAX_CHARS]) as audit:  # fmt: skip
            convert.check_request_id(rid)
            if not reason:
                raise InvalidArgument("reason", "required: say why this request should go first")
            if len(reason) > NOTE_MAX_CHARS:
                raise InvalidArgument("reason", f"at most {NOTE_MAX_CHARS} characters")
            move = await self.moves.request(rid, identity.user_id, reason, audit, self._lapse())
        self._changed()
        return await self._reply(move)

    @translate_errors
    async def ConfirmMove(self, request: spb.ConfirmMoveRequest, context: Context) -> spb.MoveReply:
        identity = await self.auth.identify(context, "SupervisorService.ConfirmMove")
        await self._sweep()
        rid = request.request_id
        async with self.center.audited(
            identity, AuditAction.REPRIORITIZE_CONFIRM, rid[:128]
        ) as audit:
            convert.check_request_id(rid)
            try:
                confirmed = await self.moves.confirm(rid, identity.user_id, audit, self._lapse())
            except MoveLapsed as lapsed:
                if lapsed.first:  # its lapse was staged
                    self.center.staged()
                raise
        self._changed()
        reply = await self._reply(confirmed.move)
        reply.state = spb.MOVE_STATE_CONFIRMED
        reply.confirmer = confirmed.confirmer
        reply.confirmed_at_ms = confirmed.at_ms
        return reply

    @translate_errors
    async def ListMoves(
        self, request: spb.ListMovesRequest, context: Context
    ) -> spb.ListMovesReply:
        await self.auth.identify(context, "SupervisorService.ListMoves")
        await self._sweep()
        reply = spb.ListMovesReply(at_ms=time.time_ns() // 1_000_000)
        for move in await self.moves.pending():
            reply.moves.append(await self._reply(move))
        return reply

    async def _reply(self, move: PendingMove) -> spb.MoveReply:
        """A pending move with the request's current state and place."""
        state, position, waiting = await self.store.position(move.request_id)
        return spb.MoveReply(
            request_id=move.request_id,
            requester=move.requester,
            reason=move.reason,
            state=spb.MOVE_STATE_PENDING,
            requested_at_ms=move.created_ms,
            expires_at_ms=move.expires_ms,
            request_state=convert.state_value(state),
            position=position,
            waiting=waiting,
        )

    async def _sweep(self) -> None:
        if await self.moves.sweep(self._lapse()):  # their lapses were staged
            self.center.staged()

    def _lapse(self) -> bytes:
        """The template of a lapse's audit record, which the script that sees the lapse
        completes and stages (stage_move_lapse in server/lua/_lib.lua)."""
        return self.center.stage(SYSTEM, LAPSE, "").body


def emergency_to_pb(emergency: Emergency) -> spb.Emergency:
    return spb.Emergency(
        emergency_id=emergency.emergency_id,
        reason=emergency.reason,
        branch_ids=list(emergency.branch_ids),
        declared_by=emergency.declared_by,
        declared_at_ms=emergency.declared_at_ms,
        ended_by=emergency.ended_by,
        ended_at_ms=emergency.ended_at_ms,
        end_note=emergency.end_note,
    )


def _hand_back_target(request: spb.HandBackRequest) -> str:
    """What a refused hand-back names, cut to what an audit record holds."""
    return (request.branch_id or ",".join(request.request_ids))[:128] or "-"


async def _snapshots(watch: QueueWatch) -> AsyncGenerator[spb.QueueSnapshot, None]:
    async with watch.subscribe() as snapshots:
        while True:
            yield await snapshots.get()
