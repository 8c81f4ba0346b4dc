"""AuthorizerService: what a central authorizer's console calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from authq.batching import wants_batches
from authq.v1 import authorizer_pb2 as apb
from authq.v1 import authorizer_pb2_grpc
from authq.v1 import common_pb2 as cpb

from server.api import convert
from server.api.authorizer_session import AuthorizerSession, offer_to_pb, outcome_of
from server.api.identity import Authenticator
from server.api.session_guard import while_login_holds
from server.api.status import translate_errors
from server.center import Center, Identity
from server.images.api import serve_image

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class AuthorizerServicer(authorizer_pb2_grpc.AuthorizerServiceServicer):
    def __init__(self, center: Center, lease_ms: int, auth: Authenticator) -> None:
        self.center = center
        self.lease_ms = lease_ms
        self.auth = auth

    async def _user(self, context: Context, method: str) -> Identity:
        return await self.auth.identify(context, f"AuthorizerService.{method}")

    @translate_errors
    async def Next(self, request: apb.NextRequest, context: Context) -> apb.Offer:
        identity = await self._user(context, "Next")
        # A Next may wait long for work: it is not handed any once its login no longer
        # holds (the account disabled, or its roles or qualification changed).
        claim = await while_login_holds(
            self.center.next_item(identity), self.auth.login_check(context, identity)
        )
        # Claimed, not yet handed over: if the reply cannot be built, or the call is
        # cancelled first, the item goes back now rather than when its lease ends.
        with self.center.dispatcher.handing_over(identity.user_id, claim):
            return offer_to_pb(claim)

    @translate_errors
    async def Renew(self, request: apb.RenewRequest, context: Context) -> apb.Lease:
        identity = await self._user(context, "Renew")
        convert.check_request_id(request.request_id)
        deadline = await self.center.renew(
            identity.user_id, request.request_id, request.fencing_token
        )
        return apb.Lease(
            request_id=request.request_id,
            fencing_token=request.fencing_token,
            expires_at_ms=deadline,
        )

    @translate_errors
    async def Decide(self, request: apb.DecideRequest, context: Context) -> cpb.RequestUpdate:
        identity = await self._user(context, "Decide")
        convert.check_request_id(request.request_id)
        entry = await self.center.decide(
            identity,
            request.request_id,
            request.fencing_token,
            outcome_of(request.outcome),
            request.reason_code,
            request.note,
            [
                convert.kind_name(kind, f"requested_kinds[{i}]")
                for i, kind in enumerate(request.requested_kinds)
            ],
        )
        return convert.entry_to_pb(entry)

    @translate_errors
    async def Release(self, request: apb.ReleaseRequest, context: Context) -> cpb.RequestUpdate:
        identity = await self._user(context, "Release")
        convert.check_request_id(request.request_id)
        entry = await self.center.release(
            identity,
            request.request_id,
            request.fencing_token,
            request.note,
        )
        return convert.entry_to_pb(entry)

    @translate_errors
    async def SetAway(self, request: apb.SetAwayRequest, context: Context) -> apb.AwayReply:
        await self.center.set_away(await self._user(context, "SetAway"), request.away)
        return apb.AwayReply(away=request.away)

    @translate_errors
    async def GetImage(
        self, request: apb.GetImageRequest, context: Context
    ) -> AsyncIterator[cpb.ImageChunk]:
        identity = await self._user(context, "GetImage")
        async for chunk in serve_image(self.center, identity, request):
            yield chunk

    @translate_errors
    async def Session(
        self, request_iterator: AsyncIterator[apb.AuthorizerSessionIn], context: Context
    ) -> AsyncIterator[apb.AuthorizerSessionOut]:
        identity = await self._user(context, "Session")
        session = AuthorizerSession(
            self.center, identity, self.lease_ms, wants_batches(context.invocation_metadata())
        )
        login_holds = self.auth.login_check(context, identity)
        async for message in session.run(request_iterator, login_holds):
            yield message
