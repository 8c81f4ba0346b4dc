"""Bad input gets a precise status naming the field or rule; the server stays up and
nothing is half-written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from authq import wire
from authq.channel import open_channel
from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb
from authq.v1 import teller_pb2_grpc

from tests.conftest import RunningServer
from tests.helpers import images, request, standard_images

Mutation = Callable[[tpb.SubmitRequest], None]


def _set(path: str, value: object) -> Mutation:
    def mutate(message: tpb.SubmitRequest) -> None:
        *parents, leaf = path.split(".")
        target = message
        for part in parents:
            target = getattr(target, part)
        setattr(target, leaf, value)

    return mutate


def _clear(field: str) -> Mutation:
    return lambda message: message.ClearField(field)  # type: ignore[arg-type]


def _clear_amount(message: tpb.SubmitRequest) -> None:
    message.transaction.ClearField("amount")


def _bad_image_kind(message: tpb.SubmitRequest) -> None:
    message.images.add(kind=cpb.IMAGE_KIND_UNSPECIFIED, sha256="a" * 64)


def _bad_sha(message: tpb.SubmitRequest) -> None:
    message.images.add(kind=cpb.IMAGE_KIND_ID_FRONT, sha256="not-a-hash")


def _unknown_image(message: tpb.SubmitRequest) -> None:
    message.images.add(kind=cpb.IMAGE_KIND_ID_FRONT, sha256="b" * 64)


def _drop_voucher(message: tpb.SubmitRequest) -> None:
    kept = [ref for ref in message.images if ref.kind != cpb.IMAGE_KIND_VOUCHER]
    del message.images[:]
    message.images.extend(kept)


def _too_many_fields(message: tpb.SubmitRequest) -> None:
    for i in range(40):
        message.transaction.fields[f"k{i}"] = "v"


BAD_SUBMITS: list[tuple[str, Mutation, grpc.StatusCode, str]] = [
    ("missing request id", _set("request_id", ""), grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    ("short request id", _set("request_id", "abc"), grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    (
        "request id with spaces",
        _set("request_id", "has spaces in it"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "request_id",
    ),
    ("missing transaction", _clear("transaction"), grpc.StatusCode.INVALID_ARGUMENT, "transaction"),
    (
        "missing business type",
        _set("transaction.business_type", ""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "transaction.business_type",
    ),
    (
        "unknown business type",
        _set("transaction.business_type", "LOTTERY"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown business type",
    ),
    ("missing amount", _clear_amount, grpc.StatusCode.INVALID_ARGUMENT, "transaction.amount"),
    (
        "negative amount",
        _set("transaction.amount.minor_units", -5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "cannot be negative",
    ),
    (
        "zero amount",
        _set("transaction.amount.minor_units", 0),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must be positive",
    ),
    (
        "absurd amount",
        _set("transaction.amount.minor_units", 10**17),
        grpc.StatusCode.INVALID_ARGUMENT,
        "exceeds the ceiling",
    ),
    (
        "unknown currency",
        _set("transaction.amount.currency", "XXQ"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "currency",
    ),
    (
        "lower-case currency",
        _set("transaction.amount.currency", "cny"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "currency",
    ),
    (
        "missing account",
        _set("transaction.account", ""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "transaction.account",
    ),
    (
        "missing customer",
        _set("transaction.customer_name", "  "),
        grpc.StatusCode.INVALID_ARGUMENT,
        "transaction.customer_name",
    ),
    (
        "memo too long",
        _set("transaction.memo", "x" * 501),
        grpc.StatusCode.INVALID_ARGUMENT,
        "transaction.memo",
    ),
    ("too many fields", _too_many_fields, grpc.StatusCode.INVALID_ARGUMENT, "transaction.fields"),
    ("unknown urgency", _set("urgency", 7), grpc.StatusCode.INVALID_ARGUMENT, "urgency"),
    (
        "negative preparation time",
        _set("preparation_seconds", -1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "preparation_seconds",
    ),
    ("unknown image kind", _bad_image_kind, grpc.StatusCode.INVALID_ARGUMENT, "images[3].kind"),
    ("malformed image hash", _bad_sha, grpc.StatusCode.INVALID_ARGUMENT, "images[3].sha256"),
    (
        "image never uploaded",
        _unknown_image,
        grpc.StatusCode.FAILED_PRECONDITION,
        "was not uploaded",
    ),
    ("required image missing (R3)", _drop_voucher, grpc.StatusCode.INVALID_ARGUMENT, "VOUCHER"),
    (
        "on-site-only business (R2)",
        _set("transaction.business_type", "BATCH_PAYROLL"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "authorize it at the branch",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "code", "names"),
    [pytest.param(m, c, n, id=label) for label, m, c, n in BAD_SUBMITS],
)
async def test_bad_submit_is_refused_and_nothing_is_stored(
    server: RunningServer, mutate: Mutation, code: grpc.StatusCode, names: str
) -> None:
    message = request()
    mutate(message)
    async with server.teller() as teller:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.stub.Submit(message, metadata=teller.metadata)
        assert failure.value.code() == code
        assert names in (failure.value.details() or "")
        assert (await server.runtime.store.overview()).waiting == 0
        # The server is still up and well.
        assert not (await teller.submit(request())).duplicate


async def test_a_call_without_identity_is_unauthenticated(server: RunningServer) -> None:
    async with open_channel(server.target) as channel:
        stub = teller_pb2_grpc.TellerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.Submit(request())
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization" in (failure.value.details() or "")


def _stored_blobs(server: RunningServer) -> list[Path]:
    """Blobs beyond the standard captures every test server starts with (and their
    renditions, named <sha256>.<rendition>.jpg)."""
    root = server.runtime.settings.data_dir / "blobs"
    standard = {wire.sha256_hex(data) for _, data in standard_images()}
    return [p for p in root.rglob("*") if p.is_file() and p.name.split(".")[0] not in standard]


async def _upload(server: RunningServer, chunks: list[cpb.ImageChunk]) -> cpb.ImageRef:
    async with server.teller() as teller:

        async def stream() -> AsyncIterator[cpb.ImageChunk]:
            for chunk in chunks:
                yield chunk

        ref: cpb.ImageRef = await teller.stub.UploadImage(stream(), metadata=teller.metadata)
        return ref


def _header(data: bytes, **overrides: object) -> cpb.ImageRef:
    fields: dict[str, object] = {
        "kind": cpb.IMAGE_KIND_ID_FRONT,
        "sha256": wire.sha256_hex(data),
        "size_bytes": len(data),
    }
    fields.update(overrides)
    return cpb.ImageRef(**fields)  # type: ignore[arg-type]


JPEG = images("ID_FRONT")[0][1]

BAD_UPLOADS: list[tuple[str, list[cpb.ImageChunk], str]] = [
    ("no header", [cpb.ImageChunk(data=JPEG)], "header"),
    ("unknown kind", [cpb.ImageChunk(header=_header(JPEG, kind=42), data=JPEG)], "header.kind"),
    ("ends early", [cpb.ImageChunk(header=_header(JPEG), data=JPEG[:1000])], "ended after 1000 of"),
    (
        "hash mismatch",
        [cpb.ImageChunk(header=_header(JPEG, sha256="c" * 64), data=JPEG)],
        "image.sha256",
    ),
    (
        "more than declared",
        [cpb.ImageChunk(header=_header(JPEG, size_bytes=10), data=JPEG)],
        "declared size",
    ),
    ("zero bytes", [cpb.ImageChunk(header=_header(b""))], "empty"),
    (
        "over the limit",
        [cpb.ImageChunk(header=_header(JPEG, size_bytes=9 * 1024 * 1024))],
        "exceeds the limit",
    ),
    (
        "truncated jpeg",
        [cpb.ImageChunk(header=_header(JPEG[:-200]), data=JPEG[:-200])],
        "truncated",
    ),
    (
        "not an image",
        [cpb.ImageChunk(header=_header(b"%PDF-1.4 hello"), data=b"%PDF-1.4 hello")],
        "accepted format",
    ),
]


@pytest.mark.parametrize(
    ("chunks", "names"), [pytest.param(c, n, id=label) for label, c, n in BAD_UPLOADS]
)
async def test_bad_upload_is_refused_and_nothing_is_stored(
    server: RunningServer, chunks: list[cpb.ImageChunk], names: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _upload(server, chunks)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert names in (failure.value.details() or "")
    assert _stored_blobs(server) == []


async def test_an_upload_abandoned_midway_leaves_nothing(server: RunningServer) -> None:
    big = JPEG * 4  # several chunks
    first = cpb.ImageChunk(header=_header(big), data=big[: wire.CHUNK_BYTES])
    arrived = asyncio.Event()

    async def stream() -> AsyncIterator[cpb.ImageChunk]:
        yield first
        arrived.set()
        await asyncio.sleep(30)  # the teller's workstation dies here

    async with server.teller() as teller:
        call = teller.stub.UploadImage(stream(), metadata=teller.metadata)
        await arrived.wait()
        await asyncio.sleep(0.2)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert _stored_blobs(server) == []
        assert (await teller.upload_image("ID_FRONT", JPEG)).sha256  # still serving


async def test_decisions_need_their_reasons(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=5)
        token = offer.lease.fencing_token
        cases = [
            (dict(outcome="reject"), "reason_code"),
            (dict(outcome="reject", reason_code="BAD_HAIR"), "unknown reason_code"),
            (dict(outcome="reject", reason_code="OTHER"), "needs a note"),
            (dict(outcome="ask"), "requested_kinds"),
            (dict(outcome="approve", reason_code="ID_MISMATCH"), "only a rejection"),
            (dict(outcome="ask", reason_code="ID_MISMATCH"), "only a rejection"),
            (dict(outcome="reject", reason_code="Z" * 20_000), "reason_code: far too long"),
            (dict(outcome="approve", note="n" * 501), "note"),
        ]
        for kwargs, names in cases:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await authorizer.decide(rid, token, **kwargs)
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert names in (failure.value.details() or "")
        assert (await teller.get(rid)).state == cpb.REQUEST_STATE_CLAIMED


async def test_kinds_and_checks_listed_twice_are_kept_once(server: RunningServer) -> None:
    """A list repeated without end must not grow the request's history (every reader
    of the request gets it, within gRPC's message limit)."""
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=5)
        asked = await authorizer.decide(
            rid, offer.lease.fencing_token, "ask", kinds=["VOUCHER", "ID_BACK"] * 50_000
        )
        assert list(asked.requested_kinds) == [cpb.IMAGE_KIND_VOUCHER, cpb.IMAGE_KIND_ID_BACK]
        assert [list(h.requested_kinds) for h in (await teller.get(rid)).history][-1] == list(
            asked.requested_kinds
        )


async def test_supply_without_a_request_for_images_is_refused(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.supply(rid, images("ID_BACK"))
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "QUEUED" in (failure.value.details() or "")
        offer = await authorizer.next(timeout=5)
        await authorizer.decide(rid, offer.lease.fencing_token, "ask", kinds=["ID_BACK"])
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.supply(rid, images("VOUCHER"))
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "ID_BACK" in (failure.value.details() or "")


async def test_unknown_requests_are_not_found(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        for call in (
            teller.get("no-such-request"),
            teller.cancel("no-such-request"),
            authorizer.decide("no-such-request", 1, "approve"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await call
            assert failure.value.code() == grpc.StatusCode.NOT_FOUND
