"""authq-admin: operator commands run against the queue's Redis: branches and
accounts, and the audit trail. Exit codes: 0 all well, 1 the check or the change
failed (e.g. a broken audit chain, a refused role), 2 usage error or Redis unreachable."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import redis.asyncio as aioredis

from server.accounts.store import AccountStore, BusinessTypes, shipped_business_types
from server.admin.accounts_cli import AdminContext, add_account_commands
from server.admin.archive_cli import add_archive_commands, archive_root
from server.admin.audit_cli import add_audit_commands
from server.admin.report_cli import add_report_command
from server.errors import AuthqError
from server.policy.loader import load_policy
from server.policy.model import PolicyError
from server.store.audit import DEFAULT_PREFIX, AuditLog
from server.store.audit_segments import AuditSegments
from server.store.connect import admin_client
from server.store.keys import Keys
from server.store.redis_pipe import shown_url


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authq-admin", description=__doc__)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("AUTHQ_REDIS_URL"),
        help="the queue's Redis, e.g. redis://host:6379/0 (default: $AUTHQ_REDIS_URL, else "
        "the embedded Redis of --data-dir)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("AUTHQ_DATA_DIR", "var")),
        help="the server's data directory, to reach its embedded Redis (default: "
        "$AUTHQ_DATA_DIR, else ./var)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        default=os.environ.get("AUTHQ_POLICY"),
        help="the server's business policy, whose business types an authorizer may be "
        "qualified for (default: $AUTHQ_POLICY, else the built-in one)",
    )
    parser.add_argument("--key-prefix", default=DEFAULT_PREFIX, help="default: %(default)s")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_account_commands(commands)
    add_audit_commands(commands)
    add_archive_commands(commands)
    add_report_command(commands)
    return parser


async def _run(args: argparse.Namespace) -> int:
    client = admin_client(args.redis_url)
    try:
        log = AuditLog(
            client, prefix=args.key_prefix, segments=AuditSegments.in_archive(archive_root(args))
        )
        if hasattr(args, "run_admin"):
            accounts = AccountStore(client, Keys(args.key_prefix),
                                    business_types=_business_types(args.policy))  # fmt: skip
            context = AdminContext(accounts, log)
            code: int = await args.run_admin(context, args, sys.stdout)
        else:
            code = await args.run(log, args, sys.stdout)
        return code
    except AuthqError as exc:
        print(f"authq-admin: {exc}", file=sys.stderr)
        return 1
    except PolicyError as exc:
        print(f"authq-admin: --policy: {exc}", file=sys.stderr)
        return 2
    except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
        shown = shown_url(args.redis_url)
        print(f"authq-admin: cannot reach Redis at {shown}: {exc}", file=sys.stderr)
        return 2
    finally:
        await client.aclose()


def _business_types(policy: Path | None) -> BusinessTypes:
    if policy is None:
        return shipped_business_types
    return lambda: load_policy(policy).default.businesses.keys()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.redis_url:
        socket = args.data_dir / "redis" / "redis.sock"
        if not socket.exists():
            parser.error(
                f"no Redis: pass --redis-url, set AUTHQ_REDIS_URL, or start the server with "
                f"its embedded Redis under {args.data_dir}"
            )
        args.redis_url = f"unix://{socket.resolve()}"
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
