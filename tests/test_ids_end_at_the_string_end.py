"""An identifier checked by a pattern ends where the string ends: Python's ``$`` also
matches before a final newline, so "abcdefgh\\n" passed as a request id and became a
request (and a key) of its own, shown like another. Every such pattern ends in ``\\Z``."""

from __future__ import annotations

import re

import grpc
import pytest

from server.accounts import model as accounts
from server.api import fallback_convert
from server.archive import layout
from server.blobs import _SHA256 as BLOB_NAME
from server.domain import transaction_rules
from server.intake import SHA256_RE
from server.policy import hours, loader
from tests.conftest import RunningServer
from tests.helpers import request

SHA = "ab" * 32
GOOD: list[tuple[str, re.Pattern[str], str]] = [
    ("request id", transaction_rules.REQUEST_ID_RE, "abcdefgh"),
    ("account", transaction_rules.ACCOUNT_RE, "6222020200001234"),
    ("business type", transaction_rules.BUSINESS_TYPE_RE, "CASH_WITHDRAWAL"),
    ("fallback id", fallback_convert._ID_RE, "teller-1"),
    ("image sha256", SHA256_RE, SHA),
    ("blob name", BLOB_NAME, SHA),
    ("user id", accounts.ID_RE, "teller-1"),
    ("archive day", layout._DAY_RE, "2026-11-25"),
    ("policy code", loader._CODE, "CASH_WITHDRAWAL"),
    ("policy region", loader._REGION, "east"),
    ("policy decimal", loader._DECIMAL, "7.10"),
    ("opening hours", hours._INTERVAL, "09:00-17:00"),
    ("zone offset", hours._OFFSET, "+08:00"),
]


@pytest.mark.parametrize(
    ("pattern", "good"), [(p, g) for _, p, g in GOOD], ids=[n for n, _, _ in GOOD]
)
def test_a_final_newline_is_not_part_of_an_identifier(pattern: re.Pattern[str], good: str) -> None:
    assert pattern.match(good)
    assert pattern.match(good + "\n") is None


async def test_a_request_id_ending_in_a_newline_is_refused(server: RunningServer) -> None:
    message = request()
    message.request_id = "abcdefgh\n"
    async with server.teller() as teller:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await teller.submit(message)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("request_id: must be 8 to 64")
    assert not await server.runtime.store.exists("abcdefgh\n")
