"""A typed async client for TellerService, used by the CLI, the simulator and the
benchmark."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc
from authq import wire
from authq.batching import BATCHES_METADATA
from authq.channel import AuthenticatedClient, ClientTLS, SessionStream
from authq.reconnect import UNANSWERED_TEXT, CapacityBackoff, store_refuses_writes
from authq.v1 import common_pb2 as cpb
from authq.v1 import review_pb2 as rpb
from authq.v1 import review_pb2_grpc, teller_pb2_grpc
from authq.v1 import teller_pb2 as tpb

from server.domain import transaction_rules as rules

ImageInput = tuple[str, bytes]  # (kind name such as "ID_FRONT", bytes)
# A submit that finds the center unavailable is retried after these pauses (it is
# idempotent by request id) before the teller is sent to the on-site fallback (R8);
# one that gets no answer within the deadline is not retried: the teller is waiting.
# One the center refuses at capacity is tried again with growing, jittered pauses
# (authq.reconnect.CapacityBackoff). Every try, and every pause, ends within
# SUBMIT_DEADLINE_S of the first.
SUBMIT_RETRY_PAUSES_S = (0.3, 1.0)
SUBMIT_DEADLINE_S = 30.0
Progress = Callable[[str, int, int], None]  # (kind, bytes sent, total)


def kind_value(kind: str) -> cpb.ImageKind.ValueType:
    try:
        return cpb.ImageKind.Value("IMAGE_KIND_" + kind.upper())
    except ValueError:
        raise ValueError(f"unknown image kind {kind!r}") from None


def new_request(
    business_type: str,
    amount_minor: int | None,
    currency: str,
    account: str,
    customer_name: str,
    *,
    memo: str = "",
    fields: Mapping[str, str] | None = None,
    urgent: bool = False,
    request_id: str | None = None,
    preparation_seconds: int = 0,
) -> tpb.SubmitRequest:
    """A SubmitRequest with a fresh request id unless one is given (a retry must
    reuse the id of the first try)."""
    transaction = cpb.Transaction(
        business_type=business_type,
        account=account,
        customer_name=customer_name,
        memo=memo,
        fields=dict(fields or {}),
    )
    if amount_minor is not None:
        transaction.amount.CopyFrom(cpb.Money(minor_units=amount_minor, currency=currency))
    return tpb.SubmitRequest(
        request_id=request_id or str(uuid.uuid4()),
        transaction=transaction,
        urgency=cpb.URGENCY_URGENT if urgent else cpb.URGENCY_NORMAL,
        preparation_seconds=preparation_seconds,
    )


# A submission the center would refuse, as ``field: problem``: the refusal of one of the
# center's own rules that need no policy (server/domain/transaction_rules.py). The catalog
# (which business types the center takes, which need an amount) is the center's policy
# in force, which a workstation cannot know.
InvalidRequest = rules.Malformed


def check_request(request: tpb.SubmitRequest) -> None:
    """Raises InvalidRequest, naming the field, for what the center would refuse of
    ``request`` that a workstation can tell alone: checked before a transaction is
    journaled for on-site authorization while the center cannot be reached (R8), since
    the center would refuse the record at its upload and never hold that fallback."""
    rules.request_id(request.request_id)
    tx = request.transaction
    rules.business_type(tx.business_type, "transaction.business_type")
    if tx.HasField("amount"):
        rules.amount(tx.amount.minor_units, tx.amount.currency, "transaction.amount")
    rules.account(tx.account, "transaction.account")
    rules.customer_name(tx.customer_name, "transaction.customer_name")
    rules.memo(tx.memo, "transaction.memo")
    rules.fields(tx.fields, "transaction.fields")
    rules.preparation_seconds(request.preparation_seconds)


def upload_chunks(kind: str, data: bytes, upload_id: str = "") -> list[cpb.ImageChunk]:
    header = cpb.ImageRef(kind=kind_value(kind), sha256=wire.sha256_hex(data), size_bytes=len(data))
    pieces = list(wire.chunks(data)) or [b""]
    return [
        cpb.ImageChunk(header=header if i == 0 else None, data=piece, upload_id=upload_id)
        for i, piece in enumerate(pieces)
    ]


class TellerClient(AuthenticatedClient):
    """TellerService for one logged-in teller: ``async with TellerClient(target,
    user, password) as teller`` logs in; the branch comes from the account."""

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
        self.stub = teller_pb2_grpc.TellerServiceStub(self.channel)
        self.review_stub = review_pb2_grpc.OnsiteReviewServiceStub(self.channel)
        # How submit() rides out a center at capacity; a command line sets its ``say``,
        # which also hears UNANSWERED_TEXT before a submit that got no answer is retried.
        self.at_capacity = CapacityBackoff()

    async def upload_image(
        self, kind: str, data: bytes, progress: Progress | None = None
    ) -> cpb.ImageRef:
        chunks = upload_chunks(kind, data)

        async def stream() -> AsyncIterator[cpb.ImageChunk]:
            sent = 0
            for chunk in chunks:
                yield chunk
                sent += len(chunk.data)
                if progress is not None:
                    progress(kind, sent, len(data))

        ref: cpb.ImageRef = await self.stub.UploadImage(stream(), metadata=self.metadata)
        ref.kind = kind_value(kind)
        return ref

    async def upload_images(
        self, images: Sequence[ImageInput], progress: Progress | None = None
    ) -> list[cpb.ImageRef]:
        return list(await asyncio.gather(*(self.upload_image(k, d, progress) for k, d in images)))

    async def submit(
        self,
        request: tpb.SubmitRequest,
        images: Sequence[ImageInput] = (),
        progress: Progress | None = None,
        sending: Callable[[], None] | None = None,
    ) -> tpb.SubmitReply:
        """Uploads the images, adds them to the ones the request already references,
        then submits; safe to call again with the same request after a lost reply.
        Retried while the center is UNAVAILABLE (SUBMIT_RETRY_PAUSES_S) or refuses it
        at capacity (``at_capacity``), not when its queue store refuses writes
        (``store_refuses_writes``): the answer, retries included, is waited for
        SUBMIT_DEADLINE_S from the first Submit. ``sending``
        is called as the Submit call goes out: from then on the center may hold the
        request, whatever becomes of the reply."""
        clock = self.at_capacity.clock
        # Uploads are not timed (a branch's line may be slow), only their retries; the
        # answer to the Submit is waited for SUBMIT_DEADLINE_S from its first try.
        deadline = clock() + SUBMIT_DEADLINE_S
        submitting = False
        unavailable = iter(SUBMIT_RETRY_PAUSES_S)
        told_unanswered = False
        tries = 0
        while True:
            tries += 1
            try:
                if images:
                    uploaded = await self.upload_images(images, progress)
                    have = {(ref.kind, ref.sha256) for ref in request.images}
                    request.images.extend(r for r in uploaded if (r.kind, r.sha256) not in have)
                    images = ()  # the center holds them: a retry only submits again
                if not submitting:
                    submitting, deadline = True, clock() + SUBMIT_DEADLINE_S
                if sending is not None:
                    sending()
                reply: tpb.SubmitReply = await self.stub.Submit(
                    request, metadata=self.metadata, timeout=max(deadline - clock(), 0.001)
                )
                return reply
            except grpc.aio.AioRpcError as exc:
                if store_refuses_writes(exc):
                    raise  # no retry cures it: only the center's operators can (R8)
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    # Re-raises what is not a refusal at capacity, or one that lasts.
                    await self.at_capacity.pause(exc, tries, deadline)
                    continue
                pause = next(unavailable, None)
                if pause is None or clock() + pause >= deadline:
                    raise
                if not told_unanswered and self.at_capacity.say is not None:
                    told_unanswered = True
                    self.at_capacity.say(UNANSWERED_TEXT)
                await asyncio.sleep(pause)

    async def report_fallbacks(
        self, records: Sequence[tpb.FallbackRecord]
    ) -> tpb.ReportFallbacksReply:
        """Uploads local fallback records (R8); safe to repeat."""
        reply: tpb.ReportFallbacksReply = await self.stub.ReportFallbacks(
            tpb.ReportFallbacksRequest(records=records), metadata=self.metadata
        )
        return reply

    async def get(self, request_id: str) -> cpb.RequestView:
        view: cpb.RequestView = await self.stub.Get(
            tpb.GetRequest(request_id=request_id), metadata=self.metadata
        )
        return view

    async def watch(self, request_id: str) -> AsyncGenerator[cpb.RequestUpdate, None]:
        """The request's latest change, then every further one until it is final.
        Closing the iterator early ends the call."""
        call = self.stub.Watch(tpb.WatchRequest(request_id=request_id), metadata=self.metadata)
        try:
            async for update in call:
                yield update
        finally:
            call.cancel()

    async def cancel(self, request_id: str, note: str = "") -> cpb.RequestUpdate:
        update: cpb.RequestUpdate = await self.stub.Cancel(
            tpb.CancelRequest(request_id=request_id, note=note), metadata=self.metadata
        )
        return update

    async def supply(
        self,
        request_id: str,
        images: Sequence[ImageInput],
        note: str = "",
        progress: Progress | None = None,
    ) -> cpb.RequestUpdate:
        refs = await self.upload_images(images, progress)
        update: cpb.RequestUpdate = await self.stub.Supply(
            tpb.SupplyRequest(request_id=request_id, images=refs, note=note),
            metadata=self.metadata,
        )
        return update

    async def image(self, request_id: str, sha256: str, rendition: str = "preview") -> bytes:
        """One image of a request of this branch: "original", or a watermarked
        "preview" or "thumbnail" (audited)."""
        try:
            value = cpb.Rendition.Value("RENDITION_" + rendition.strip().upper())
        except ValueError:
            raise ValueError(f"unknown rendition {rendition!r}") from None
        call = self.stub.GetImage(
            cpb.RequestImageRequest(request_id=request_id, sha256=sha256, rendition=value),
            metadata=self.metadata,
        )
        return b"".join([chunk.data async for chunk in call])

    async def pending_review(self) -> list[cpb.RequestView]:
        """For an on-site reviewer: the branch's requests awaiting review."""
        reply = await self.review_stub.Pending(rpb.PendingRequest(), metadata=self.metadata)
        return list(reply.requests)

    async def review(
        self, request_id: str, *, confirm: bool, checks: Sequence[str] = (), note: str = ""
    ) -> cpb.RequestUpdate:
        outcome = rpb.REVIEW_OUTCOME_CONFIRM if confirm else rpb.REVIEW_OUTCOME_SEND_BACK
        update: cpb.RequestUpdate = await self.review_stub.Review(
            rpb.ReviewRequest(request_id=request_id, outcome=outcome, checks=checks, note=note),
            metadata=self.metadata,
        )
        return update

    def session(self) -> TellerSessionClient:
        return TellerSessionClient(self)


class TellerSessionClient(SessionStream[tpb.TellerSessionIn]):
    """A workstation's long-lived session stream. Calls return when their answer
    arrives; every update of the requests submitted or watched here lands in
    ``updates``."""

    def __init__(self, client: TellerClient) -> None:
        super().__init__(
            lambda out: client.stub.Session(out, metadata=client.metadata + BATCHES_METADATA),
            tpb.TellerSessionIn,
            batch=lambda messages: tpb.TellerSessionIn(
                batch=tpb.TellerSessionInBatch(messages=messages)
            ),
            alone=lambda message: message.WhichOneof("body") == "chunk",
        )
        self.client = client
        self.updates: asyncio.Queue[cpb.RequestUpdate] = asyncio.Queue()

    def unsolicited(self, message: Any) -> bool:
        if message.WhichOneof("body") == "update":
            self.updates.put_nowait(message.update)
            return not message.ref  # with a ref it also answers a call
        return False

    async def upload_image(self, kind: str, data: bytes) -> cpb.ImageRef:
        ref = self.next_ref()
        future = self.expect(ref)
        for chunk in upload_chunks(kind, data, upload_id=ref):
            self.send(ref, chunk=chunk)
        image: cpb.ImageRef = await future
        image.kind = kind_value(kind)
        return image

    async def submit(
        self, request: tpb.SubmitRequest, images: Sequence[ImageInput] = ()
    ) -> tpb.SubmitReply:
        if images:
            uploaded = await asyncio.gather(*(self.upload_image(k, d) for k, d in images))
            have = {(ref.kind, ref.sha256) for ref in request.images}
            request.images.extend(r for r in uploaded if (r.kind, r.sha256) not in have)
        reply: tpb.SubmitReply = await self.request(submit=request)
        return reply

    async def watch(self, request_id: str) -> cpb.RequestUpdate:
        update: cpb.RequestUpdate = await self.request(
            watch=tpb.WatchRequest(request_id=request_id)
        )
        return update

    async def cancel(self, request_id: str, note: str = "") -> cpb.RequestUpdate:
        update: cpb.RequestUpdate = await self.request(
            cancel=tpb.CancelRequest(request_id=request_id, note=note)
        )
        return update
