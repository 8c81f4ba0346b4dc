"""Demo accounts for `make run` and `make demo`, so the Quick start and the live demo
work on a fresh machine. Never seeded unless asked for (`authq-server --demo`).

Four branches with two tellers and one on-site reviewer each, and authorizers whose
qualifications differ, so routing by qualification shows in the demo. Each is created
with its audit record, as authq-admin creates them (R15), so that the demo's trail,
reports and verify read as a real center's do."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass

from server.accounts.model import Qualification, Role
from server.accounts.store import AccountStore
from server.center import Center, Identity
from server.errors import AlreadyExists, NotFound

DEMO_PASSWORD = "authq-demo-pass"
# Who the demo's creations are recorded under: the server itself, seeding.
DEMO_SEEDER = Identity(user_id="system", origin="demo-seed")
BRANCH_COUNT = 4
DEMO_REGION = "default"
DEMO_BRANCHES = [
    ("branch-1", "Demo branch 1 (演示网点一)"),
    ("branch-2", "Demo branch 2 (演示网点二)"),
    ("branch-3", "Demo branch 3 (演示网点三)"),
    ("branch-4", "Demo branch 4 (演示网点四)"),
]
CASH_BUSINESS = frozenset(
    {"CASH_DEPOSIT", "CASH_WITHDRAWAL", "CASH_TO_ACCOUNT_TRANSFER", "CARD_CASH_ADVANCE"}
)
ACCOUNT_BUSINESS = frozenset({"ACCOUNT_OPEN", "ACCOUNT_CLOSE", "REMITTANCE", "WEALTH_PURCHASE"})


def _cny(yuan: int) -> int:
    return yuan * 100


@dataclass(frozen=True, slots=True)
class DemoUser:
    user_id: str
    name: str
    role: Role
    branch: str = ""
    qualification: Qualification | None = None

    @property
    def note(self) -> str:
        """Where the account works or what it may decide, for the start-up listing."""
        if self.branch:
            return self.branch
        q = self.qualification
        if q is None or self.role is not Role.AUTHORIZER:
            return ""
        types = "all types" if q.allows_all else "+".join(sorted(q.business_types))
        if q.business_types == CASH_BUSINESS:
            types = "cash"
        elif q.business_types == ACCOUNT_BUSINESS:
            types = "accounts/remittance/wealth"
        ceiling = f"<= CNY {q.ceiling_minor // 100:,}" if q.ceiling_minor else "no ceiling"
        return f"{types}, {ceiling}"


def _branch_of(n: int) -> str:
    # teller-N at branch ((N-1) mod 4) + 1 keeps teller-1 at branch-1 and teller-2 at
    # branch-2, as the Quick start has always had them.
    return f"branch-{(n - 1) % BRANCH_COUNT + 1}"


DEMO_TELLERS = tuple(f"teller-{n}" for n in range(1, 2 * BRANCH_COUNT + 1))
EVERYTHING = Qualification(frozenset({"*"}), 0)
DEMO_USERS: list[DemoUser] = [
    *(
        DemoUser(t, f"Demo teller {t[7:]}", Role.TELLER, _branch_of(int(t[7:])))
        for t in DEMO_TELLERS
    ),
    *(
        DemoUser(f"reviewer-{n}", f"Demo on-site reviewer {n}", Role.ONSITE_REVIEWER, f"branch-{n}")
        for n in range(1, BRANCH_COUNT + 1)
    ),
    DemoUser("authorizer-1", "Demo authorizer 1", Role.AUTHORIZER, qualification=EVERYTHING),
    DemoUser("authorizer-2", "Demo authorizer 2", Role.AUTHORIZER, qualification=EVERYTHING),
    DemoUser(
        "authorizer-3",
        "Demo cash authorizer",
        Role.AUTHORIZER,
        qualification=Qualification(CASH_BUSINESS, _cny(200_000)),
    ),
    DemoUser(
        "authorizer-4",
        "Demo accounts authorizer",
        Role.AUTHORIZER,
        qualification=Qualification(ACCOUNT_BUSINESS, _cny(500_000)),
    ),
    DemoUser(
        "authorizer-5",
        "Demo junior authorizer",
        Role.AUTHORIZER,
        qualification=Qualification(frozenset({"*"}), _cny(50_000)),
    ),
    DemoUser("supervisor-1", "Demo supervisor", Role.SUPERVISOR),
    DemoUser("supervisor-2", "Demo supervisor 2", Role.SUPERVISOR),
    DemoUser("director-1", "Demo center director", Role.DIRECTOR),
    DemoUser("admin-1", "Demo administrator", Role.ADMIN),
]


async def _ensure(accounts: AccountStore, center: Center, user: DemoUser) -> None:
    try:
        await accounts.get(user.user_id)
        return  # seeded on an earlier start: no scrypt hash again
    except NotFound:
        pass
    # AlreadyExists: another server process seeding at the same moment (recorded as
    # a refusal, as the same race between two administrators would be).
    with contextlib.suppress(AlreadyExists):
        async with center.audited(DEMO_SEEDER, "ACCOUNT_CREATE", user.user_id,
                                  roles=user.role.value) as audit:  # fmt: skip
            await accounts.create_user(
                user.user_id,
                user.name,
                (user.role,),
                DEMO_PASSWORD,
                branch_id=user.branch,
                qualification=user.qualification,
                must_change_password=False,
                audit=audit,
            )


def listing(users: list[DemoUser]) -> list[str]:
    """One line per role, accounts grouped by where they work or what they may decide."""
    by_role: dict[Role, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for user in users:
        by_role[user.role][user.note].append(user.user_id)
    lines = []
    for role, groups in by_role.items():
        parts = [" ".join(ids) + (f" ({note})" if note else "") for note, ids in groups.items()]
        lines.append(f"  {role.value:<16} " + "; ".join(parts))
    return lines


async def seed_demo(accounts: AccountStore, center: Center) -> list[str]:
    """Creates what is missing; returns one line per role group for the console."""
    for branch_id, name in DEMO_BRANCHES:
        if await accounts.branch_exists(branch_id):
            continue
        with contextlib.suppress(AlreadyExists):
            async with center.audited(DEMO_SEEDER, "BRANCH_CREATE", branch_id, name=name,
                                      region=DEMO_REGION) as audit:  # fmt: skip
                await accounts.create_branch(branch_id, name, DEMO_REGION, audit)
    # Password hashing runs in threads: side by side, a fresh seed takes a fraction
    # of the time one after another would.
    await asyncio.gather(*(_ensure(accounts, center, user) for user in DEMO_USERS))
    return listing(DEMO_USERS)
