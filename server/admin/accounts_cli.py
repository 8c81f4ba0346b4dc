"""``branch`` and ``user`` commands of authq-admin: create branches and accounts,
assign roles and qualifications, disable (leave), enable, deregister (departure),
reset passwords (R11, R12). Every change is written to the audit trail."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO, TypeAlias

from authq.amounts import INT64_MAX

from server.accounts.model import (
    ALL_TYPES,
    Account,
    Qualification,
    Role,
    Status,
    ceiling_problem,
)
from server.accounts.store import AccountStore
from server.domain.money import CURRENCY_EXPONENTS, format_amount, parse_amount
from server.policy.enrollment import Enrollment, EnrollmentStatus
from server.store.audit import AuditEntry, AuditLog
from server.store.audit_records import StagedAudit
from server.store.branches import BranchDirectory


@dataclass(frozen=True, slots=True)
class AdminContext:
    accounts: AccountStore
    audit: AuditLog

    @property
    def actor(self) -> str:
        return f"authq-admin:{os.environ.get('USER', 'operator')}"

    @contextlib.asynccontextmanager
    async def audited(
        self, action: str, target: str, **details: str | int
    ) -> AsyncIterator[StagedAudit]:
        """The change's record, for the store to stage in the same step as the change
        (R15): a kill between the two cannot leave a change unrecorded. Once the change
        is done, the record is chained, so that the trail shows it when the command
        ends; if Redis does not let it, a server's audit writer chains it later."""
        entry = AuditEntry(actor=self.actor, role="ADMIN", origin="cli", action=action,
                           target=target, details=dict(details))  # fmt: skip
        audit = StagedAudit(entry.pack())
        yield audit
        if audit.staged and not await self.audit.drain(timeout_s=CHAIN_WAIT_S):
            print("authq-admin: the change is recorded, and will be chained into the "
                  "audit trail by the next writer", file=sys.stderr)  # fmt: skip


# How long a command waits for its record to be chained before it ends.
CHAIN_WAIT_S = 10.0
AdminRunner = Callable[[AdminContext, argparse.Namespace, TextIO], Awaitable[int]]
# Subscripting _SubParsersAction works for the type checker only (3.11 refuses it).
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
ROLE_NAMES = [role.value for role in Role]
# The currency of an authorizer's ceiling (server/accounts/model.py: Qualification).
LOCAL_CURRENCY = "CNY"
CEILING_RULE = (
    f"expected 0 (no ceiling) or a positive amount in {LOCAL_CURRENCY} with at most "
    f"{CURRENCY_EXPONENTS[LOCAL_CURRENCY]} decimals, up to "
    f"{format_amount(INT64_MAX, LOCAL_CURRENCY)}"
)


def _password(given: str | None, what: str) -> str:
    if given:
        return given
    if not sys.stdin.isatty():
        raise SystemExit("authq-admin: no password: pass --password or run interactively")
    # Typed unseen, so a slip would go unnoticed until the user cannot log in.
    password = getpass.getpass(f"{what} (the user must change it): ")
    if getpass.getpass("the same again: ") != password:
        raise SystemExit("authq-admin: the two passwords differ: nothing was changed")
    return password


def ceiling_arg(text: str) -> int:
    """--ceiling in minor units. argparse reports the error as a usage error (exit 2)."""
    try:
        minor = parse_amount(text, LOCAL_CURRENCY)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: {CEILING_RULE}") from None
    if ceiling_problem(minor):
        raise argparse.ArgumentTypeError(f"{text} is out of range: {CEILING_RULE}")
    return minor


def _qualification(args: argparse.Namespace) -> Qualification | None:
    if args.types is None and args.ceiling is None:
        return None
    return Qualification(_types(args.types or ALL_TYPES), args.ceiling or 0)


def _types(listed: str) -> frozenset[str]:
    """--types: comma-separated business types; none listed means all."""
    return frozenset(t.strip() for t in listed.split(",") if t.strip()) or frozenset({ALL_TYPES})


def describe(account: Account) -> str:
    where = f" at {account.branch_id}" if account.branch_id else ""
    types = ",".join(sorted(account.qualification.business_types))
    ceiling = account.qualification.ceiling_minor
    limit = f" up to {format_amount(ceiling, LOCAL_CURRENCY)}" if ceiling else ""
    return (f"{account.user_id:<16} {account.status.value:<12} {'/'.join(sorted(account.roles))}"
            f"{where}  types {types}{limit}")  # fmt: skip


async def _branch_create(ctx: AdminContext, args: argparse.Namespace, out: TextIO) -> int:
    async with ctx.audited("BRANCH_CREATE", args.branch_id, name=args.name,
                           region=args.region) as audit:  # fmt: skip
        await ctx.accounts.create_branch(args.branch_id, args.name, args.region, audit)
    print(f"branch {args.branch_id} created", file=out)
    return 0


def _branches(ctx: AdminContext) -> BranchDirectory:
    return BranchDirectory(ctx.accounts.client, ctx.accounts.keys, cache_ms=0)


def _enrollment_command(status: EnrollmentStatus) -> AdminRunner:
    async def run(ctx: AdminContext, args: argparse.Namespace, out: TextIO) -> int:
        types = getattr(args, "types", None)
        suspended = frozenset(t.strip() for t in (types or "").split(",") if t.strip())
        try:
            enrollment = Enrollment(status, suspended, args.reason or "")
        except ValueError as exc:
            print(f"authq-admin: {exc}", file=sys.stderr)
            return 1
        async with ctx.audited("BRANCH_ENROLLMENT", args.branch_id, status=status.value,
                               types=",".join(sorted(suspended)),
                               reason=args.reason or "") as audit:  # fmt: skip
            await _branches(ctx).set_enrollment(args.branch_id, enrollment, audit)
        scope = f" for {', '.join(sorted(suspended))}" if suspended else ""
        print(f"branch {args.branch_id}: {status.value}{scope}", file=out)
        return 0

    return run


async def _branch_show(ctx: AdminContext, args: argparse.Namespace, out: TextIO) -> int:
    facts = await _branches(ctx).facts(args.branch_id)
    enrollment = facts.enrollment
    scope = (
        f" for {', '.join(sorted(enrollment.suspended_types))}"
        if enrollment.suspended_types
        else ""
    )
    reason = f" ({enrollment.reason})" if enrollment.reason else ""
    status = enrollment.status.value
    print(f"branch {args.branch_id}: region {facts.region}, {status}{scope}{reason}", file=out)
    for window in facts.windows:
        print(f"  extended hours {window.start:%Y-%m-%d %H:%M}-{window.end:%Y-%m-%d %H:%M} UTC "
              f"approved by {window.approved_by}: {window.reason}", file=out)  # fmt: skip
    return 0


async def _user_create(ctx: AdminContext, args: argparse.Namespace, out: TextIO) -> int:
    roles = frozenset(Role(r) for r in args.role)
    password = _password(args.password, "initial password")
    async with ctx.audited("ACCOUNT_CREATE", args.user_id, roles=",".join(sorted(roles))) as audit:
        account = await ctx.accounts.create_user(
            args.user_id, args.name, roles, password,
            branch_id=args.branch or "", qualification=_qualification(args), audit=audit,
        )  # fmt: skip
    print(describe(account), file=out)
    return 0


async def _user_list(ctx: AdminContext, args: argparse.Namespace, out: TextIO) -> int:
    for account in await ctx.accounts.list():
        print(describe(account), file=out)
    return 0


async def _user_roles(ctx: AdminContext, args: argparse.Namespace, out: TextIO) -> int:
    roles = frozenset(Role(r) for r in args.role)
    async with ctx.audited("ACCOUNT_ROLES", args.user_id, roles=",".join(sorted(roles))) as audit:
        account = await ctx.accounts.set_roles(args.user_id, roles, audit)
    print(describe(account), file=out)
    return 0


async def _user_qualify(ctx: AdminContext, args: argparse.Namespace, out: TextIO) -> int:
    if args.types is None and args.ceiling is None:
        raise SystemExit("authq-admin: user qualify: give --types, --ceiling or both")
    # What is not given stays as it is: --types alone keeps the ceiling, and --ceiling
    # alone keeps the types.
    current = (await ctx.accounts.get(args.user_id)).qualification
    qualification = Qualification(
        current.business_types if args.types is None else _types(args.types),
        current.ceiling_minor if args.ceiling is None else args.ceiling,
    )
    async with ctx.audited("ACCOUNT_QUALIFY", args.user_id,
                           types=",".join(sorted(qualification.business_types)),
                           ceiling_minor=qualification.ceiling_minor) as audit:  # fmt: skip
        account = await ctx.accounts.set_qualification(args.user_id, qualification, audit)
    print(describe(account), file=out)
    return 0


def _status_command(status: Status, action: str) -> AdminRunner:
    async def run(ctx: AdminContext, args: argparse.Namespace, out: TextIO) -> int:
        async with ctx.audited(action, args.user_id, reason=args.reason) as audit:
            account = await ctx.accounts.set_status(args.user_id, status, audit)
        print(describe(account), file=out)
        return 0

    return run


async def _user_reset(ctx: AdminContext, args: argparse.Namespace, out: TextIO) -> int:
    password = _password(args.password, "temporary password")
    async with ctx.audited("ACCOUNT_PASSWORD_RESET", args.user_id) as audit:
        await ctx.accounts.reset_password(args.user_id, password, audit)
    print(f"password of {args.user_id} reset: it must be changed at the next login", file=out)
    return 0


def add_account_commands(subparsers: Subparsers) -> None:
    branch = subparsers.add_parser("branch", help="create branches, enroll or suspend them")
    branch_commands = branch.add_subparsers(dest="branch_command", required=True)
    create = branch_commands.add_parser("create", help="create a branch")
    create.add_argument("branch_id")
    create.add_argument("--name", required=True)
    create.add_argument("--region", default="default")
    create.set_defaults(run_admin=_branch_create)
    show = branch_commands.add_parser("show", help="region, enrollment, extended hours")
    show.add_argument("branch_id")
    show.set_defaults(run_admin=_branch_show)
    for name, enrolment, text in (
        ("enroll", EnrollmentStatus.ENROLLED, "take part in central authorization (R10)"),
        ("suspend", EnrollmentStatus.SUSPENDED, "suspend wholly, or --types only (R10)"),
        ("withdraw", EnrollmentStatus.WITHDRAWN, "withdraw from central authorization"),
    ):
        command = branch_commands.add_parser(name, help=text)
        command.add_argument("branch_id")
        command.add_argument("--reason", required=enrolment is not EnrollmentStatus.ENROLLED,
                             help="why (recorded, and told to the branch's tellers)")  # fmt: skip
        if enrolment is EnrollmentStatus.SUSPENDED:
            command.add_argument("--types", help="business types, comma-separated (default: all)")
        command.set_defaults(run_admin=_enrollment_command(enrolment))

    user = subparsers.add_parser("user", help="manage accounts (R11, R12)")
    commands = user.add_subparsers(dest="user_command", required=True)
    create = commands.add_parser("create", help="create an account")
    create.add_argument("user_id")
    create.add_argument("--name", required=True)
    create.add_argument("--role", action="append", required=True, choices=ROLE_NAMES)
    create.add_argument("--branch", help="the branch of branch staff")
    create.add_argument("--password", help="initial password (else prompted)")
    create.add_argument(
        "--types", help="authorizer: business types of the policy, comma-separated, or *"
    )
    create.add_argument(
        "--ceiling", type=ceiling_arg, help="authorizer: amount ceiling in CNY, e.g. 500000.00"
    )
    create.set_defaults(run_admin=_user_create)
    commands.add_parser("list", help="list accounts").set_defaults(run_admin=_user_list)
    roles = commands.add_parser("roles", help="replace an account's roles")
    roles.add_argument("user_id")
    roles.add_argument("--role", action="append", required=True, choices=ROLE_NAMES)
    roles.set_defaults(run_admin=_user_roles)
    qualify = commands.add_parser(
        "qualify", help="set an authorizer's qualifications; what is not given stays"
    )
    qualify.add_argument("user_id")
    qualify.add_argument("--types", help="business types of the policy, comma-separated, or *")
    qualify.add_argument("--ceiling", type=ceiling_arg, help="amount ceiling in CNY (0: none)")
    qualify.set_defaults(run_admin=_user_qualify)
    for name, status, action, text in (
        ("disable", Status.DISABLED, "ACCOUNT_DISABLE", "on leave: no login, tokens revoked"),
        ("enable", Status.ACTIVE, "ACCOUNT_ENABLE", "back from leave; ends a login lock"),
        ("deregister", Status.DEREGISTERED, "ACCOUNT_REMOVE", "left or moved: never again"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("user_id")
        command.add_argument("--reason", default="")
        command.set_defaults(run_admin=_status_command(status, action))
    reset = commands.add_parser("reset-password", help="set a temporary password")
    reset.add_argument("user_id")
    reset.add_argument("--password", help="temporary password (else prompted)")
    reset.set_defaults(run_admin=_user_reset)
