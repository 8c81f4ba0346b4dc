"""SupervisorService: the queue as a supervisor sees it."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from authq.v1 import common_pb2 as cpb
from authq.v1 import supervisor_pb2 as spb
from authq.v1 import supervisor_pb2_grpc

from server.api import convert
from server.api.identity import Authenticator
from server.api.status import translate_errors
from server.store.queue_store import QueueStore

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class SupervisorServicer(supervisor_pb2_grpc.SupervisorServiceServicer):
    def __init__(self, store: QueueStore, auth: Authenticator) -> None:
        self.store = store
        self.auth = auth

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
