"""The checks of a submission that need no policy: the form of its request id, business
type and account, the bounds of its texts, fields map, amount and preparation time.

One copy for the three places that apply them: the center's Submit
(server/api/convert.py), a fallback record's upload (server/api/fallback_convert.py),
and the workstation's own check before it journals a transaction for on-site
authorization (teller_client/client.py), so that the workstation refuses what the
center would, in the same words. What depends on the policy in force (which business
types the catalog holds, which of them need an amount) is the center's alone.

Each rule raises Malformed naming the field as its caller calls it (``request_id``,
``records[2].transaction.account``); the server answers it as InvalidArgument, the
teller client raises it as its InvalidRequest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from server.domain import money

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{8,64}\Z")
# The form of a code in the policy's catalog (server/policy/loader.py), so that a type the
# catalog may hold is never refused for its form, at a fallback's upload or on the
# workstation.
BUSINESS_TYPE_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}\Z")
ACCOUNT_RE = re.compile(r"^[0-9A-Za-z-]{4,34}\Z")
CUSTOMER_NAME_MAX_CHARS = 100
MEMO_MAX_CHARS = 500
MAX_FIELDS = 32
FIELD_KEY_MAX_CHARS = 64
FIELD_VALUE_MAX_CHARS = 500
MAX_PREPARATION_SECONDS = 86_400


class Malformed(ValueError):
    """A value a rule refuses, as ``field: problem``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def request_id(value: str, field: str = "request_id") -> str:
    if not REQUEST_ID_RE.match(value):
        raise Malformed(field, "must be 8 to 64 of A-Z a-z 0-9 . _ : - (a UUID is ideal)")
    return value


def business_type(value: str, field: str) -> str:
    """The form only: whether the center takes it is its catalog's say."""
    if not BUSINESS_TYPE_RE.match(value):
        raise Malformed(field, "is required: A-Z, then up to 63 of A-Z 0-9 _")
    return value


def account(value: str, field: str) -> str:
    if not ACCOUNT_RE.match(value):
        raise Malformed(field, "is required: 4 to 34 letters, digits or '-'")
    return value


def text(value: str, field: str, limit: int, *, required: bool = False) -> str:
    """``value`` stripped, at most ``limit`` characters, and not empty if ``required``."""
    value = value.strip()
    if required and not value:
        raise Malformed(field, "is required")
    if len(value) > limit:
        raise Malformed(field, f"at most {limit} characters")
    return value


def customer_name(value: str, field: str) -> str:
    return text(value, field, CUSTOMER_NAME_MAX_CHARS, required=True)


def memo(value: str, field: str) -> str:
    return text(value, field, MEMO_MAX_CHARS)


def fields(entries: Mapping[str, str], field: str) -> None:
    if len(entries) > MAX_FIELDS:
        raise Malformed(field, f"at most {MAX_FIELDS} entries")
    for key, value in entries.items():
        if not key or len(key) > FIELD_KEY_MAX_CHARS or len(value) > FIELD_VALUE_MAX_CHARS:
            raise Malformed(
                f"{field}[{key[:FIELD_KEY_MAX_CHARS]!r}]",
                f"keys 1-{FIELD_KEY_MAX_CHARS} and values up to {FIELD_VALUE_MAX_CHARS} characters",
            )


def amount(minor_units: int, currency: str, field: str) -> None:
    """An amount given, in a known currency, not negative and under the ceiling. Zero
    passes: whether the business type needs a positive amount is the catalog's say."""
    if not money.is_known_currency(currency):
        raise Malformed(f"{field}.currency", f"unknown ISO 4217 currency {currency[:8]!r}")
    if minor_units < 0:
        raise Malformed(f"{field}.minor_units", "cannot be negative")
    ceiling = money.max_minor_units(currency)
    if minor_units > ceiling:
        raise Malformed(
            f"{field}.minor_units",
            f"{minor_units} exceeds the ceiling of {ceiling} "
            f"({money.MAX_MAJOR_UNITS:,} {currency})",
        )


def preparation_seconds(value: int, field: str = "preparation_seconds") -> int:
    if not 0 <= value <= MAX_PREPARATION_SECONDS:
        raise Malformed(field, f"must be between 0 and {MAX_PREPARATION_SECONDS}")
    return value
