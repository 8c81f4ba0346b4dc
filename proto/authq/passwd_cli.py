"""The ``passwd`` command both command lines share (R11: credentials are personal and
rotated). A password an administrator set, or one older than the policy allows, lets
nobody log in until its owner chooses a new one; this is how. The server's
ChangePassword checks the current password, then the new one, and logs in with it."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

import grpc
from google.protobuf.json_format import MessageToDict

from authq.channel import AuthenticatedClient
from authq.login import LoginNeeded, password_from, save_token, tls_options
from authq.refusals import refusal_of
from authq.v1 import auth_pb2 as upb

NEW_PASSWORD_ENV = "AUTHQ_NEW_PASSWORD"


def add_passwd_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    passwd = commands.add_parser(
        "passwd",
        help="choose a new password (needed after an administrator set it, and when it expires)",
        description="The current password comes as for any login: --password, "
        "AUTHQ_PASSWORD or a prompt. The new one is asked twice on a terminal.",
    )
    passwd.add_argument(
        "--new-password",
        help=f"the new password, for scripts (else {NEW_PASSWORD_ENV}, else asked twice)",
    )


def new_password_from(given: str | None) -> str:
    if given:
        return given
    if os.environ.get(NEW_PASSWORD_ENV):
        return os.environ[NEW_PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise LoginNeeded(
            f"no new password: pass --new-password, set {NEW_PASSWORD_ENV} or run interactively"
        )
    first = getpass.getpass("new password: ")
    if not first:
        raise LoginNeeded("no new password given: nothing was changed")
    if getpass.getpass("new password again: ") != first:
        raise LoginNeeded("the two new passwords differ: nothing was changed")
    return first


def refusal(exc: grpc.aio.AioRpcError) -> str | None:
    """The server's reason in the user's words, or None for a failure that is not a
    refusal of these passwords (the center unreachable...)."""
    said = refusal_of(exc)
    if said is None:
        return None
    if said.reason == "LOGIN_REFUSED":
        return f"the current password is not accepted ({exc.details()}); nothing was changed"
    if said.reason == "LOGIN_LOCKED":  # too many wrong passwords: not checked at all
        return f"{exc.details()}; nothing was changed"
    for violation in said.violations:
        if violation.field == "new_password":
            reason = violation.description
            return f"the new password is not accepted ({reason}); the current one stays"
    return None


async def change_password(
    client_type: type[AuthenticatedClient], args: argparse.Namespace, prog: str
) -> int:
    """Runs ``passwd``: the login it opens is kept like any other, so the next
    command needs no password."""
    current = password_from(args.password, prompt="current password: ")
    new = new_password_from(args.new_password)
    client = client_type(args.server, args.user, current, tls=tls_options(args))
    try:
        reply = await client.change_password(new)
    except grpc.aio.AioRpcError as exc:
        reason = refusal(exc)
        if reason is None:
            raise
        print(f"{prog}: {reason}", file=sys.stderr, flush=True)
        return 1
    finally:
        await client.close()
    save_token(args.state_dir, args.user, reply.token, reply.expires_at_ms)
    _report(reply, args)
    return 0


def _report(reply: upb.LoginReply, args: argparse.Namespace) -> None:
    if args.json:
        shown = upb.LoginReply()
        shown.CopyFrom(reply)
        shown.ClearField("token")  # a secret: kept in the state directory only
        print(json.dumps(MessageToDict(shown), ensure_ascii=False), flush=True)
        return
    text = (
        f"password of {args.user} changed, and logged in; change it again within "
        f"{reply.password_days_left} days"
    )
    if not args.password and os.environ.get("AUTHQ_PASSWORD"):
        text += " (AUTHQ_PASSWORD still holds the old one)"
    print(text, flush=True)
