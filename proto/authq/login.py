"""How the command lines log in: a password from --password, AUTHQ_PASSWORD or a
prompt; the token kept (mode 0600) in the state directory until it expires, so a
person types the password once per shift, not once per command."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from authq.channel import DEFAULT_PORT, DEFAULT_TARGET, AuthenticatedClient, ClientTLS
from authq.exits import local_reason
from authq.refusals import reason_of

C = TypeVar("C", bound=AuthenticatedClient)


class LoginNeeded(Exception):
    pass


class PasswordChangeNeeded(Exception):
    """The server refused the login until the password is changed (R11): set by an
    administrator, or too old. The message names the command that changes it."""


# The title, in a command's help, of the flags every command shares.
SHARED_TITLE = "options every command takes (before or after its name)"
TLS_TITLE = "TLS (any of these turns TLS on)"
# What becomes of a shared flag's default (shared_default).
Defaults = Callable[[Any], Any]


def add_connection_arguments(
    target: argparse._ActionsContainer,
    *,
    default_user: str,
    who: str,
    after_command: bool = False,
) -> None:
    """The flags every command line shares: where the server is, who you are, where
    the login is kept, output format, and TLS. ``after_command``: the copy the
    commands get (commands_taking), so that ``submit ... --json`` works as well as
    ``--json submit ...``: without defaults, so that the top-level parser's (and what
    was given before the command) stand when they are not given again."""
    default = shared_default(after_command)
    target.add_argument(
        "--server",
        default=default(os.environ.get("AUTHQ_SERVER", DEFAULT_TARGET)),
        help=f"host[:port] (default port {DEFAULT_PORT}; env AUTHQ_SERVER)",
    )
    target.add_argument(
        "--user",
        default=default(os.environ.get("AUTHQ_USER", default_user)),
        help=f"your {who} id (env AUTHQ_USER)",
    )
    target.add_argument(
        "--password",
        default=default(None),
        help="log in with this password (else AUTHQ_PASSWORD, a saved login, or a prompt)",
    )
    target.add_argument(
        "--state-dir",
        type=Path,
        default=default(Path(os.environ.get("AUTHQ_STATE_DIR", "~/.authq")).expanduser()),
        help="where your login (and held leases) are kept between commands (default ~/.authq)",
    )
    target.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON instead of text"
    )
    tls = target if after_command else target.add_argument_group(TLS_TITLE)
    _add_tls(tls, default)


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    _add_tls(parser.add_argument_group(TLS_TITLE), lambda value: value)


def _add_tls(target: argparse._ActionsContainer, default: Defaults) -> None:
    target.add_argument(
        "--tls-ca",
        default=default(os.environ.get("AUTHQ_TLS_CA")),
        help="CA certificate (PEM) that signed the server's (env AUTHQ_TLS_CA)",
    )
    target.add_argument(
        "--tls-cert",
        default=default(os.environ.get("AUTHQ_TLS_CERT")),
        help="your client certificate (PEM), if the server requires one (env AUTHQ_TLS_CERT)",
    )
    target.add_argument(
        "--tls-key",
        default=default(os.environ.get("AUTHQ_TLS_KEY")),
        help="the private key of --tls-cert (PEM) (env AUTHQ_TLS_KEY)",
    )


def shared_default(after_command: bool) -> Defaults:
    """What becomes of a shared flag's default: on the top-level parser it stands; on
    the commands' copy there is none at all (argparse.SUPPRESS), so that the copy sets
    the flag only when it is given after the command."""
    if not after_command:
        return lambda value: value
    return lambda value: argparse.SUPPRESS


def commands_taking(
    add: Callable[[argparse._ActionsContainer], None],
) -> type[argparse.ArgumentParser]:
    """The parser class, for ``add_subparsers(parser_class=...)``, of commands that
    take the shared flags after their name as well as before it: ``add`` puts them
    (with ``after_command=True``) in one group (SHARED_TITLE) of a parent parser that
    every command is built from. Sub-commands get them too: argparse builds a
    command's sub-commands with the command's own class."""
    shared = argparse.ArgumentParser(add_help=False)
    add(shared.add_argument_group(SHARED_TITLE))

    class CommandParser(argparse.ArgumentParser):
        def __init__(self, **kwargs: Any) -> None:
            kwargs["parents"] = [*kwargs.get("parents", ()), shared]
            super().__init__(**kwargs)

    return CommandParser


def tls_options(args: argparse.Namespace) -> ClientTLS | None:
    """The TLS options given, their files read once now so a missing one is a usage
    error rather than a failure deep inside gRPC."""
    tls = ClientTLS.from_options(args.tls_ca, args.tls_cert, args.tls_key)
    if tls is not None:
        try:
            tls.credentials()
        except OSError as exc:
            raise LoginNeeded(f"TLS: {local_reason(exc)}") from None
    return tls


def _cache(state_dir: Path, user: str) -> Path:
    return state_dir / f"token-{user}.json"


def cached_token(state_dir: Path, user: str) -> str:
    try:
        data = json.loads(_cache(state_dir, user).read_text())
    except (OSError, ValueError):
        return ""
    # A minute of margin: a token about to expire would fail mid-command.
    if int(data.get("expires_at_ms", 0)) < time.time() * 1000 + 60_000:
        return ""
    return str(data.get("token", ""))


def save_token(state_dir: Path, user: str, token: str, expires_at_ms: int) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = _cache(state_dir, user)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"token": token, "expires_at_ms": expires_at_ms}, handle)


def forget_token(state_dir: Path, user: str) -> None:
    _cache(state_dir, user).unlink(missing_ok=True)


def password_from(given: str | None, prompt: str = "password: ") -> str:
    if given:
        return given
    if os.environ.get("AUTHQ_PASSWORD"):
        return os.environ["AUTHQ_PASSWORD"]
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    raise LoginNeeded("no password: pass --password, set AUTHQ_PASSWORD or run interactively")


async def logged_in(
    client_type: type[C],
    target: str,
    user: str,
    password: str | None,
    state_dir: Path,
    tls: ClientTLS | None = None,
    *,
    prog: str,
) -> C:
    """A client logged in as ``user``: with the cached token if there is one and no
    password was given, else by logging in (and caching the new token). ``prog``
    names the command line in what it tells the user to run."""
    token = "" if password else cached_token(state_dir, user)
    if token:
        return client_type(target, user, token=token, tls=tls)
    client = client_type(target, user, password_from(password), tls=tls)
    try:
        reply = await client.login()
    except grpc.aio.AioRpcError as exc:
        await client.close()
        needed = password_change_needed(exc, prog)
        if needed is None:
            raise
        raise needed from None
    except BaseException:
        await client.close()
        raise
    save_token(state_dir, user, reply.token, reply.expires_at_ms)
    return client


def password_change_needed(exc: grpc.aio.AioRpcError, prog: str) -> PasswordChangeNeeded | None:
    """The server names the RPC (ChangePassword); the user needs the command."""
    if reason_of(exc) != "PASSWORD_CHANGE_REQUIRED":
        return None
    details = exc.details() or ""
    return PasswordChangeNeeded(details.replace("ChangePassword", f"`{prog} passwd`"))


async def session_command(client: AuthenticatedClient, args: argparse.Namespace) -> int | None:
    """Runs ``login`` or ``logout`` (the commands every command line has); None for
    any other command."""
    if args.command == "login":
        print(f"logged in as {args.user}")
        return 0
    if args.command == "logout":
        await client.logout()
        forget_token(args.state_dir, args.user)
        print(f"logged out {args.user}")
        return 0
    return None
