"""Human-readable text for requests and updates, shared by the command lines and consoles."""

from __future__ import annotations

import time
from decimal import Decimal

from authq.amounts import largest, minor_units
from authq.v1 import common_pb2 as cpb

# Minor-unit exponents differing from 2 (ISO 4217); the server holds the full table.
_EXPONENTS = {"JPY": 0, "KRW": 0, "VND": 0, "KWD": 3, "BHD": 3, "OMR": 3, "JOD": 3}
# Hex digits of an image's sha256 shown in text: enough to tell a request's images
# apart, and accepted back by the `image` commands.
SHORT_SHA = 12


def parse_amount(text: str, currency: str, name: str = "amount") -> int:
    """'12000.50' CNY -> 1200050 minor units (authq.amounts). ValueError names ``name``
    and says what is allowed."""
    exponent = _EXPONENTS.get(currency.upper(), 2)
    try:
        minor = minor_units(text.replace(",", "").strip(), exponent)
        problem = "" if minor > 0 else "is not positive"
    except ValueError as exc:
        problem = str(exc)
    if not problem:
        return minor
    raise ValueError(
        f"{name} {text!r} {problem}: give a positive amount with at most {exponent} "
        f"decimals for {currency}, up to {largest(exponent):,.{exponent}f}"
    )


def format_money(money: cpb.Money) -> str:
    exponent = _EXPONENTS.get(money.currency, 2)
    return f"{Decimal(money.minor_units).scaleb(-exponent):,.{exponent}f} {money.currency}"


def state_name(state: int) -> str:
    return cpb.RequestState.Name(state).removeprefix("REQUEST_STATE_")  # type: ignore[arg-type]


def kind_name(kind: int) -> str:
    return cpb.ImageKind.Name(kind).removeprefix("IMAGE_KIND_")  # type: ignore[arg-type]


def image_kinds() -> list[str]:
    """The image kinds of the API (ImageKind), as the command lines take and show them."""
    return [kind_name(v) for v in cpb.ImageKind.values() if v != cpb.IMAGE_KIND_UNSPECIFIED]


def clock(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


def mask_account(account: str) -> str:
    return (
        account if len(account) <= 8 else f"{account[:4]}{'*' * (len(account) - 8)}{account[-4:]}"
    )


def describe_update(update: cpb.RequestUpdate) -> str:
    line = f"{clock(update.at_ms)}  {update.request_id}  {update.event:<20}"
    line += f" -> {state_name(update.state)}"
    if update.actor:
        line += f"  by {update.actor}"
    if update.reason_code:
        line += f"\n    reason: {update.reason_code}"
    if update.requested_kinds:
        line += "\n    wanted: " + ", ".join(kind_name(k) for k in update.requested_kinds)
    if update.note:
        line += f"\n    note: {update.note}"
    return line


def describe_request(view: cpb.RequestView, *, history: bool = False) -> str:
    tx = view.transaction
    amount = format_money(tx.amount) if tx.HasField("amount") else "-"
    lines = [
        f"request   {view.request_id}",
        f"state     {state_name(view.state)} (version {view.version})",
        f"business  {tx.business_type}   amount {amount}",
        f"customer  {tx.customer_name}   account {mask_account(tx.account)}",
        f"branch    {view.branch_id}   teller {view.teller_id}   importance {view.importance}"
        + ("   URGENT" if view.urgency == cpb.URGENCY_URGENT else ""),
    ]
    if view.authorizer_id:
        lines.append(f"authorizer {view.authorizer_id}")
    if view.images:
        lines.append(
            "images    "
            + ", ".join(
                f"{kind_name(i.kind)} {i.sha256[:SHORT_SHA]} ({i.size_bytes / 1024:.0f} KB)"
                for i in view.images
            )
        )
    if history:
        lines.append("history")
        lines.extend("  " + describe_update(entry) for entry in view.history)
    return "\n".join(lines)
