"""``authq-authorizer fallbacks``: the local fallbacks tellers reported (R8), for a
supervisor or director, by branch and period."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from authq.render import format_money, mask_account
from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb
from google.protobuf.json_format import MessageToDict

from authorizer_console.client import AuthorizerClient


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fallbacks = commands.add_parser(
        "fallbacks", help="supervisor: local fallbacks tellers reported (R8)"
    )
    fallbacks.add_argument("--branch", default="", help="one branch (default: all)")
    fallbacks.add_argument(
        "--from", dest="since", type=instant, metavar="WHEN",
        help="occurred at or after, e.g. 2024-05-01 or 2024-05-01T09:00 (local time)",
    )  # fmt: skip
    fallbacks.add_argument(
        "--to", dest="until", type=instant, metavar="WHEN", help="occurred before"
    )
    fallbacks.add_argument("--limit", type=int, default=0, help="at most (default 100)")


def instant(text: str) -> int:
    """An ISO date or date-time in local time, as milliseconds since the epoch."""
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a date or date-time such as 2024-05-01T09:00"
        ) from None


def describe(record: tpb.FallbackRecord) -> str:
    when = datetime.fromtimestamp(record.occurred_at_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
    tx = record.transaction
    amount = format_money(tx.amount) if tx.HasField("amount") else "-"
    why = (
        f"emergency {record.emergency_id}"
        if record.cause == tpb.FALLBACK_CAUSE_EMERGENCY
        else f"center unreachable ({record.status_code}: {record.status_message})"
    )
    outcome = tpb.OnsiteOutcome.Name(record.onsite_outcome).removeprefix("ONSITE_OUTCOME_")
    onsite = (
        f"{outcome} by {record.onsite_authorizer}"
        + (f" ({record.onsite_note})" if record.onsite_note else "")
        if record.onsite_outcome
        else "not reported yet"
    )
    text = (
        f"{record.request_id}  {when}  {record.branch_id} / {record.teller_id}\n"
        f"  {tx.business_type} {amount}  account {mask_account(tx.account)}\n"
        f"  why: {why}\n"
        f"  on site: {onsite}"
    )
    if record.also_submitted:
        central = cpb.RequestState.Name(record.central_state).removeprefix("REQUEST_STATE_")
        if record.central_state == cpb.REQUEST_STATE_SENT_BACK:
            text += "\n  the center also received it: withdrawn there (SENT_BACK)"
        elif record.central_state in (cpb.REQUEST_STATE_APPROVED, cpb.REQUEST_STATE_REJECTED):
            text += (
                f"\n  DECIDED TWICE: the center had decided it ({central}) before the "
                "fallback was reported: reconcile with the branch"
            )
        else:
            text += (
                "\n  the center also holds a request with this id: check it is not decided twice"
            )
    return text


async def show_fallbacks(client: AuthorizerClient, args: argparse.Namespace) -> int:
    records = await client.fallbacks(args.branch, args.since or 0, args.until or 0, args.limit)
    for record in records:
        if args.json:
            print(json.dumps(MessageToDict(record), ensure_ascii=False), flush=True)
        else:
            print(describe(record), flush=True)
    if not records and not args.json:
        print("no local fallbacks reported" + (f" by {args.branch}" if args.branch else ""))
    return 0
