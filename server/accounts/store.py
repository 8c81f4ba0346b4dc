"""Accounts, branches and login tokens in Redis.

A token is 32 random bytes; Redis keeps only its sha256, so a copy of the database
holds no usable token. Each account lists its token keys, so disabling it (leave) or
deregistering it (departure) revokes them all in the same transaction."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import redis.asyncio as aioredis

from server.accounts.login_lock import LoginLock, LoginRefused
from server.accounts.model import (
    BRANCH_ROLES,
    Account,
    Qualification,
    Role,
    Status,
    business_types_problem,
    ceiling_problem,
    conflicting_posts,
    id_problem,
    name_problem,
)
from server.accounts.passwords import (
    REUSE_DEPTH,
    hash_password,
    password_problem,
    reuses,
    verify_password,
)
from server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from server.policy.loader import load_policy
from server.store.audit_records import StagedAudit
from server.store.keys import Keys
from server.store.queue_reads import as_text
from server.store.scripts import load_script
from server.store.staging import run_audited

DAY_MS = 86_400_000
# The business types an authorizer may be qualified for: those of the policy in force.
BusinessTypes = Callable[[], Collection[str]]


@functools.cache
def shipped_business_types() -> frozenset[str]:
    """The business types of server/policy/default_policy.toml, for a store given none."""
    return frozenset(load_policy().default.businesses)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    account: Account
    expires_at_ms: int
    password_days_left: int


class ChangeFollower(Protocol):
    """Told of this process's own account changes as each call returns. Other
    processes learn of them from Redis (a keyspace notification for a token, a message
    on the account changes channel for an account), which arrives a moment later on a
    connection of their own: the process that made a change must not serve the old
    account in that moment (R12)."""

    def revoke(self, digest: str) -> None:
        """The token with this digest ended (a logout)."""

    def account_changed(self, user_id: str) -> None:
        """The account changed: forget every token of it."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class AccountStore:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        *,
        token_ttl_s: int = 8 * 3600,
        password_max_age_days: int = 90,
        login_failures_before_lock: int = 5,
        login_lock_s: int = 900,
        business_types: BusinessTypes = shipped_business_types,
        follower: ChangeFollower | None = None,
    ) -> None:
        self.client = client
        self.follower = follower
        self.keys = keys
        # A callable, so that a reloaded policy's catalog applies at once.
        self.business_types = business_types
        self.token_ttl_s = token_ttl_s
        self.password_max_age_days = password_max_age_days
        self.login_lock = LoginLock(client, keys, login_failures_before_lock, login_lock_s)
        self._authenticate = load_script(client, "authenticate")
        self._logout = load_script(client, "logout")
        self._create_once = load_script(client, "create_once")
        self._account_change = load_script(client, "account_change")
        self._session_open = load_script(client, "session_open")

    # Every change below is one step in Redis (a script or a MULTI/EXEC transaction),
    # and ``audit``, the change's record, is staged in that step (R15): a kill cannot
    # leave half an account, nor an account changed without its record.

    # -- branches ------------------------------------------------------------------

    async def create_branch(
        self, branch_id: str, name: str, region: str = "default",
        audit: StagedAudit | None = None,
    ) -> None:  # fmt: skip
        _check_new(branch_id, name, "branch_id")
        if not region.strip():
            raise InvalidArgument("region", "a branch needs a region")
        key = self.keys.branch(branch_id)
        if not await self._create(key, self.keys.branches, branch_id,
                                  {"name": name, "region": region}, audit):  # fmt: skip
            raise AlreadyExists(f"branch {branch_id} exists")

    async def branch_exists(self, branch_id: str) -> bool:
        return bool(await self.client.exists(self.keys.branch(branch_id)))

    # -- accounts ------------------------------------------------------------------

    async def create_user(
        self,
        user_id: str,
        name: str,
        roles: Iterable[Role],
        password: str,
        *,
        branch_id: str = "",
        qualification: Qualification | None = None,
        must_change_password: bool = True,
        audit: StagedAudit | None = None,
    ) -> Account:
        _check_new(user_id, name, "user_id")
        role_set = frozenset(roles)
        problem = conflicting_posts(role_set)
        if problem:
            raise InvalidArgument("roles", f"{problem} (R11)")
        if role_set & {Role.TELLER, Role.ONSITE_REVIEWER} and not branch_id:
            raise InvalidArgument("branch", "branch staff need a branch")
        if qualification is not None:
            self._check_qualification(qualification)
        if branch_id and not await self.branch_exists(branch_id):
            raise NotFound(f"no branch {branch_id}: create it first")
        problem = password_problem(password, user_id)
        if problem:
            raise InvalidArgument("password", problem)
        account = Account(
            user_id=user_id,
            name=name,
            branch_id=branch_id,
            roles=role_set,
            status=Status.ACTIVE,
            password_set_ms=_now_ms(),
            must_change_password=must_change_password,
            qualification=qualification or Qualification(),
        )
        password_hash = await asyncio.to_thread(hash_password, password)
        fields: dict[str, Any] = {"id": user_id, **_fields(account), "pw": password_hash}
        if not await self._create(self.keys.account(user_id), self.keys.accounts, user_id,
                                  fields, audit):  # fmt: skip
            raise AlreadyExists(f"account {user_id} exists")
        return account

    async def _create(
        self, key: str, listed_in: str, member: str, fields: dict[str, Any],
        audit: StagedAudit | None,
    ) -> bool:  # fmt: skip
        """Creates the hash and lists it, with ``audit``, in one script; False if it
        existed (then nothing changed and nothing was staged)."""
        flat = [member, *itertools.chain.from_iterable(fields.items())]
        result = await run_audited(
            self._create_once, self.keys.audit_staged, audit, [key, listed_in], flat
        )
        return as_text(result[0]) == "OK"

    async def _changed(
        self, user_id: str, fields: dict[str, Any], audit: StagedAudit | None,
        *, revoke: bool = False, unlock: bool = False,
    ) -> None:  # fmt: skip
        """Sets fields of an account that exists and was not deregistered, with
        ``audit``, in one script; with ``revoke``, ends every session of it too; with
        ``unlock``, clears its login lock and count of wrong passwords."""
        # A change that sets the password keeps the one it replaces (password history).
        depth = REUSE_DEPTH - 1 if "pw" in fields else 0
        flat = ["1" if revoke else "0", depth, self.keys.account_changes, user_id,
                "1" if unlock else "0", *itertools.chain.from_iterable(fields.items())]  # fmt: skip
        keys = [self.keys.account(user_id), self.keys.account_tokens(user_id),
                self.keys.login_failures(user_id)]  # fmt: skip
        try:
            result = await run_audited(self._account_change, self.keys.audit_staged, audit,
                                       keys, flat)  # fmt: skip
        finally:
            # Also when the reply was lost: the change may have landed, and forgetting
            # an account that did not change costs one lookup.
            if self.follower is not None:
                self.follower.account_changed(user_id)
        answer = as_text(result[0])
        if answer == "NOT_FOUND":
            raise NotFound(f"no account {user_id}")
        if answer == "DEREGISTERED":
            raise FailedPrecondition(
                f"account {user_id} was deregistered: it is kept as it was for the history "
                "and never changes again (R12)"
            )

    async def get(self, user_id: str) -> Account:
        fields = await self.client.hgetall(self.keys.account(user_id))
        if not fields:
            raise NotFound(f"no account {user_id}")
        return _account(user_id, fields)

    async def list(self) -> list[Account]:
        ids = sorted(as_text(u) for u in await self.client.smembers(self.keys.accounts))
        return [await self.get(user_id) for user_id in ids]

    async def set_roles(
        self, user_id: str, roles: Iterable[Role], audit: StagedAudit | None = None
    ) -> Account:
        account = await self.get(user_id)
        role_set = frozenset(roles)
        problem = conflicting_posts(role_set)
        if problem:
            raise InvalidArgument("roles", f"{problem} (R11)")
        if role_set & BRANCH_ROLES and not account.branch_id:
            raise InvalidArgument(
                "roles", f"branch staff need a branch, and {user_id} has none: create a "
                "branch account for them"
            )  # fmt: skip
        await self._changed(user_id, {"roles": ",".join(sorted(role_set))}, audit)
        return replace(account, roles=role_set)

    async def set_qualification(
        self, user_id: str, qualification: Qualification, audit: StagedAudit | None = None
    ) -> Account:
        self._check_qualification(qualification)
        account = await self.get(user_id)
        fields = {
            "qt": ",".join(sorted(qualification.business_types)),
            "qc": qualification.ceiling_minor,
        }
        await self._changed(user_id, fields, audit)
        return replace(account, qualification=qualification)

    def _check_qualification(self, qualification: Qualification) -> None:
        known = self.business_types()
        problem = business_types_problem(qualification.business_types, known)
        if problem:
            raise InvalidArgument("types", problem)
        problem = ceiling_problem(qualification.ceiling_minor)
        if problem:
            raise InvalidArgument("ceiling", problem)

    async def set_status(
        self, user_id: str, status: Status, audit: StagedAudit | None = None
    ) -> Account:
        """``audit``: the change's record, staged in the same step (R15). Leave or
        departure revokes every token at once (R12); an enable (ACTIVE, also of an
        account that was) ends a login lock, so that a locked-out user can be helped."""
        account = await self.get(user_id)
        active = status is Status.ACTIVE
        await self._changed(user_id, {"st": status.value}, audit, revoke=not active,
                            unlock=active)  # fmt: skip
        return replace(account, status=status)

    async def reset_password(
        self, user_id: str, password: str, audit: StagedAudit | None = None
    ) -> None:
        """An administrator's reset: the user must choose a new one at next login. A
        password is reset when forgotten or known to others: every session opened with
        the old one ends in the same step, and a login lock with them."""
        await self.get(user_id)
        problem = password_problem(password, user_id)
        if problem:
            raise InvalidArgument("password", problem)
        password_hash = await asyncio.to_thread(hash_password, password)
        # The password replaced stays in the history (account_change.lua): a reset is no
        # way back to it.
        fields = {"pw": password_hash, "pwat": _now_ms(), "mc": "1"}
        await self._changed(user_id, fields, audit, revoke=True, unlock=True)

    # -- login ---------------------------------------------------------------------

    async def login(
        self, user_id: str, password: str, audit: StagedAudit | None = None,
        lock_audit: StagedAudit | None = None,
    ) -> Session:  # fmt: skip
        """A session for the user. ``audit``: the login's record, staged in the same
        step as the session (R15); ``lock_audit``: the record of a login lock, staged
        if this attempt's wrong password begins one."""
        account, verified = await self._check_password(user_id, password, lock_audit)
        if account.must_change_password:
            raise FailedPrecondition(
                f"the password of {user_id} was set by an administrator: choose your own "
                "with ChangePassword (R11)",
                reason="PASSWORD_CHANGE_REQUIRED",
                user_id=user_id,
                why="reset",
            )
        left_ms = self._password_left_ms(account)
        if left_ms < 0:
            raise FailedPrecondition(
                f"the password of {user_id} is older than {self.password_max_age_days} "
                "days: change it with ChangePassword (R11)",
                reason="PASSWORD_CHANGE_REQUIRED",
                user_id=user_id,
                why="expired",
            )
        # Rounded up: a password with hours left still has a day, not none.
        return await self._issue(account, verified, -(-left_ms // DAY_MS), audit)

    async def change_password(
        self, user_id: str, old: str, new: str, audit: StagedAudit | None = None,
        lock_audit: StagedAudit | None = None,
    ) -> Session:  # fmt: skip
        """Sets the user's own new password and opens a session, in one step with
        ``audit``, the change's record (R15); ``lock_audit`` as for login."""
        account, verified = await self._check_password(user_id, old, lock_audit)
        problem = password_problem(new, user_id)
        if problem:
            raise InvalidArgument("new_password", problem)
        if new == old:
            raise InvalidArgument("new_password", "must differ from the old password")
        previous = await self._recent_hashes(user_id)
        if await asyncio.to_thread(reuses, new, previous):
            raise InvalidArgument(
                "new_password", f"may not be any of the last {REUSE_DEPTH} passwords of the "
                "account (R11: credentials are rotated)",
            )  # fmt: skip
        password_hash = await asyncio.to_thread(hash_password, new)
        account = replace(account, password_set_ms=_now_ms(), must_change_password=False)
        return await self._issue(
            account, verified, self.password_max_age_days, audit, password_hash
        )

    async def _recent_hashes(self, user_id: str) -> Sequence[str]:
        """The hashes of the account's last passwords, newest first: the current one,
        then those it replaced (none for an account stored before they were kept)."""
        current, replaced = await self.client.hmget(self.keys.account(user_id), ["pw", "pwh"])
        hashes = [as_text(current)] if current else []
        return hashes + (as_text(replaced).split() if replaced else [])

    async def _check_password(
        self, user_id: str, password: str, lock_audit: StagedAudit | None
    ) -> tuple[Account, str]:
        """The account, as read before the check, and the password hash verified."""
        # Before the scrypt check: a brute force against a locked id costs no CPU.
        await self.login_lock.check(user_id)
        fields = await self.client.hgetall(self.keys.account(user_id))
        stored = as_text(fields.get(b"pw", b"")) if fields else ""
        # Hash even for an unknown user, so timing does not tell users apart.
        ok = await asyncio.to_thread(verify_password, password, stored or _DUMMY_HASH)
        if not fields or not ok:
            await self.login_lock.count_failure(user_id, lock_audit)
            raise LoginRefused("unknown user or wrong password")
        account = _account(user_id, fields)
        if not account.active:
            raise LoginRefused(_inactive(user_id, account.status))
        return account, stored

    def _password_left_ms(self, account: Account) -> int:
        """How long the password may still be used (R11): negative once it is older than
        password_max_age_days, to the millisecond, not in whole days."""
        age_ms = _now_ms() - account.password_set_ms
        return self.password_max_age_days * DAY_MS - age_ms

    async def _issue(
        self, account: Account, verified: str, days_left: int, audit: StagedAudit | None,
        password_hash: str = "",
    ) -> Session:  # fmt: skip
        """A new session token, and the action's audit record, in one script; with
        ``password_hash``, the user's own new password, set at the account's
        ``password_set_ms``; the one it replaces goes into the history in that step.
        The account was read before the password check: the script opens the session
        only if it is still active and no administrator reset the password since
        ``verified``, the hash checked, was read (R12)."""
        token = secrets.token_urlsafe(32)
        user_id = account.user_id
        key = self.keys.token(token_digest(token))
        keys = [self.keys.account(user_id), self.keys.account_tokens(user_id), key,
                self.keys.login_failures(user_id)]  # fmt: skip
        args: list[Any] = [verified, user_id, self.token_ttl_s, password_hash,
                           account.password_set_ms, REUSE_DEPTH - 1]  # fmt: skip
        result = await run_audited(self._session_open, self.keys.audit_staged, audit, keys, args)
        if as_text(result[0]) == "LOCKED":  # too many wrong passwords during the check
            raise self.login_lock.locked(user_id, int(result[1]))
        if as_text(result[0]) == "REFUSED":
            status = Status(as_text(result[1]))
            if status is Status.ACTIVE:  # an administrator reset the password meanwhile
                raise LoginRefused("unknown user or wrong password")
            raise LoginRefused(_inactive(user_id, status))
        expires = _now_ms() + self.token_ttl_s * 1000
        return Session(token, account, expires, days_left)

    async def logout(self, token: str, audit: StagedAudit | None = None) -> str:
        """Ends the token; returns whose it was ('' for an unknown one). ``audit``: the
        logout's record without its user, whom the script names and stages it for in
        the same step (R15)."""
        digest = token_digest(token)
        keys = [self.keys.token(digest)]
        args: list[Any] = [self.keys.account_tokens("")]
        try:
            result = await run_audited(self._logout, self.keys.audit_staged, audit, keys, args)
        finally:
            if self.follower is not None:
                self.follower.revoke(digest)
        return as_text(result[1]) if as_text(result[0]) == "OK" else ""

    async def authenticate(self, token: str) -> Account | None:
        """The active account holding a valid token, or None."""
        result = await self._authenticate(
            keys=[self.keys.token(token_digest(token))], args=[self.keys.account_prefix]
        )
        if not result or not result[1]:
            return None
        flat = result[1]
        fields = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
        account = _account(as_text(result[0]), fields)
        return account if account.active else None


_DUMMY_HASH = hash_password("not-a-password-of-anyone")


def _inactive(user_id: str, status: Status) -> str:
    return f"account {user_id} is {status.value.lower()} (R12)"


def _check_new(new_id: str, name: str, id_field: str) -> None:
    problem = id_problem(new_id)
    if problem:
        raise InvalidArgument(id_field, problem)
    problem = name_problem(name)
    if problem:
        raise InvalidArgument("name", problem)


def _fields(account: Account) -> dict[str, Any]:
    return {
        "name": account.name,
        "br": account.branch_id,
        "roles": ",".join(sorted(account.roles)),
        "st": account.status.value,
        "pwat": account.password_set_ms,
        "mc": "1" if account.must_change_password else "0",
        "qt": ",".join(sorted(account.qualification.business_types)),
        "qc": account.qualification.ceiling_minor,
    }


def _account(user_id: str, fields: dict[Any, Any]) -> Account:
    def get(name: str, default: str = "") -> str:
        value = fields.get(name.encode(), fields.get(name))
        return as_text(value) if value is not None else default

    roles = frozenset(Role(r) for r in get("roles").split(",") if r)
    types = frozenset(t for t in get("qt", "*").split(",") if t) or frozenset({"*"})
    return Account(
        user_id=user_id,
        name=get("name"),
        branch_id=get("br"),
        roles=roles,
        status=Status(get("st", "ACTIVE")),
        password_set_ms=int(get("pwat", "0")),
        must_change_password=get("mc") == "1",
        qualification=Qualification(types, int(get("qc", "0") or 0)),
    )
