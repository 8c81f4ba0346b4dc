"""authq-authorizer: take the next item, decide it, hand it back; and, for
supervisors, the queue overview, a request's position and two-person moves to the
front of the queue (`move`, then `confirm` by another supervisor; `moves` lists the
pending ones)."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # `python -m authorizer_console.cli`: loaded again under its own name by launch, which
    # turns a Ctrl-C while grpc and protobuf load into one line, as for authq-authorizer.
    from authq.exits import launch

    sys.exit(launch("authorizer_console.cli", "authq-authorizer"))

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc
from authq.exits import broken_pipe, interrupted, local_reason
from authq.hours_cli import add_hours_commands, hours_command
from authq.image_cli import add_image_command, save_image
from authq.login import (
    LoginNeeded,
    PasswordChangeNeeded,
    add_connection_arguments,
    commands_taking,
    logged_in,
    session_command,
    tls_options,
)
from authq.passwd_cli import add_passwd_command, change_password
from authq.reconnect import Reconnecting
from authq.refusals import refusal_of
from authq.render import describe_request, describe_update, image_kinds, kind_name, state_name
from authq.v1 import authorizer_pb2 as apb
from authq.v1 import common_pb2 as cpb
from authq.v1 import supervisor_pb2 as spb
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from authorizer_console import catalog, fallback_view
from authorizer_console.client import AuthorizerClient
from authorizer_console.lease_book import NO_TOKEN, PROG, LeaseBook, UsageError

# How an item held under a token leaves its holder without a decision.
LAPSED = " (your lease ran out, or it was handed back)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Central authorizer: take waiting requests, review data and images, "
        "approve, reject with a reason, or ask the teller for images.",
    )
    who = "authorizer or supervisor"
    add_connection_arguments(parser, default_user="authorizer-1", who=who)
    shared = commands_taking(
        lambda group: add_connection_arguments(
            group, default_user="authorizer-1", who=who, after_command=True
        )
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=shared)
    add_hours_commands(commands, branch_side=False)
    commands.add_parser("login", help="log in once; later commands reuse the login")
    commands.add_parser("logout", help="end the saved login")
    add_passwd_command(commands)

    take = commands.add_parser("next", help="wait for the next item and take it")
    take.add_argument(
        "--images-dir",
        type=Path,
        default=Path("authq-images"),
        help="save the item's images under DIR/REQUEST_ID/ (default authq-images)",
    )
    take.add_argument("--timeout", type=float, help="give up after this many seconds")

    def with_token(name: str, text: str, note: str = "") -> argparse.ArgumentParser:
        """A command on a held item; ``note``: the help of its --note (none without)."""
        command = commands.add_parser(name, help=text)
        command.add_argument("request_id", help="the request, as `next` showed it")
        command.add_argument("--token", type=int, help="fencing token (default: from `next`)")
        if note:
            command.add_argument("--note", default="", help=note)
        return command

    image = add_image_command(
        commands,
        "save one image of a held item (supervisors: of any request); audited",
        listed_by="next",
    )
    image.add_argument(
        "--supervisor",
        action="store_true",
        help="as a supervisor or director: any request, not only held ones",
    )

    decision_note = "a note kept with the decision; the teller sees it"
    with_token("approve", "approve a held item", decision_note)
    reject = with_token("reject", "reject a held item with a reason", decision_note)
    reasons = [code for code, _ in catalog.REASONS]
    reject.add_argument(
        "--reason",
        required=True,
        choices=reasons,
        metavar="CODE",
        help="one of: " + ", ".join(reasons),
    )
    ask = with_token(
        "ask", "ask the teller for more or better images", "what the teller should capture"
    )
    ask.add_argument(
        "--kinds",
        required=True,
        help="comma-separated, e.g. ID_BACK,VOUCHER; each one of " + ", ".join(image_kinds()),
    )
    with_token(
        "release",
        "hand a held item back to the queue",
        "why you hand it back (kept in its history)",
    )
    with_token("renew", "extend the lease of a held item")
    commands.add_parser("away", help="take no new items (what you hold stays yours)")
    commands.add_parser("back", help="take items again")
    emergency = commands.add_parser("emergency", help="supervisor: emergency fallback (R8)")
    emergency_commands = emergency.add_subparsers(dest="emergency_command", required=True)
    declare = emergency_commands.add_parser("declare", help="tellers authorize on site")
    declare.add_argument("--reason", required=True, help="what happened")
    declare.add_argument("--branch", action="append", default=[],
                         help="only these branches (repeat); default: center-wide")  # fmt: skip
    end = emergency_commands.add_parser("end", help="the center takes requests again")
    end.add_argument("emergency_id", help="as `emergency list` shows it")
    end.add_argument("--note", default="", help="how it ended (audited)")
    emergency_commands.add_parser("list", help="emergencies in force")
    back = emergency_commands.add_parser(
        "handback", help="hand waiting requests back to their branches to authorize on site"
    )
    back.add_argument("request_id", nargs="*", help="the requests (or use --branch)")
    back.add_argument("--branch", default="", help="every waiting request of this branch")
    back.add_argument("--reason", required=True, help="what the tellers are told")
    commands.add_parser("overview", help="supervisor: the queue at a glance")
    position = commands.add_parser(
        "position",
        help="supervisor: where a request waits",
        description="Where a request waits, counted from 1: position 1 is the next item "
        "to be offered. With --json, `position` counts the same way (null when the "
        "request is not waiting); `move`, `confirm` and `moves` show places alike.",
    )
    position.add_argument("request_id", help="the request to look for")
    move = commands.add_parser(
        "move", help="supervisor: ask to move a waiting request to the front (R6)"
    )
    move.add_argument("request_id", help="a waiting request")
    move.add_argument("--reason", required=True, help="why it should go first (audited)")
    confirm = commands.add_parser(
        "confirm", help="supervisor: confirm another supervisor's move (R6)"
    )
    confirm.add_argument("request_id", help="a request whose move `moves` lists")
    commands.add_parser("moves", help="supervisor: moves awaiting confirmation")
    fallback_view.add_command(commands)
    return parser


def show(message: Message, text: str, as_json: bool) -> None:
    print(json.dumps(as_dict(message), ensure_ascii=False) if as_json else text, flush=True)


def as_dict(message: Message) -> dict[str, Any]:
    """The JSON form of a reply. A place in the queue is counted as people count it,
    whatever the wire says (0 there is the head): ``position`` is 1 for the next item
    to be offered, null when the request is not waiting, and present, like
    ``waiting``, even then."""
    if isinstance(message, spb.ListMovesReply):
        data = MessageToDict(message)
        data["moves"] = [as_dict(move) for move in message.moves]
        return data
    data = MessageToDict(message)
    if isinstance(message, spb.PositionReply | spb.MoveReply):
        data["position"] = place_in_line(message.position)
        data["waiting"] = str(message.waiting)  # an int64, as protobuf's JSON writes them
    return data


def place_in_line(position: int) -> int | None:
    """The wire's position (0: the next to be offered; -1: not waiting) counted from 1."""
    return position + 1 if position >= 0 else None


def describe_place(position: int, waiting: int, state: int) -> str:
    place = place_in_line(position)
    if place is None:
        return f"not waiting ({state_name(state)})"
    return f"position {place} of {waiting} waiting" + (" (next in line)" if place == 1 else "")


def describe_emergency(item: spb.Emergency) -> str:
    scope = ", ".join(item.branch_ids) or "center-wide"
    text = f"emergency {item.emergency_id} ({scope}): {item.reason}; declared by {item.declared_by}"
    if item.ended_at_ms:
        text += f"; ended by {item.ended_by}"
    return text


def describe_overview(view: spb.QueueOverview) -> str:
    lines = [
        f"waiting {view.waiting}   claimed {view.claimed}   needs images {view.needs_supplement}",
        f"oldest waiting {view.oldest_wait_ms / 1000:.1f}s ({view.oldest_request_id or '-'})",
        "class (importance/urgency)   waiting   oldest wait",
    ]
    for depth in view.by_class:
        urgency = "URGENT" if depth.urgency == cpb.URGENCY_URGENT else "normal"
        lines.append(
            f"  {depth.importance} / {urgency:<6}              {depth.waiting:>7}   "
            f"{depth.oldest_wait_ms / 1000:9.1f}s"
        )
    if view.by_branch:
        lines.append(
            "waiting per branch: " + ", ".join(f"{b.branch_id} {b.waiting}" for b in view.by_branch)
        )
    return "\n".join(lines)


def describe_move(move: spb.MoveReply) -> str:
    if move.state == spb.MOVE_STATE_CONFIRMED:
        text = (
            f"{move.request_id}: moved to the front, confirmed by {move.confirmer} "
            f"(requested by {move.requester}: {move.reason})"
        )
    else:
        left = max(0, move.expires_at_ms - int(time.time() * 1000)) / 1000
        text = (
            f"{move.request_id}: move requested by {move.requester} ({move.reason}), "
            f"awaits confirmation by another supervisor, lapses in {left:.0f}s"
        )
    return text + "\n  " + describe_place(move.position, move.waiting, move.request_state)


async def wait_for_offer(client: AuthorizerClient, within_s: float | None) -> apb.Offer:
    """The next item; a center lost meanwhile is waited for (authq.reconnect), within
    ``within_s`` seconds in all when given. A Next whose answer the loss took
    may have claimed an item: it returns to the queue when its lease ends."""
    deadline = None if within_s is None else time.monotonic() + within_s
    resumed = "waiting for the next item..."
    async with Reconnecting(PROG, client.channel, ready_is_answer=True, resumed=resumed) as link:
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                offer = await client.next(timeout=left)
            except grpc.aio.AioRpcError as exc:
                await link.lost(exc, deadline)
                continue
            link.answered()
            return offer


async def take_next(
    client: AuthorizerClient, args: argparse.Namespace, book: LeaseBook
) -> apb.Offer:
    if not args.json:
        print("waiting for the next item...", file=sys.stderr, flush=True)
    offer = await wait_for_offer(client, args.timeout)
    request = offer.request
    # The item is this authorizer's now: which one, and its token, are shown before
    # anything local (the lease book, the previews) can fail.
    text = describe_request(request, history=True)
    text += (
        f"\nlease     token {offer.lease.fencing_token}, expires in "
        f"{(offer.lease.expires_at_ms - request.history[-1].at_ms) / 1000:.0f}s"
    )
    show(offer, text, args.json)
    book.put(request.request_id, offer.lease.fencing_token, [i.sha256 for i in request.images])
    saved = await save_previews(client, request, args.images_dir)
    if saved and not args.json:
        print("saved     " + "\n          ".join(saved), flush=True)
    return offer


async def save_previews(
    client: AuthorizerClient, request: cpb.RequestView, images_dir: Path
) -> list[str]:
    """Saves the item's watermarked previews (JPEGs whatever the capture was, R14)
    under images_dir/REQUEST_ID/. A folder that cannot be written is one line on
    stderr: the item is taken all the same, and `image` can fetch them later."""
    folder = images_dir / request.request_id
    saved: list[str] = []
    try:
        if request.images:
            folder.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(request.images):
            data = await client.image(request.request_id, image.sha256, "preview")
            path = folder / f"{index + 1:02d}-{kind_name(image.kind).lower()}-preview.jpg"
            path.write_bytes(data)
            saved.append(str(path))
    except OSError as exc:
        where = exc.filename or folder
        print(f"{PROG}: previews not saved: {where}: {exc.strerror or exc}", file=sys.stderr)
    return saved


async def run(args: argparse.Namespace) -> int:
    if args.command == "passwd":
        return await change_password(AuthorizerClient, args, PROG)
    book = LeaseBook(args.state_dir / f"leases-{args.user}.json")
    client = await logged_in(
        AuthorizerClient, args.server, args.user, args.password, args.state_dir,
        tls_options(args), prog=PROG,
    )  # fmt: skip
    async with client:
        if (code := await session_command(client, args)) is not None:
            return code
        if (code := await hours_command(client, args)) is not None:
            return code
        if args.command == "next":
            await take_next(client, args, book)
            return 0
        if args.command == "image":
            if args.supervisor:
                return await save_image(client.supervisor_image, args, None)
            return await save_image(client.image, args, book.images)
        if args.command in ("away", "back"):
            away = await client.set_away(args.command == "away")
            print(f"{args.user} is {'away: no new items' if away else 'back: taking items'}")
            return 0
        if args.command == "emergency":
            if args.emergency_command == "declare":
                item = await client.declare_emergency(args.reason, args.branch)
            elif args.emergency_command == "end":
                item = await client.end_emergency(args.emergency_id, args.note)
            elif args.emergency_command == "handback":
                result = await client.hand_back(args.reason, args.request_id, args.branch)
                lines = [f"handed back {u.request_id}" for u in result.handed_back]
                lines += [f"not handed back {r.request_id}: {r.reason}" for r in result.refused]
                show(result, "\n".join(lines) or "nothing was waiting", args.json)
                return 0 if not result.refused else 1
            else:
                for active in await client.emergencies():
                    show(active, describe_emergency(active), args.json)
                return 0
            show(item, describe_emergency(item), args.json)
            return 0
        if args.command == "overview":
            view = await client.overview()
            show(view, describe_overview(view), args.json)
            return 0
        if args.command == "position":
            reply = await client.position(args.request_id)
            text = f"{reply.request_id}: " + describe_place(
                reply.position, reply.waiting, reply.state
            )
            show(reply, text, args.json)
            return 0
        if args.command == "move":
            move = await client.request_move(args.request_id, args.reason)
            show(move, describe_move(move), args.json)
            return 0
        if args.command == "confirm":
            move = await client.confirm_move(args.request_id)
            show(move, describe_move(move), args.json)
            return 0
        if args.command == "moves":
            pending = await client.moves()
            lines = [describe_move(m) for m in pending.moves] or ["no moves await confirmation"]
            show(pending, "\n".join(lines), args.json)
            return 0
        if args.command == "fallbacks":
            return await fallback_view.show_fallbacks(client, args)
        token = book.token(args.request_id, args.token)
        try:
            return await held_item_command(client, args, token, book)
        except grpc.aio.AioRpcError as exc:
            gone = not_held(exc, args.request_id, token, book)
            if gone is None:
                raise
            print(f"{PROG}: {gone}", file=sys.stderr)
            book.drop(args.request_id)
            return 1


async def held_item_command(
    client: AuthorizerClient, args: argparse.Namespace, token: int, book: LeaseBook
) -> int:
    """renew, release, approve, reject or ask, on an item held under ``token``."""
    if args.command == "renew":
        lease = await client.renew(args.request_id, token)
        show(lease, f"lease of {args.request_id} renewed", args.json)
        return 0
    if args.command == "release":
        update = await client.release(args.request_id, token, args.note)
    else:
        kinds = args.kinds.split(",") if args.command == "ask" else []
        update = await client.decide(
            args.request_id,
            token,
            args.command,
            reason_code=getattr(args, "reason", ""),
            note=args.note,
            kinds=kinds,
        )
    # Shown first: the decision is made whatever becomes of the book.
    show(update, describe_update(update), args.json)
    book.drop(args.request_id)
    return 0


def not_held(exc: grpc.aio.AioRpcError, request_id: str, token: int, book: LeaseBook) -> str | None:
    """What the center's refusal of a command on an item means to the person who typed
    it: the item was decided already, or it is not theirs (any more). None for any
    other failure. With NO_TOKEN (nothing recorded, no --token) the refusal is all
    this command line knows of the item."""
    refusal = refusal_of(exc)
    if refusal is None:
        return None
    ours = token != NO_TOKEN
    lost = "is not held by you any more" if ours else "is not held by you"
    if refusal.reason == "ILLEGAL_TRANSITION":
        state = refusal.metadata.get("state", "")
        if state in ("APPROVED", "REJECTED", "NEEDS_SUPPLEMENT"):
            return f"{request_id} was already decided: it is {state}"
        if state == "QUEUED":
            return f"{request_id} {lost}: it waits in the queue" + (LAPSED if ours else "")
        return f"{request_id} {lost}: it is {state}"
    if refusal.reason == "LEASE_HELD_BY_OTHER":
        return f"{request_id} {lost}: another authorizer holds it" + (LAPSED if ours else "")
    if refusal.reason == "LEASE_EXPIRED":
        return f"{request_id} {lost}: your lease ran out"
    if not ours and refusal.reason == "STALE_FENCING_TOKEN":
        # Held by this person, taken where this command line did not record it.
        return (
            f"no lease of {request_id} recorded in {book.path}: pass the --token "
            "shown when it was taken"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        return asyncio.run(run(build_parser().parse_args(argv)))
    except (UsageError, LoginNeeded, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except PasswordChangeNeeded as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except grpc.aio.AioRpcError as exc:
        print(f"{PROG}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return interrupted(PROG)
    except BrokenPipeError:
        return broken_pipe()
    except OSError as exc:  # a local file or folder (state dir, --out) that is unusable
        print(f"{PROG}: {local_reason(exc)}", file=sys.stderr)
        return 2
