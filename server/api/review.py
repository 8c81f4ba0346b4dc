"""OnsiteReviewService: the branch's on-site reviewer confirms or sends back
high-value and high-risk requests before they reach the center (R2)."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from authq.v1 import common_pb2 as cpb
from authq.v1 import review_pb2 as rpb
from authq.v1 import review_pb2_grpc

from server.api import convert
from server.api.identity import Authenticator
from server.api.status import translate_errors
from server.center import Center
from server.errors import InvalidArgument

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class OnsiteReviewServicer(review_pb2_grpc.OnsiteReviewServiceServicer):
    def __init__(self, center: Center, auth: Authenticator) -> None:
        self.center = center
        self.auth = auth

    @translate_errors
    async def Pending(self, request: rpb.PendingRequest, context: Context) -> rpb.PendingReply:
        identity = await self.auth.identify(context, "OnsiteReviewService.Pending")
        records = await self.center.pending_review(identity)
        return rpb.PendingReply(requests=[convert.record_to_pb(record) for record in records])

    @translate_errors
    async def Review(self, request: rpb.ReviewRequest, context: Context) -> cpb.RequestUpdate:
        identity = await self.auth.identify(context, "OnsiteReviewService.Review")
        convert.check_request_id(request.request_id)
        if request.outcome not in (rpb.REVIEW_OUTCOME_CONFIRM, rpb.REVIEW_OUTCOME_SEND_BACK):
            raise InvalidArgument("outcome", "must be CONFIRM or SEND_BACK")
        entry = await self.center.review(
            identity,
            request.request_id,
            confirm=request.outcome == rpb.REVIEW_OUTCOME_CONFIRM,
            checks=list(request.checks),
            note=request.note,
        )
        return convert.entry_to_pb(entry)
