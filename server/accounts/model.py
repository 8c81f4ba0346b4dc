"""Accounts and roles, with the rule that no one holds conflicting posts (R11)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


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


@dataclass(frozen=True, slots=True)
class Qualification:
    """What an authorizer may decide: business types ('*' for all) and a ceiling in
    minor units of the local currency (0: no ceiling)."""

    business_types: frozenset[str] = frozenset({"*"})
    ceiling_minor: int = 0

    @property
    def allows_all(self) -> bool:
        return "*" in self.business_types or not self.business_types

    def allows(self, business_type: str) -> bool:
        return self.allows_all or business_type in self.business_types


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
