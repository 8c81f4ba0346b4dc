"""The checks of a submission that need no policy (server/domain/transaction_rules.py):
each names the field its caller gives, and the three places that apply them (the
center's Submit, a fallback record's upload, the workstation before it journals a
fallback) refuse the same transaction naming the same field, in the same words."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from authq.v1 import common_pb2 as cpb

from server.domain import money
from server.domain import transaction_rules as rules
from server.policy import loader
from teller_client import client
from tests.conftest import RunningServer
from tests.helpers import fallback_record, request

CNY_CEILING = money.max_minor_units("CNY")


@pytest.mark.parametrize(
    ("refuse", "field", "problem"),
    [
        (lambda f: rules.request_id("short", f), "f", "must be 8 to 64 of"),
        (lambda f: rules.request_id("abcdefgh\n", f), "f", "must be 8 to 64 of"),
        (lambda f: rules.business_type("cash_withdrawal", f), "f", "is required: A-Z, then"),
        (lambda f: rules.business_type("", f), "f", "is required: A-Z, then"),
        (lambda f: rules.business_type("9_TYPES", f), "f", "is required: A-Z, then"),
        (lambda f: rules.business_type("T" * 65, f), "f", "is required: A-Z, then"),
        (lambda f: rules.account("12", f), "f", "is required: 4 to 34"),
        (lambda f: rules.customer_name("  ", f), "f", "is required"),
        (lambda f: rules.customer_name("c" * 101, f), "f", "at most 100 characters"),
        (lambda f: rules.memo("m" * 501, f), "f", "at most 500 characters"),
        (lambda f: rules.text("  ", f, 5, required=True), "f", "is required"),
        (lambda f: rules.fields({f"k{i}": "v" for i in range(33)}, f), "f", "at most 32 entries"),
        (lambda f: rules.fields({"": "v"}, f), "f['']", "keys 1-64 and values up to 500"),
        (lambda f: rules.fields({"k": "v" * 501}, f), "f['k']", "keys 1-64 and values up to 500"),
        (lambda f: rules.amount(100, "XYZ", f), "f.currency", "unknown ISO 4217 currency 'XYZ'"),
        (lambda f: rules.amount(-1, "CNY", f), "f.minor_units", "cannot be negative"),
        (lambda f: rules.amount(CNY_CEILING + 1, "CNY", f), "f.minor_units", "exceeds the ceiling"),
        (lambda f: rules.preparation_seconds(-1, f), "f", "must be between 0 and 86400"),
        (lambda f: rules.preparation_seconds(86_401, f), "f", "must be between 0 and 86400"),
    ],
)  # fmt: skip
def test_each_rule_names_the_field_it_is_given(
    refuse: Callable[[str], object], field: str, problem: str
) -> None:
    with pytest.raises(rules.Malformed) as refused:
        refuse("f")
    assert refused.value.field == field
    assert problem in refused.value.problem
    assert str(refused.value) == f"{field}: {refused.value.problem}"


def test_well_formed_values_pass() -> None:
    assert rules.request_id("abcdefgh") == "abcdefgh"
    assert rules.business_type("CASH_WITHDRAWAL", "f") == "CASH_WITHDRAWAL"
    assert rules.business_type("T" * 64, "f") == "T" * 64
    assert rules.account("6222020200001234", "f") == "6222020200001234"
    assert rules.customer_name("  Zhang San ", "f") == "Zhang San"
    assert rules.memo("", "f") == ""
    rules.fields({f"k{i}": "v" * 500 for i in range(32)}, "f")
    rules.amount(0, "CNY", "f")
    rules.amount(CNY_CEILING, "CNY", "f")
    assert rules.preparation_seconds(0) == 0
    assert rules.preparation_seconds(86_400) == 86_400


def test_a_business_type_has_the_form_of_a_catalog_code() -> None:
    # A type of 41-64 characters, which a catalog may hold, was refused for its form by
    # the workstation and at a fallback's upload, while Submit took it.
    assert rules.BUSINESS_TYPE_RE.pattern == loader._CODE.pattern


def _short_account(tx: cpb.Transaction) -> None:
    tx.account = "12"


def _blank_customer(tx: cpb.Transaction) -> None:
    tx.customer_name = "  "


def _long_customer(tx: cpb.Transaction) -> None:
    tx.customer_name = "c" * 101


def _long_memo(tx: cpb.Transaction) -> None:
    tx.memo = "m" * 501


def _too_many_fields(tx: cpb.Transaction) -> None:
    for i in range(33):
        tx.fields[f"k{i}"] = "v"


def _empty_field_key(tx: cpb.Transaction) -> None:
    tx.fields[""] = "v"


def _unknown_currency(tx: cpb.Transaction) -> None:
    tx.amount.currency = "XYZ"


def _negative_amount(tx: cpb.Transaction) -> None:
    tx.amount.minor_units = -5


def _absurd_amount(tx: cpb.Transaction) -> None:
    tx.amount.minor_units = CNY_CEILING + 1


def _malformed_business_type(tx: cpb.Transaction) -> None:
    tx.business_type = "CASH-WITHDRAWAL"


# Refused by the same rule everywhere, in the same words.
SHARED: list[tuple[Callable[[cpb.Transaction], None], str]] = [
    (_short_account, "transaction.account"),
    (_blank_customer, "transaction.customer_name"),
    (_long_customer, "transaction.customer_name"),
    (_long_memo, "transaction.memo"),
    (_too_many_fields, "transaction.fields"),
    (_empty_field_key, "transaction.fields['']"),
    (_unknown_currency, "transaction.amount.currency"),
    (_negative_amount, "transaction.amount.minor_units"),
    (_absurd_amount, "transaction.amount.minor_units"),
]
# The center's Submit checks a business type against its catalog in force, in its own
# words; the workstation and a fallback record, which need no catalog, by its form.
BAD = [*SHARED, (_malformed_business_type, "transaction.business_type")]


async def _refusals(
    server: RunningServer, spoil: Callable[[cpb.Transaction], None]
) -> list[tuple[str, str]]:
    """(field, problem) as the workstation, the center's Submit and a fallback record's
    upload refuse the standard request spoiled by ``spoil``; the record's field without
    its ``records[0].``."""
    bad = request()
    spoil(bad.transaction)
    with pytest.raises(client.InvalidRequest) as local:
        client.check_request(bad)
    said = [(local.value.field, local.value.problem)]
    async with server.teller() as teller:
        with pytest.raises(grpc.aio.AioRpcError) as submitted:
            await teller.submit(bad)
        with pytest.raises(grpc.aio.AioRpcError) as reported:
            await teller.report_fallbacks([fallback_record(transaction=bad.transaction)])
    for refused, prefix in ((submitted, ""), (reported, "records[0].")):
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        field, _, problem = (refused.value.details() or "").partition(": ")
        assert field.startswith(prefix)
        said.append((field.removeprefix(prefix), problem))
    return said


@pytest.mark.parametrize(("spoil", "field"), BAD, ids=[spoil.__name__ for spoil, _ in BAD])
async def test_the_three_callers_refuse_a_bad_transaction_naming_the_same_field(
    server: RunningServer, spoil: Callable[[cpb.Transaction], None], field: str
) -> None:
    said = await _refusals(server, spoil)
    assert [named for named, _ in said] == [field] * 3


@pytest.mark.parametrize("spoil", [spoil for spoil, _ in SHARED], ids=lambda spoil: spoil.__name__)
async def test_the_three_callers_refuse_it_in_the_same_words(
    server: RunningServer, spoil: Callable[[cpb.Transaction], None]
) -> None:
    workstation, center, fallback = (problem for _, problem in await _refusals(server, spoil))
    assert workstation == center == fallback
