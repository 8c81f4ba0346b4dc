"""A typed async client for AuthorizerService and SupervisorService."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import grpc
from authq.batching import BATCHES_METADATA
from authq.channel import AuthenticatedClient, ClientTLS, SessionStream
from authq.v1 import authorizer_pb2 as apb
from authq.v1 import authorizer_pb2_grpc, supervisor_pb2_grpc
from authq.v1 import common_pb2 as cpb
from authq.v1 import supervisor_pb2 as spb
from authq.v1 import teller_pb2 as tpb

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


def rendition_value(rendition: str) -> cpb.Rendition.ValueType:
    try:
        return cpb.Rendition.Value("RENDITION_" + rendition.strip().upper())
    except ValueError:
        raise ValueError(
            f"unknown rendition {rendition!r}: original, preview or thumbnail"
        ) from None


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

    async def image(self, request_id: str, sha256: str, rendition: str = "preview") -> bytes:
        """One image of a held item, watermarked: "preview" or "thumbnail" (R14)."""
        call = self.stub.GetImage(
            apb.GetImageRequest(
                request_id=request_id, sha256=sha256, rendition=rendition_value(rendition)
            ),
            metadata=self.metadata,
        )
        return b"".join([chunk.data async for chunk in call])

    async def supervisor_image(
        self, request_id: str, sha256: str, rendition: str = "preview"
    ) -> bytes:
        """For a supervisor or director: one image of any request (audited)."""
        call = self.supervisor.GetImage(
            cpb.RequestImageRequest(
                request_id=request_id, sha256=sha256, rendition=rendition_value(rendition)
            ),
            metadata=self.metadata,
        )
        return b"".join([chunk.data async for chunk in call])

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

    async def fallbacks(
        self, branch_id: str = "", from_ms: int = 0, to_ms: int = 0, limit: int = 0
    ) -> list[tpb.FallbackRecord]:
        """The local fallbacks tellers reported (R8), the most recent first."""
        reply: spb.ListFallbacksReply = await self.supervisor.ListFallbacks(
            spb.ListFallbacksRequest(branch_id=branch_id, from_ms=from_ms, to_ms=to_ms,
                                     limit=limit),
            metadata=self.metadata,
        )  # fmt: skip
        return list(reply.records)

    async def declare_emergency(self, reason: str, branch_ids: Sequence[str] = ()) -> spb.Emergency:
        """Puts the center (no branches) or the given branches on on-site authorization."""
        reply: spb.Emergency = await self.supervisor.DeclareEmergency(
            spb.DeclareEmergencyRequest(reason=reason, branch_ids=branch_ids),
            metadata=self.metadata,
        )
        return reply

    async def hand_back(
        self, reason: str, request_ids: Sequence[str] = (), branch_id: str = ""
    ) -> spb.HandBackReply:
        """Hands waiting requests (or all of a branch's) back to their branches (R8)."""
        reply: spb.HandBackReply = await self.supervisor.HandBack(
            spb.HandBackRequest(request_ids=request_ids, branch_id=branch_id, reason=reason),
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

    async def watch_queue(self) -> AsyncGenerator[spb.QueueSnapshot, None]:
        """The live queue: a snapshot at once, then one per change (server-pushed)."""
        call = self.supervisor.WatchQueue(spb.WatchQueueRequest(), metadata=self.metadata)
        async for snapshot in call:
            yield snapshot

    async def set_account_enabled(
        self, user_id: str, enabled: bool, reason: str = ""
    ) -> spb.AccountStatusReply:
        """Disables an authorizer for leave, or enables it again (R12)."""
        reply: spb.AccountStatusReply = await self.supervisor.SetAccountEnabled(
            spb.SetAccountEnabledRequest(user_id=user_id, enabled=enabled, reason=reason),
            metadata=self.metadata,
        )
        return reply

    def session(self) -> AuthorizerSessionClient:
        return AuthorizerSessionClient(self)


class AuthorizerSessionClient(SessionStream[apb.AuthorizerSessionIn]):
    """A console's session stream: ``offers`` receives items as the server hands
    them over (one per credit granted); decisions return their update. Leases are
    renewed by the server while the stream is open."""

    def __init__(self, client: AuthorizerClient) -> None:
        super().__init__(
            lambda out: client.stub.Session(out, metadata=client.metadata + BATCHES_METADATA),
            apb.AuthorizerSessionIn,
            batch=lambda messages: apb.AuthorizerSessionIn(
                batch=apb.AuthorizerSessionInBatch(messages=messages)
            ),
        )
        self.client = client
        self.offers: asyncio.Queue[apb.Offer] = asyncio.Queue()
        # lease_lost messages: the lease, and the change that took the item away when
        # the server saw one (``cause``).
        self.lost: asyncio.Queue[apb.AuthorizerSessionOut] = asyncio.Queue()

    def unsolicited(self, message: Any) -> bool:
        body = message.WhichOneof("body")
        if body == "offer":
            self.offers.put_nowait(message.offer)
            return True
        if body == "lease_lost":
            self.lost.put_nowait(message)
            return True
        return False

    def credit(self, count: int = 1) -> None:
        self.send(self.next_ref(), credit=count)

    async def closed(self) -> None:
        """Returns once the stream has ended (the server closed it or went away)."""
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await asyncio.shield(self._reader)

    async def decide(
        self,
        request_id: str,
        token: int,
        outcome: str,
        *,
        reason_code: str = "",
        note: str = "",
        kinds: Sequence[str] = (),
        then_credit: int = 0,
    ) -> cpb.RequestUpdate:
        """Decides a held item; ``then_credit`` asks for that many more offers once it
        is decided (or refused), in the same message."""
        update: cpb.RequestUpdate = await self.request(
            then_credit=then_credit,
            decide=apb.DecideRequest(
                request_id=request_id,
                fencing_token=token,
                outcome=OUTCOMES[outcome],
                reason_code=reason_code,
                note=note,
                requested_kinds=kind_values(kinds),
            ),
        )
        return update

    async def release(self, request_id: str, token: int, note: str = "") -> cpb.RequestUpdate:
        update: cpb.RequestUpdate = await self.request(
            release=apb.ReleaseRequest(request_id=request_id, fencing_token=token, note=note)
        )
        return update
