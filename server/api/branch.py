"""BranchService: extended-hours windows (R9) and where a branch stands (R9, R10).

A window is asked for by the branch's own staff with a reason and decided once by a
supervisor or director; only an approved window opens the branch (and the center for
it) outside the policy's hours. Every request and decision is audited (actions
HOURS_WINDOW_REQUEST, HOURS_WINDOW_DECIDE)."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from authq.v1 import branch_pb2 as bpb
from authq.v1 import branch_pb2_grpc

from server.accounts.model import BRANCH_ROLES
from server.api.identity import Authenticator
from server.api.status import translate_errors
from server.center import Center, Identity
from server.errors import InvalidArgument, NotFound, PermissionDenied
from server.policy.enrollment import check_enrollment
from server.policy.hours import may_submit
from server.store.branches import WindowRecord, WindowState

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

_STATES = {
    WindowState.PENDING: bpb.WINDOW_STATE_PENDING,
    WindowState.APPROVED: bpb.WINDOW_STATE_APPROVED,
    WindowState.REFUSED: bpb.WINDOW_STATE_REFUSED,
}


def window_to_pb(record: WindowRecord) -> bpb.ExtendedHoursWindow:
    return bpb.ExtendedHoursWindow(
        window_id=record.window_id,
        branch_id=record.branch_id,
        start_ms=record.start_ms,
        end_ms=record.end_ms,
        reason=record.reason,
        requested_by=record.requested_by,
        requested_at_ms=record.requested_at_ms,
        state=_STATES[record.state],
        decided_by=record.decided_by,
        decided_at_ms=record.decided_at_ms,
        note=record.note,
    )


def _branch_staff(identity: Identity) -> bool:
    return bool(identity.roles & BRANCH_ROLES)


def _own_branch(identity: Identity, branch_id: str) -> str:
    """Branch staff act for their own branch only (R13); others name the branch."""
    if _branch_staff(identity):
        if branch_id and branch_id != identity.branch_id:
            raise PermissionDenied(
                f"branch {branch_id} is not yours: branch staff see only their own branch (R13)"
            )
        return identity.branch_id
    if not branch_id:
        raise InvalidArgument("branch_id", "name the branch")
    return branch_id


class BranchServicer(branch_pb2_grpc.BranchServiceServicer):
    def __init__(self, center: Center, auth: Authenticator) -> None:
        self.center = center
        self.auth = auth

    @translate_errors
    async def RequestExtendedHours(
        self, request: bpb.RequestExtendedHoursRequest, context: Context
    ) -> bpb.ExtendedHoursWindow:
        identity = await self.auth.identify(context, "BranchService.RequestExtendedHours")
        async with self.center.audited(identity, "HOURS_WINDOW_REQUEST", identity.branch_id,
                                       start_ms=request.start_ms, end_ms=request.end_ms,
                                       reason=request.reason[:200]) as audit:  # fmt: skip
            record = await self.center.branches.request_window(
                identity.branch_id, request.start_ms, request.end_ms, request.reason,
                identity.user_id, audit,
            )  # fmt: skip
        return window_to_pb(record)

    @translate_errors
    async def ListExtendedHours(
        self, request: bpb.ListExtendedHoursRequest, context: Context
    ) -> bpb.ListExtendedHoursReply:
        identity = await self.auth.identify(context, "BranchService.ListExtendedHours")
        if _branch_staff(identity) or request.branch_id:
            records = await self.center.branches.windows(_own_branch(identity, request.branch_id))
        else:
            records = await self.center.branches.windows(None)
        return bpb.ListExtendedHoursReply(windows=[window_to_pb(r) for r in records])

    @translate_errors
    async def DecideExtendedHours(
        self, request: bpb.DecideExtendedHoursRequest, context: Context
    ) -> bpb.ExtendedHoursWindow:
        identity = await self.auth.identify(context, "BranchService.DecideExtendedHours")
        async with self.center.audited(identity, "HOURS_WINDOW_DECIDE", request.window_id or "-",
                                       approve=int(request.approve)) as audit:  # fmt: skip
            if not request.window_id:  # checked in here: the refusal is recorded (R15)
                raise InvalidArgument("window_id", "name the window")
            record = await self.center.branches.decide_window(
                request.window_id, request.approve, identity.user_id, request.note, audit
            )
        return window_to_pb(record)

    @translate_errors
    async def BranchStatus(
        self, request: bpb.BranchStatusRequest, context: Context
    ) -> bpb.BranchStatusReply:
        identity = await self.auth.identify(context, "BranchService.BranchStatus")
        branch_id = _own_branch(identity, request.branch_id)
        branches = self.center.branches
        branches.forget(branch_id)  # a person asking wants the current answer
        if await branches.missing([branch_id]):
            raise NotFound(f"no branch {branch_id[:64]}")
        facts = await branches.facts(branch_id)
        hours = self.center.policy.loaded.policy.hours
        verdict = may_submit(
            hours.center, hours.for_branch(branch_id), self.center.clock(), facts.windows
        )
        enrollment = facts.enrollment
        refusal = check_enrollment(enrollment, "")
        return bpb.BranchStatusReply(
            branch_id=branch_id,
            region=facts.region,
            enrollment=enrollment.status.value,
            suspended_types=sorted(enrollment.suspended_types),
            enrollment_reason=enrollment.reason,
            open_now=verdict.open and refusal is None,
            hours=verdict.reason,
            windows=[window_to_pb(r) for r in await branches.windows(branch_id)],
        )
