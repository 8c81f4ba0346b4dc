"""A typed async client for AuthorizerService and SupervisorService."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from authq.channel import AuthenticatedClient, ClientTLS, SessionStream
from authq.v1 import authorizer_pb2 as apb
from authq.v1 import authorizer_pb2_grpc, supervisor_pb2_grpc
from authq.v1 import common_pb2 as cpb
from authq.v1 import supervisor_pb2 as spb

OUTCOMES = {
    "approve": apb.OUTCOME_APPROVE,
    "reject": apb.OUTCOME_REJECT,
    "ask": apb.OUTCOME_ASK_SUPPLEMENT,
}


def kind_values(kinds: Sequence[str]) -> list[cpb.ImageKind.ValueType]:
    values = []
    for kind in kinds:
        try:
            values.append(cpb.ImageKind.Value("IMAGE_KIND_" + kind.strip().upper()))
        except ValueError:
            raise ValueError(f"unknown image kind {kind!r}") from None
    return values


class AuthorizerClient(AuthenticatedClient):
    """AuthorizerService and SupervisorService for one logged-in member of the
    center: ``async with AuthorizerClient(target, user, password) as client``."""

    def __init__(
        self,
        target: str,
        user_id: str,
        password: str = "",
        *,
        token: str = "",
        channel: grpc.aio.Channel | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        super().__init__(target, user_id, password, token=token, channel=channel, tls=tls)
        self.stub = authorizer_pb2_grpc.AuthorizerServiceStub(self.channel)
        self.supervisor = supervisor_pb2_grpc.SupervisorServiceStub(self.channel)

    async def next(self, timeout: float | None = None) -> apb.Offer:  # noqa: ASYNC109 - a gRPC deadline
        """Waits for the next item (DEADLINE_EXCEEDED after ``timeout`` seconds)."""
        offer: apb.Offer = await self.stub.Next(
            apb.NextRequest(), metadata=self.metadata, timeout=timeout
        )
        return offer

    async def decide(
        self,
        request_id: str,
        token: int,
        outcome: str,
        *,
        reason_code: str = "",
        note: str = "",
        kinds: Sequence[str] = (),
    ) -> cpb.RequestUpdate:
        update: cpb.RequestUpdate = await self.stub.Decide(
            apb.DecideRequest(
                request_id=request_id,
                fencing_token=token,
                outcome=OUTCOMES[outcome],
                reason_code=reason_code,
                note=note,
                requested_kinds=kind_values(kinds),
            ),
            metadata=self.metadata,
        )
        return update

    async def release(self, request_id: str, token: int, note: str = "") -> cpb.RequestUpdate:
        update: cpb.RequestUpdate = await self.stub.Release(
            apb.ReleaseRequest(request_id=request_id, fencing_token=token, note=note),
            metadata=self.metadata,
        )
        return update

    async def renew(self, request_id: str, token: int) -> apb.Lease:
        lease: apb.Lease = await self.stub.Renew(
            apb.RenewRequest(request_id=request_id, fencing_token=token), metadata=self.metadata
        )
        return lease

    @contextlib.asynccontextmanager
    async def holding(self, offer: apb.Offer) -> AsyncIterator[apb.Lease]:
        """Keeps the lease of a taken item alive while the block runs (a session
        stream needs none of this: the server renews for it)."""
        lease = offer.lease
        period = max(0.05, (lease.expires_at_ms - offer.request.history[-1].at_ms) / 3000)

        async def renew_forever() -> None:
            while True:
                await asyncio.sleep(period)
                await self.renew(lease.request_id, lease.fencing_token)

        renewer = asyncio.create_task(renew_forever())
        try:
            yield lease
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await renewer

    async def set_away(self, away: bool) -> bool:
        """Away: no new items are offered (items held stay held); back: offers resume."""
        reply: apb.AwayReply = await self.stub.SetAway(
            apb.SetAwayRequest(away=away), metadata=self.metadata
        )
        return reply.away

    async def image(self, request_id: str, sha256: str) -> bytes:
        parts = []
        call = self.stub.GetImage(
            apb.GetImageRequest(request_id=request_id, sha256=sha256), metadata=self.metadata
        )
        async for chunk in call:
            parts.append(chunk.data)
        return b"".join(parts)

    async def overview(self) -> spb.QueueOverview:
        reply: spb.QueueOverview = await self.supervisor.Overview(
            spb.OverviewRequest(), metadata=self.metadata
        )
        return reply

    async def position(self, request_id: str) -> spb.PositionReply:
        reply: spb.PositionReply = await self.supervisor.Position(
            spb.PositionRequest(request_id=request_id), metadata=self.metadata
        )
        return reply

    async def request_move(self, request_id: str, reason: str) -> spb.MoveReply:
        """Asks to move a waiting request to the front (R6): a second supervisor or
        director must confirm it before it lapses."""
        reply: spb.MoveReply = await self.supervisor.RequestMove(
            spb.RequestMoveRequest(request_id=request_id, reason=reason), metadata=self.metadata
        )
        return reply

    async def confirm_move(self, request_id: str) -> spb.MoveReply:
        """Confirms another person's pending move: the request goes to the front."""
        reply: spb.MoveReply = await self.supervisor.ConfirmMove(
            spb.ConfirmMoveRequest(request_id=request_id), metadata=self.metadata
        )
        return reply

    async def moves(self) -> spb.ListMovesReply:
        """The moves awaiting confirmation."""
        reply: spb.ListMovesReply = await self.supervisor.ListMoves(
            spb.ListMovesRequest(), metadata=self.metadata
        )
        return reply

    async def declare_emergency(self, reason: str, branch_ids: Sequence[str] = ()) -> spb.Emergency:
        """Puts the center (no branches) or the given branches on on-site authorization."""
        reply: spb.Emergency = await self.supervisor.DeclareEmergency(
            spb.DeclareEmergencyRequest(reason=reason, branch_ids=branch_ids),
            metadata=self.metadata,
        )
        return reply

    async def end_emergency(self, emergency_id: str, note: str = "") -> spb.Emergency:
        reply: spb.Emergency = await self.supervisor.EndEmergency(
            spb.EndEmergencyRequest(emergency_id=emergency_id, note=note), metadata=self.metadata
        )
        return reply

    async def emergencies(self) -> list[spb.Emergency]:
        reply = await self.supervisor.ListEmergencies(
            spb.ListEmergenciesRequest(), metadata=self.metadata
        )
        return list(reply.active)

    def session(self) -> AuthorizerSessionClient:
        return AuthorizerSessionClient(self)


class AuthorizerSessionClient(SessionStream[apb.AuthorizerSessionIn]):
    """A console's session stream: ``offers`` receives items as the server hands
    them over (one per credit granted); decisions return their update. Leases are
    renewed by the server while the stream is open."""

    def __init__(self, client: AuthorizerClient) -> None:
        super().__init__(
            lambda out: client.stub.Session(out, metadata=client.metadata),
            apb.AuthorizerSessionIn,
        )
        self.client = client
        self.offers: asyncio.Queue[apb.Offer] = asyncio.Queue()
        self.lost: asyncio.Queue[apb.Lease] = asyncio.Queue()

    def unsolicited(self, message: Any) -> bool:
        body = message.WhichOneof("body")
        if body == "offer":
            self.offers.put_nowait(message.offer)
            return True
        if body == "lease_lost":
            self.lost.put_nowait(message.lease_lost)
            return True
        return False

    def credit(self, count: int = 1) -> None:
        self.send(self.next_ref(), credit=count)

    async def decide(
        self,
        request_id: str,
        token: int,
        outcome: str,
        *,
        reason_code: str = "",
        note: str = "",
        kinds: Sequence[str] = (),
    ) -> cpb.RequestUpdate:
        update: cpb.RequestUpdate = await self.request(
            decide=apb.DecideRequest(
                request_id=request_id,
                fencing_token=token,
                outcome=OUTCOMES[outcome],
                reason_code=reason_code,
                note=note,
                requested_kinds=kind_values(kinds),
            )
        )
        return update

    async def release(self, request_id: str, token: int, note: str = "") -> cpb.RequestUpdate:
        update: cpb.RequestUpdate = await self.request(
            release=apb.ReleaseRequest(request_id=request_id, fencing_token=token, note=note)
        )
        return update
