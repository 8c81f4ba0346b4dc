"""What the simulated tellers send: transactions, and unique ~200 KB JPEG captures."""

from __future__ import annotations

import itertools
import os
import struct
import uuid
from functools import lru_cache

from authq import wire
from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb

from server.demo import DEMO_PASSWORD
from teller_client import synthetic
from teller_client.client import TellerClient, kind_value, new_request

IMAGE_BYTES = 200_000
KINDS = ("ID_FRONT", "ID_BACK", "VOUCHER")
HIGH = "CASH_WITHDRAWAL"  # importance 3 in the default catalog
LOW = "WEALTH_PURCHASE"  # importance 1
_serial = itertools.count()
_run = uuid.uuid4().hex[:8]


def request_id(tag: str = "b") -> str:
    return f"{tag}-{_run}-{os.getpid()}-{next(_serial)}"


def submit_request(
    business_type: str = HIGH, *, urgent: bool = False, tag: str = "b", uploaded: int = 0
) -> tpb.SubmitRequest:
    """A complete request (the policy requires ID_FRONT, ID_BACK and VOUCHER): the
    ``uploaded`` first kinds come with the call as fresh captures, the others reference
    the standard captures stored once per server (``upload_standard``)."""
    message = new_request(
        business_type,
        1_250_000,
        "CNY",
        "6222020200001234",
        "Bench Customer",
        memo="benchmark",
        urgent=urgent,
        request_id=request_id(tag),
    )
    message.images.extend(standard_refs()[uploaded:])
    return message


def standard_captures() -> list[tuple[str, bytes]]:
    return [(kind, base_jpeg(i)) for i, kind in enumerate(KINDS)]


@lru_cache(maxsize=1)
def _standard_refs() -> tuple[cpb.ImageRef, ...]:
    return tuple(
        cpb.ImageRef(kind=kind_value(kind), sha256=wire.sha256_hex(data))
        for kind, data in standard_captures()
    )


def standard_refs() -> list[cpb.ImageRef]:
    return [cpb.ImageRef(kind=ref.kind, sha256=ref.sha256) for ref in _standard_refs()]


async def upload_standard(client: TellerClient) -> None:
    """Stores the standard captures on the server once (identical bytes are stored
    once, so every client may call it); outside any timing."""
    await client.upload_images(standard_captures())


@lru_cache(maxsize=4)
def base_jpeg(seed: int) -> bytes:
    return synthetic.jpeg_of_size(IMAGE_BYTES, seed=seed)


def unique_jpeg(seed: int) -> bytes:
    """The cached capture with a unique JPEG comment segment after SOI: new bytes (so a
    new sha256 and a real store each time) for the cost of one copy, still a valid JPEG."""
    base = base_jpeg(seed)
    tag = uuid.uuid4().bytes
    return base[:2] + b"\xff\xfe" + struct.pack(">H", 2 + len(tag)) + tag + base[2:]


def images(count: int) -> list[tuple[str, bytes]]:
    return [(KINDS[i % len(KINDS)], unique_jpeg(i % 3)) for i in range(count)]


def warm_images() -> None:
    for seed in range(3):
        base_jpeg(seed)


def teller_login(n: int) -> tuple[str, str]:
    """A demo teller account (the bench server runs with --demo): alternating between
    the two demo branches. Logging in happens once per client, outside the timing."""
    return ("teller-1" if n % 2 == 0 else "teller-2"), DEMO_PASSWORD


def authorizer_login(n: int) -> tuple[str, str]:
    return ("authorizer-1" if n % 2 == 0 else "authorizer-2"), DEMO_PASSWORD
