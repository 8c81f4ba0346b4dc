"""Accounts and roles, with the rule that no one holds conflicting posts (R11)."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum

from authq.amounts import INT64_MAX


class Role(StrEnum):
    TELLER = "TELLER"
    ONSITE_REVIEWER = "ONSITE_REVIEWER"
    AUTHORIZER = "AUTHORIZER"
    SUPERVISOR = "SUPERVISOR"
    DIRECTOR = "DIRECTOR"
    ADMIN = "ADMIN"


class Status(StrEnum):
    ACTIVE = "ACTIVE"
    # On leave (R12): may not act until enabled again.
    DISABLED = "DISABLED"
    # Left or moved (R12): kept for the history, never acts again.
    DEREGISTERED = "DEREGISTERED"


BRANCH_ROLES = frozenset({Role.TELLER, Role.ONSITE_REVIEWER})
CENTER_ROLES = frozenset({Role.AUTHORIZER, Role.SUPERVISOR, Role.DIRECTOR})


def conflicting_posts(roles: frozenset[Role]) -> str | None:
    """Why a set of roles may not be held by one person (R11), or None.

    Branch staff submit and review what the center authorizes, so nobody holds a
    branch role and a center role; an administrator manages accounts and so holds
    no operational role."""
    if roles & BRANCH_ROLES and roles & CENTER_ROLES:
        return "a branch role (TELLER, ONSITE_REVIEWER) and a center role cannot be combined"
    if Role.ADMIN in roles and len(roles) > 1:
        return "ADMIN holds no operational role"
    if not roles:
        return "an account needs at least one role"
    return None


# A user or branch id: it names its holder in every audit record, report and key, so
# it is plain (no spaces, no separators the records or the keys use).
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# Ids the server itself acts under (the lease reaper, the backlog monitor, the image
# check: server/center.py and the others name it with their origin). A person holding
# one would act in the system's name in the audit trail (R11).
RESERVED_IDS = frozenset({"system"})
NAME_MAX_CHARS = 100


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a new user's or branch's id, or None."""
    if not ID_RE.match(value):
        return (
            "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit; "
            f"got {value!r}"
        )
    if value.lower() in RESERVED_IDS:
        return f"{value!r} is the id the server acts under (R11)"
    return None


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a user's or branch's name, or None."""
    if not value.strip():
        return "a name is needed"
    if len(value) > NAME_MAX_CHARS:
        return f"at most {NAME_MAX_CHARS} characters"
    return None


ALL_TYPES = "*"


@dataclass(frozen=True, slots=True)
class Qualification:
    """What an authorizer may decide: business types ('*' for all) and a ceiling in
    minor units of the local currency (0: no ceiling)."""

    business_types: frozenset[str] = frozenset({ALL_TYPES})
    ceiling_minor: int = 0

    @property
    def allows_all(self) -> bool:
        return ALL_TYPES in self.business_types or not self.business_types

    def allows(self, business_type: str) -> bool:
        return self.allows_all or business_type in self.business_types


def business_types_problem(types: frozenset[str], known: Collection[str]) -> str | None:
    """Why an authorizer may not be qualified for ``types`` under the policy's business
    catalog ``known`` (R2), or None. A misspelt type would otherwise be stored and simply never
    match a request: the authorizer would silently be unqualified for it."""
    unknown = sorted(types - {ALL_TYPES} - set(known))
    if not unknown:
        return None
    return (
        f"unknown business type {', '.join(repr(t) for t in unknown)}: the valid ones are "
        f"{', '.join(sorted(known))}, or {ALL_TYPES} for all"
    )


def ceiling_problem(ceiling_minor: int) -> str | None:
    """Why ``ceiling_minor`` cannot be an authorizer's ceiling, or None."""
    if 0 <= ceiling_minor <= INT64_MAX:
        return None
    return (
        "a positive amount, or 0 for no ceiling, of at most "
        f"{INT64_MAX} minor units; got {ceiling_minor}"
    )


@dataclass(frozen=True, slots=True)
class Account:
    user_id: str
    name: str
    branch_id: str
    roles: frozenset[Role]
    status: Status
    password_set_ms: int
    must_change_password: bool = False
    qualification: Qualification = field(default_factory=Qualification)

    @property
    def active(self) -> bool:
        return self.status is Status.ACTIVE
