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

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from authq.v1 import common_pb2 as cpb
from authq.v1 import supervisor_pb2 as spb
from authq.v1 import supervisor_pb2_grpc

from server.api import convert
from server.api.identity import Authenticator
from server.api.status import translate_errors
from server.center import Center, Identity
from server.domain.reasons import NOTE_MAX_CHARS
from server.errors import AuthqError, InvalidArgument
from server.store.audit import AuditAction, AuditEntry, AuditLog
from server.store.emergencies import Emergency, EmergencyStore
from server.store.moves import MoveLapsed, MoveStore, PendingMove
from server.store.queue_store import QueueStore

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
AuditDetails: TypeAlias = dict[str, str | int]

LAPSE = "REPRIORITIZE_LAPSE"
SYSTEM = Identity(user_id="system", origin="server")


class SupervisorServicer(supervisor_pb2_grpc.SupervisorServiceServicer):
    def __init__(
        self,
        store: QueueStore,
        auth: Authenticator,
        moves: MoveStore,
        audit: AuditLog,
        center: Center,
        emergencies: EmergencyStore,
    ) -> None:
        self.store = store
        self.auth = auth
        self.moves = moves
        self.audit = audit
        self.center = center
        self.emergencies = emergencies

    @translate_errors
    async def DeclareEmergency(
        self, request: spb.DeclareEmergencyRequest, context: Context
    ) -> spb.Emergency:
        identity = await self.auth.identify(context, "SupervisorService.DeclareEmergency")
        reason = request.reason.strip()
        if not reason or len(reason) > 500:
            raise InvalidArgument("reason", "an emergency needs a reason (R8), 1-500 characters")
        branches = list(dict.fromkeys(b.strip() for b in request.branch_ids if b.strip()))
        async with self.center.audited(identity, "EMERGENCY_DECLARE", ",".join(branches) or "*",
                                       reason=reason):  # fmt: skip
            emergency = await self.emergencies.declare(reason, branches, identity.user_id)
        return emergency_to_pb(emergency)

    @translate_errors
    async def EndEmergency(
        self, request: spb.EndEmergencyRequest, context: Context
    ) -> spb.Emergency:
        identity = await self.auth.identify(context, "SupervisorService.EndEmergency")
        async with self.center.audited(identity, "EMERGENCY_END", request.emergency_id,
                                       note=request.note[:500]):  # fmt: skip
            emergency = await self.emergencies.end(
                request.emergency_id, identity.user_id, request.note[:500]
            )
        return emergency_to_pb(emergency)

    @translate_errors
    async def ListEmergencies(
        self, request: spb.ListEmergenciesRequest, context: Context
    ) -> spb.ListEmergenciesReply:
        await self.auth.identify(context, "SupervisorService.ListEmergencies")
        active = await self.emergencies.active()
        return spb.ListEmergenciesReply(active=[emergency_to_pb(e) for e in active])

    @translate_errors
    async def Overview(self, request: spb.OverviewRequest, context: Context) -> spb.QueueOverview:
        await self.auth.identify(context, "SupervisorService.Overview")
        overview = await self.store.overview()
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
                    urgency=cpb.URGENCY_URGENT
                    if lane.priority.urgency == 2
                    else cpb.URGENCY_NORMAL,
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
        async with self._audited(identity, AuditAction.REPRIORITIZE_REQUEST, rid) as details:
            details["reason"] = reason[:NOTE_MAX_CHARS]
            convert.check_request_id(rid)
            if not reason:
                raise InvalidArgument("reason", "required: say why this request should go first")
            if len(reason) > NOTE_MAX_CHARS:
                raise InvalidArgument("reason", f"at most {NOTE_MAX_CHARS} characters")
            move, replaced = await self.moves.request(rid, identity.user_id, reason)
            if replaced is not None:
                await self._audit_lapse(replaced)
            details["expires_at_ms"] = move.expires_ms
        return await self._reply(move)

    @translate_errors
    async def ConfirmMove(self, request: spb.ConfirmMoveRequest, context: Context) -> spb.MoveReply:
        identity = await self.auth.identify(context, "SupervisorService.ConfirmMove")
        await self._sweep()
        rid = request.request_id
        async with self._audited(identity, AuditAction.REPRIORITIZE_CONFIRM, rid) as details:
            convert.check_request_id(rid)
            try:
                confirmed = await self.moves.confirm(rid, identity.user_id)
            except MoveLapsed as lapsed:
                if lapsed.first:
                    await self._audit_lapse(lapsed.move)
                raise
            details.update(
                requester=confirmed.move.requester,
                reason=confirmed.move.reason,
                old_score_us=confirmed.old_score_us,
                new_score_us=confirmed.new_score_us,
            )
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
        for move in await self.moves.sweep():
            await self._audit_lapse(move)

    async def _audit_lapse(self, move: PendingMove) -> None:
        await self._audit(
            SYSTEM,
            LAPSE,
            move.request_id,
            f"LAPSED: not confirmed within {move.window_s:g} s (R6)",
            {
                "requester": move.requester,
                "reason": move.reason,
                "requested_at_ms": move.created_ms,
                "expires_at_ms": move.expires_ms,
            },
        )

    @contextlib.asynccontextmanager
    async def _audited(
        self, identity: Identity, action: str, target: str
    ) -> AsyncIterator[AuditDetails]:
        """Audits the block's action once done (outcome OK), or its refusal (outcome
        the message naming the rule); the block may add details."""
        details: AuditDetails = {}
        try:
            yield details
        except AuthqError as exc:
            await self._audit(identity, action, target, str(exc), details)
            raise
        await self._audit(identity, action, target, "OK", details)

    async def _audit(
        self, identity: Identity, action: str, target: str, outcome: str, details: AuditDetails
    ) -> None:
        await self.audit.append(
            AuditEntry(
                actor=identity.user_id,
                role=identity.role,
                origin=identity.origin,
                action=action,
                target=target[:128],  # an invalid id may be of any length
                outcome=outcome[:NOTE_MAX_CHARS],
                details=details,
            )
        )


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
