"""authq-teller: submit, watch, cancel and supply authorization requests."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # `python -m teller_client.cli`: loaded again under its own name by launch, which
    # turns a Ctrl-C while grpc and protobuf load into one line, as for authq-teller.
    from authq.exits import launch

    sys.exit(launch("teller_client.cli", "authq-teller"))

import argparse
import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from authq import catalog
from authq.exits import Interrupted, broken_pipe, interrupted, local_reason
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
from authq.reconnect import Reconnecting, is_at_capacity
from authq.render import describe_request, describe_update, image_kinds, parse_amount
from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from teller_client import fallback_cli, synthetic
from teller_client.client import ImageInput, TellerClient, check_request, new_request

PROG = "authq-teller"

KINDS_TEXT = ", ".join(image_kinds())
# A command other than submit that the center refused at its admission ceiling: it did
# nothing. A submit is tried again first, then falls back (fallback_cli.AT_CAPACITY_TEXT).
AT_CAPACITY_TEXT = (
    "the authorization center is at capacity and did nothing with this command: try it "
    "again in a moment. If it lasts, new transactions are authorized on site (R8): "
    f"`{PROG} submit` says so and journals them, `{PROG} fallback` records and reports them"
)


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Teller workstation: send counter transactions to the central "
        "authorization center and follow their decisions.",
    )
    add_connection_arguments(parser, default_user="teller-1", who="teller")

    def shared(group: argparse._ActionsContainer) -> None:
        add_connection_arguments(group, default_user="teller-1", who="teller",
                                 after_command=True)  # fmt: skip
        fallback_cli.add_journal_arguments(group, after_command=True)

    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=commands_taking(shared)
    )
    add_hours_commands(commands, branch_side=True)

    submit = commands.add_parser("submit", help="submit a transaction for authorization")
    submit.add_argument(
        "--type",
        required=True,
        type=catalog_code,
        dest="business_type",
        metavar="TYPE",
        help="business type code, in either case; the shipped policy has: "
        + ", ".join(catalog.business_names())
        + " (the center's policy decides which it takes, and how)",
    )
    submit.add_argument("--amount", help="amount in major units, e.g. 12000.00")
    submit.add_argument(
        "--currency",
        type=currency_code,
        default="CNY",
        help="ISO 4217 code, three letters, e.g. USD or jpy (default CNY)",
    )
    submit.add_argument("--account", required=True, help="customer account number")
    submit.add_argument("--customer", required=True, help="customer name")
    submit.add_argument("--memo", default="", help="a free-text memo the authorizer sees")
    submit.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra business field (repeat)",
    )
    submit.add_argument("--urgent", action="store_true", help="mark the request urgent")
    submit.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="KIND=PATH",
        help=f"captured image, e.g. ID_FRONT=id.jpg (repeat); KIND is one of {KINDS_TEXT}",
    )
    submit.add_argument("--request-id", help="reuse to retry safely (default: a new UUID)")
    submit.add_argument(
        "--prepared-seconds",
        type=int,
        default=0,
        metavar="N",
        help="seconds spent keying in and capturing, for the quality reports (R18)",
    )
    submit.add_argument("--wait", action="store_true", help="wait for the decision")

    for name, text in (
        ("watch", "follow a request until it is decided (through a lost connection too)"),
        ("show", "show a request with its history"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("request_id", help="as `submit` showed it")

    cancel = commands.add_parser("cancel", help="withdraw a request not yet in review (R4)")
    cancel.add_argument("request_id", help="as `submit` showed it")
    cancel.add_argument("--note", default="", help="why it is withdrawn (kept in its history)")

    supply = commands.add_parser("supply", help="send the images an authorizer asked for")
    supply.add_argument("request_id", help="the request the authorizer asked images for")
    supply.add_argument(
        "--image",
        action="append",
        required=True,
        metavar="KIND=PATH",
        help=f"an image asked for, e.g. CUSTOMER_PHOTO=photo.jpg (repeat); KIND is one of "
        f"{KINDS_TEXT}",
    )
    supply.add_argument("--note", default="", help="a note for the authorizer")
    supply.add_argument("--wait", action="store_true", help="wait for the decision")

    commands.add_parser("login", help="log in once; later commands reuse the login")
    commands.add_parser("logout", help="end the saved login")
    add_passwd_command(commands)

    commands.add_parser("pending", help="on-site reviewer: requests awaiting your review")
    review = commands.add_parser(
        "review", help="on-site reviewer: confirm (with what you checked) or send back"
    )
    review.add_argument("request_id", help="as `pending` shows it")
    verdict = review.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--confirm", action="store_true", help="checked: send it to the center")
    verdict.add_argument("--send-back", action="store_true", help="back to the teller")
    review.add_argument(
        "--check",
        action="append",
        default=[],
        type=catalog_code,
        help="what you checked (repeat), in either case: " + ", ".join(catalog.REVIEW_CHECKS),
    )
    review.add_argument("--note", default="", help="what you found (kept in its history)")

    add_image_command(
        commands, "save one image of a request of your branch (audited)", listed_by="show"
    )

    fallback_cli.add_fallback_commands(parser, commands)
    demo = commands.add_parser("demo-images", help="write synthetic sample captures")
    demo.add_argument("directory", type=Path, help="where to write them (made if missing)")
    return parser


def catalog_code(text: str) -> str:
    """A business type or review check as typed (``cash_withdrawal``) in the form of
    the center's lists (``CASH_WITHDRAWAL``); whether it is one is the center's to say."""
    return text.strip().upper()


def currency_code(text: str) -> str:
    """An ISO 4217 code as typed (``jpy``) in the form the center takes (``JPY``);
    anything but three letters is a usage error naming --currency."""
    code = text.strip().upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 4217 currency code: three letters, e.g. CNY, USD, JPY"
        )
    return code


def read_images(specs: Sequence[str]) -> list[ImageInput]:
    images = []
    for spec in specs:
        kind, sep, path = spec.partition("=")
        if not sep or not path:
            raise UsageError(f"--image {spec!r}: expected KIND=PATH, e.g. ID_FRONT=id.jpg")
        try:
            images.append((kind.strip().upper(), Path(path).read_bytes()))
        except OSError as exc:
            raise UsageError(f"--image {spec!r}: {exc.strerror}") from None
    return images


def parse_fields(specs: Sequence[str]) -> dict[str, str]:
    fields = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep:
            raise UsageError(f"--field {spec!r}: expected KEY=VALUE")
        fields[key] = value
    return fields


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.line_open = False

    def message(self, message: Message, text: str) -> None:
        if self.as_json:
            print(json.dumps(MessageToDict(message), ensure_ascii=False), flush=True)
        else:
            print(text, flush=True)

    def progress(self, kind: str, sent: int, total: int) -> None:
        if not self.as_json and sys.stderr.isatty():
            self.line_open = sent < total
            print(
                f"\r  uploading {kind}: {sent * 100 // max(total, 1):3d}% of {total / 1024:.0f} KB",
                end="" if self.line_open else "\n",
                file=sys.stderr,
                flush=True,
            )

    def end_line(self) -> None:
        """Ends a progress line cut short, so what follows starts a line of its own."""
        if self.line_open:
            print(file=sys.stderr, flush=True)
            self.line_open = False


async def follow(
    client: TellerClient, request_id: str, out: Output, *, reached: bool = False
) -> int:
    """Shows the request's changes until it ends: exit 0 for an approval, 3 for any
    other end. A center lost on the way is waited for (authq.reconnect; ``reached``:
    this command already had it answer for the request), and the request read again
    when it is back: what changed meanwhile is shown, each change once."""
    seen = 0
    state: Any = None
    resumed = f"following {request_id} again"
    async with Reconnecting(PROG, client.channel, reached=reached, resumed=resumed) as link:
        while True:
            updates = client.watch(request_id)
            try:
                while True:
                    async with asyncio.timeout(link.attempt_bound):
                        update = await anext(updates, None)
                        # A watch begins with the latest change: those before it
                        # that this command has not shown are in the history.
                        missed = (
                            await changes_between(client, request_id, seen, update.version)
                            if update is not None and seen and update.version > seen + 1
                            else []
                        )
                    if update is None:
                        return 0 if state == cpb.REQUEST_STATE_APPROVED else 3
                    link.answered()
                    for change in (*missed, update):
                        if change.version > seen:
                            out.message(change, describe_update(change))
                            seen, state = change.version, change.state
            except (grpc.aio.AioRpcError, TimeoutError) as exc:
                await link.lost(exc)
            finally:
                await updates.aclose()


async def changes_between(
    client: TellerClient, request_id: str, after: int, before: int
) -> list[cpb.RequestUpdate]:
    """The request's recorded changes with versions strictly between the two."""
    view = await client.get(request_id)
    return [entry for entry in view.history if after < entry.version < before]


def submit_request(args: argparse.Namespace) -> tpb.SubmitRequest:
    """Built before logging in: a center that cannot be reached still gets the
    transaction, with its request id, into the fallback journal (R8)."""
    amount = parse_amount(args.amount, args.currency, "--amount") if args.amount else None
    return new_request(
        args.business_type,
        amount,
        args.currency,
        args.account,
        args.customer,
        memo=args.memo,
        fields=parse_fields(args.field),
        urgent=args.urgent,
        request_id=args.request_id,
        preparation_seconds=args.prepared_seconds,
    )


class Sent:
    """Whether a Submit call has gone out: from then on the center may hold the
    request, and an interrupted teller must not be told it does not."""

    def __init__(self) -> None:
        self.yes = False

    def __call__(self) -> None:
        self.yes = True


async def submit(
    client: TellerClient, args: argparse.Namespace, request: tpb.SubmitRequest, out: Output
) -> int:
    sent = Sent()
    client.at_capacity.say = lambda text: print(f"{PROG}: {text}", file=sys.stderr, flush=True)
    try:
        reply = await client.submit(request, read_images(args.image), out.progress, sending=sent)
    except grpc.aio.AioRpcError as exc:
        if not fallback_cli.falls_back(exc):
            raise
        return fallback_cli.center_unreachable(args, request, exc)
    except asyncio.CancelledError:
        # Ctrl-C: asyncio.run cancels this task. Say what became of the request.
        out.end_line()
        raise Interrupted(interrupted_submit(request.request_id, sent.yes)) from None
    if reply.HasField("fallback"):
        fallback = reply.fallback
        out.message(reply, f"CENTER IN EMERGENCY FALLBACK ({fallback.emergency_id}): "
                    f"{fallback.reason}\nAuthorize this transaction ON SITE and record "
                    "the fallback (R8). Nothing was sent to the center.")  # fmt: skip
        fallback_cli.record_emergency(args, client, request, fallback)
        return 4
    text = describe_request(reply.request)
    if reply.duplicate:
        text += "\n(already submitted earlier with this request id: nothing new created)"
    out.message(reply, text)
    if not args.wait:
        return 0
    return await follow(client, reply.request.request_id, out, reached=True)


def interrupted_submit(request_id: str, sent: bool) -> str:
    if not sent:
        return "nothing was submitted"
    return (
        f"{request_id} may have reached the center: `{PROG} show {request_id}` tells; "
        f"submitting again with --request-id {request_id} is safe"
    )


async def image_hashes(client: TellerClient, request_id: str) -> list[str]:
    return [image.sha256 for image in (await client.get(request_id)).images]


def demo_images(directory: Path) -> int:
    """Writes a synthetic capture of each kind into ``directory`` (made if missing)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for kind in synthetic.KINDS:
            path = directory / f"{kind.lower()}.jpg"
            path.write_bytes(synthetic.image_for_kind(kind))
            print(path)
    except OSError as exc:
        raise UsageError(f"demo-images: {local_reason(exc)}") from None
    return 0


async def run(args: argparse.Namespace) -> int:
    out = Output(args.json)
    if args.command == "demo-images":
        return demo_images(args.directory)
    if (code := fallback_cli.offline_command(args)) is not None:
        return code
    if args.command == "passwd":
        return await change_password(TellerClient, args, PROG)
    request = submit_request(args) if args.command == "submit" else None
    if request is not None:
        # What the center would refuse by its own rules (InvalidRequest, a ValueError
        # naming the field: exit 2) is refused before anything is sent: at once, not
        # after the login and the submit's retries while the center is unreachable.
        check_request(request)
    try:
        client = await logged_in(
            TellerClient, args.server, args.user, args.password, args.state_dir,
            tls_options(args), prog=PROG,
        )  # fmt: skip
    except grpc.aio.AioRpcError as exc:
        if request is None or not fallback_cli.unreachable(exc):
            raise
        return fallback_cli.center_unreachable(args, request, exc)
    async with client:
        if args.command == "fallback":
            return await fallback_cli.sync_command(client, args)
        await fallback_cli.sync_quietly(client, args)
        if (code := await session_command(client, args)) is not None:
            return code
        if (code := await hours_command(client, args)) is not None:
            return code
        if args.command == "submit" and request is not None:
            return await submit(client, args, request, out)
        if args.command == "watch":
            return await follow(client, args.request_id, out)
        if args.command == "show":
            view = await client.get(args.request_id)
            out.message(view, describe_request(view, history=True))
            return 0
        if args.command == "pending":
            views = await client.pending_review()
            for view in views:
                out.message(view, describe_request(view) + "\n")
            if not views and not args.json:
                print("nothing awaits on-site review")
            return 0
        if args.command == "review":
            update = await client.review(
                args.request_id, confirm=args.confirm, checks=args.check, note=args.note
            )
            out.message(update, describe_update(update))
            return 0
        if args.command == "cancel":
            update = await client.cancel(args.request_id, args.note)
            out.message(update, describe_update(update))
            return 0
        if args.command == "image":
            return await save_image(
                client.image, args, lambda request_id: image_hashes(client, request_id)
            )
        if args.command == "supply":
            update = await client.supply(
                args.request_id, read_images(args.image), args.note, out.progress
            )
            out.message(update, describe_update(update))
            return await follow(client, args.request_id, out, reached=True) if args.wait else 0
    raise UsageError(f"unknown command {args.command}")


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
        if is_at_capacity(exc):
            print(f"{PROG}: {AT_CAPACITY_TEXT}\n  ({exc.details()})", file=sys.stderr)
            return 1
        print(f"{PROG}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        return interrupted(PROG, str(exc))
    except KeyboardInterrupt:
        return interrupted(PROG)
    except BrokenPipeError:
        return broken_pipe()
    except OSError as exc:
        # A local file the command was given or keeps (the journal, a path to write)
        # that cannot be used: one line, as for any other bad argument.
        print(f"{PROG}: {local_reason(exc)}", file=sys.stderr)
        return 2
