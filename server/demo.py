"""Demo accounts for `make run`, so the Quick start works on a fresh machine. Never
seeded unless asked for (`authq-server --demo`)."""

from __future__ import annotations

import contextlib

from server.accounts.model import Role
from server.accounts.store import AccountStore
from server.errors import AlreadyExists

DEMO_PASSWORD = "authq-demo-pass"
DEMO_BRANCHES = [("branch-1", "Demo branch 1 (演示网点一)"), ("branch-2", "Demo branch 2")]
DEMO_USERS: list[tuple[str, str, tuple[Role, ...], str]] = [
    ("teller-1", "Demo teller", (Role.TELLER,), "branch-1"),
    ("teller-2", "Demo teller 2", (Role.TELLER,), "branch-2"),
    ("reviewer-1", "Demo on-site reviewer", (Role.ONSITE_REVIEWER,), "branch-1"),
    ("authorizer-1", "Demo authorizer", (Role.AUTHORIZER,), ""),
    ("authorizer-2", "Demo authorizer 2", (Role.AUTHORIZER,), ""),
    ("supervisor-1", "Demo supervisor", (Role.SUPERVISOR,), ""),
    ("supervisor-2", "Demo supervisor 2", (Role.SUPERVISOR,), ""),
    ("director-1", "Demo center director", (Role.DIRECTOR,), ""),
    ("admin-1", "Demo administrator", (Role.ADMIN,), ""),
]


async def seed_demo(accounts: AccountStore) -> list[str]:
    """Creates what is missing; returns one line per demo account for the console."""
    for branch_id, name in DEMO_BRANCHES:
        if not await accounts.branch_exists(branch_id):
            await accounts.create_branch(branch_id, name)
    lines = []
    for user_id, name, roles, branch in DEMO_USERS:
        with contextlib.suppress(AlreadyExists):  # seeded on an earlier start
            await accounts.create_user(
                user_id, name, roles, DEMO_PASSWORD, branch_id=branch, must_change_password=False
            )
        where = f" at {branch}" if branch else ""
        lines.append(f"  {user_id:<13} {'/'.join(roles)}{where}")
    return lines
