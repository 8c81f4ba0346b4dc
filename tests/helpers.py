"""Small builders shared by the tests."""

from __future__ import annotations

import uuid
from typing import Any

from authq.v1 import teller_pb2 as tpb

from teller_client import synthetic
from teller_client.client import new_request


def request(
    business_type: str = "CASH_WITHDRAWAL",
    amount_minor: int | None = 1_200_050,
    currency: str = "CNY",
    **kwargs: Any,
) -> tpb.SubmitRequest:
    kwargs.setdefault("request_id", f"t-{uuid.uuid4()}")
    return new_request(
        business_type, amount_minor, currency, "6222020200001234", "Zhang San", **kwargs
    )


def images(*kinds: str, seed: int = 0) -> list[tuple[str, bytes]]:
    return [(kind, synthetic.image_for_kind(kind, seed=seed)) for kind in kinds]
