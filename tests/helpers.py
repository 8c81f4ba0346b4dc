"""Small builders shared by the tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from authq import wire
from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb

from server.domain.records import Image, Submission
from teller_client import synthetic
from teller_client.client import kind_value, new_request

if TYPE_CHECKING:
    from tests.conftest import RunningServer

# What most business types require (R3): the test servers hold these captures from
# the start (conftest), so a request can reference them without uploading.
STANDARD_KINDS = ("ID_FRONT", "ID_BACK", "VOUCHER")


def images(*kinds: str, seed: int = 0) -> list[tuple[str, bytes]]:
    return [(kind, synthetic.image_for_kind(kind, seed=seed)) for kind in kinds]


def standard_images() -> list[tuple[str, bytes]]:
    return images(*STANDARD_KINDS)


def standard_refs() -> list[cpb.ImageRef]:
    return [
        cpb.ImageRef(kind=kind_value(kind), sha256=wire.sha256_hex(data))
        for kind, data in standard_images()
    ]


def request(
    business_type: str = "CASH_WITHDRAWAL",
    amount_minor: int | None = 1_200_050,
    currency: str = "CNY",
    *,
    with_images: bool = True,
    **kwargs: Any,
) -> tpb.SubmitRequest:
    """A request of 12,000.50 CNY (below the on-site review threshold) referencing
    the standard captures."""
    kwargs.setdefault("request_id", f"t-{uuid.uuid4()}")
    message = new_request(
        business_type, amount_minor, currency, "6222020200001234", "Zhang San", **kwargs
    )
    if with_images:
        message.images.extend(standard_refs())
    return message


def request_with_front(sha256: str) -> tpb.SubmitRequest:
    """The standard request with the image ``sha256`` in place of its ID_FRONT (now
    the last of its images, images[2])."""
    message = request()
    del message.images[0]  # the standard ID_FRONT
    message.images.append(cpb.ImageRef(kind=kind_value("ID_FRONT"), sha256=sha256))
    return message


def corrupt_scan(data: bytes) -> bytes:
    """Half of the JPEG scan data lost in the middle; header and end marker kept, so the
    structural probe before the upload's ack passes it and only the full check fails it."""
    sos = data.find(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    return data[: start + (len(data) - start) // 2] + b"\xff\xd9"


async def store_unchecked(
    server: RunningServer, data: bytes, content_type: str = "image/jpeg"
) -> str:
    """An ID_FRONT upload whose check never ran (taken by a process that then
    stopped): its bytes and record, no verdict. Returns its sha256."""
    sha = wire.sha256_hex(data)
    await server.runtime.center.blobs.put(sha, data)
    await server.runtime.store.record_blob(Image("ID_FRONT", sha, len(data), content_type))
    return sha


def store_submission(request_id: str, memo: str = "") -> Submission:
    """A store-level submission (no gRPC), for tests that drive the store directly."""
    return Submission(
        request_id=request_id,
        branch_id="branch-1",
        teller_id="teller-1",
        business_type="CASH_WITHDRAWAL",
        amount_minor=1_200_050,
        currency="CNY",
        account="6222020200001234",
        customer_name="Zhang San",
        memo=memo,
        fields={},
        urgency=1,
        importance=3,
        images=(),
    )


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    """Returns once ``condition()`` holds; TimeoutError after ``within_s``."""
    async with asyncio.timeout(within_s):
        while not condition():
            await asyncio.sleep(0.01)


def fallback_record(**overrides: Any) -> tpb.FallbackRecord:
    """A well-formed fallback record of teller-1, center unreachable."""
    fields: dict[str, Any] = {
        "request_id": "fb-record-0001",
        "transaction": request().transaction,
        "occurred_at_ms": time.time_ns() // 1_000_000 - 60_000,
        "cause": tpb.FALLBACK_CAUSE_CENTER_UNREACHABLE,
        "status_code": "UNAVAILABLE",
        "status_message": "failed to connect to all addresses",
    }
    fields.update(overrides)
    return tpb.FallbackRecord(**fields)
