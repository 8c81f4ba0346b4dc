"""The ``hours`` commands both command lines share (R9, R10): branch staff ask for an
extended-hours window and see where their branch stands; supervisors list pending
windows and approve or refuse them."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

from google.protobuf.json_format import MessageToDict

from authq.channel import AuthenticatedClient
from authq.v1 import branch_pb2 as bpb
from authq.v1 import branch_pb2_grpc

_STATE = {
    bpb.WINDOW_STATE_PENDING: "PENDING",
    bpb.WINDOW_STATE_APPROVED: "APPROVED",
    bpb.WINDOW_STATE_REFUSED: "REFUSED",
}


def add_hours_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                       branch_side: bool) -> None:  # fmt: skip
    hours = commands.add_parser(
        "hours", help="operating hours: extended-hours windows, branch status (R9, R10)"
    )
    actions = hours.add_subparsers(dest="hours_command", required=True)
    status = actions.add_parser("status", help="whether the center takes the branch's requests now")
    if not branch_side:
        status.add_argument("branch_id", help="the branch to look at")
    listing = actions.add_parser(
        "list", help="windows not yet ended" + ("" if branch_side else " (default: pending)")
    )
    if not branch_side:
        listing.add_argument("--branch", default="", help="one branch's windows")
    if branch_side:
        ask = actions.add_parser("request", help="ask the center for an extended-hours window")
        ask.add_argument("--start", required=True, help="local time, e.g. 2026-11-23T17:00")
        ask.add_argument("--hours", type=float, required=True, help="how long, e.g. 1.5")
        ask.add_argument("--reason", required=True, help="why the branch needs it (R9)")
    else:
        for name, text in (("approve", "approve a pending window"), ("refuse", "refuse one")):
            decide = actions.add_parser(name, help=text)
            decide.add_argument("window_id", help="as `hours list` shows it")
            decide.add_argument(
                "--note",
                default="",
                required=name == "refuse",
                help="why, for the branch" + (" (required)" if name == "refuse" else ""),
            )


def describe_window(window: bpb.ExtendedHoursWindow) -> str:
    start = datetime.fromtimestamp(window.start_ms / 1000).astimezone()
    end = datetime.fromtimestamp(window.end_ms / 1000).astimezone()
    text = (
        f"{window.window_id}  {window.branch_id}  {start:%Y-%m-%d %H:%M}-{end:%H:%M %Z}  "
        f"{_STATE.get(window.state, '?')}  asked by {window.requested_by}: {window.reason}"
    )
    if window.decided_by:
        text += f"\n    decided by {window.decided_by}" + (
            f": {window.note}" if window.note else ""
        )
    return text


def _local_ms(text: str) -> int:
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.astimezone()  # the workstation's own zone
    return int(when.astimezone(UTC).timestamp() * 1000)


async def hours_command(client: AuthenticatedClient, args: argparse.Namespace) -> int | None:
    """Runs an ``hours`` command; None for any other command."""
    if args.command != "hours":
        return None
    stub = branch_pb2_grpc.BranchServiceStub(client.channel)
    md = client.metadata

    def show(message: bpb.ExtendedHoursWindow | bpb.BranchStatusReply, text: str) -> None:
        if args.json:
            print(json.dumps(MessageToDict(message), ensure_ascii=False))
        else:
            print(text)

    if args.hours_command == "status":
        reply = await stub.BranchStatus(
            bpb.BranchStatusRequest(branch_id=getattr(args, "branch_id", "")), metadata=md
        )
        scope = f" for {', '.join(reply.suspended_types)}" if reply.suspended_types else ""
        why = f" ({reply.enrollment_reason})" if reply.enrollment_reason else ""
        lines = [
            f"branch {reply.branch_id} (region {reply.region}): {reply.enrollment}{scope}{why}",
            f"{'OPEN' if reply.open_now else 'CLOSED'} now: {reply.hours}",
            *(describe_window(window) for window in reply.windows),
        ]
        show(reply, "\n".join(lines))
        return 0
    if args.hours_command == "list":
        listed = await stub.ListExtendedHours(
            bpb.ListExtendedHoursRequest(branch_id=getattr(args, "branch", "")), metadata=md
        )
        for window in listed.windows:
            show(window, describe_window(window))
        if not listed.windows and not args.json:
            print("no extended-hours windows")
        return 0
    if args.hours_command == "request":
        start_ms = _local_ms(args.start)
        end_ms = start_ms + int(timedelta(hours=args.hours).total_seconds() * 1000)
        window = await stub.RequestExtendedHours(
            bpb.RequestExtendedHoursRequest(start_ms=start_ms, end_ms=end_ms, reason=args.reason),
            metadata=md,
        )
        show(window, describe_window(window) + "\nawaiting a supervisor's decision")
        return 0
    window = await stub.DecideExtendedHours(
        bpb.DecideExtendedHoursRequest(
            window_id=args.window_id, approve=args.hours_command == "approve", note=args.note
        ),
        metadata=md,
    )
    show(window, describe_window(window))
    return 0
