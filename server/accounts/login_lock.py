"""Refused logins, and the lock on a user id after too many wrong passwords (R11).

After ``failures_before_lock`` wrong passwords in a row for a user id, known or not, its
Login and ChangePassword are refused for ``lock_s``, before any password check, unless
an administrator resets the password or enables the account (account_change.lua); a
login clears the count (session_open.lua). The count and the lock live in one hash per id
(Keys.login_failures), counted by login_failed.lua.

LoginRefused, the base of LoginLocked, is here rather than in store.py: store.py holds a
LoginLock, so this module cannot import store.py."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from server.accounts.model import id_problem
from server.store.audit_records import StagedAudit
from server.store.keys import Keys
from server.store.queue_reads import as_text
from server.store.redis_pipe import ReplyLost
from server.store.scripts import load_script
from server.store.staging import run_audited


class LoginRefused(Exception):
    """Wrong user or password, or an account that may not log in. The message is
    safe to show: it does not tell which of user and password was wrong."""


class LoginLocked(LoginRefused):
    """Too many wrong passwords in a row for the user id: its logins are refused, before
    any password check, for ``seconds_left`` more (R11). Said of an unknown id alike."""

    def __init__(self, user_id: str, failures: int, left_ms: int) -> None:
        # Rounded up: a lock with 300 ms left is not over.
        self.seconds_left = max(1, -(-left_ms // 1000))
        super().__init__(
            f"logins as {user_id} are locked after {failures} wrong passwords in a row: try "
            f"again in {self.seconds_left} s, or ask an administrator to reset the password "
            "(R11)"
        )


class LoginLock:
    """The count of wrong passwords and the lock of each user id, in Redis."""

    def __init__(
        self, client: aioredis.Redis, keys: Keys, failures_before_lock: int, lock_s: int
    ) -> None:
        self.client = client
        self.keys = keys
        self.failures_before_lock = failures_before_lock
        self.lock_s = lock_s
        self._login_failed = load_script(client, "login_failed")

    def locked(self, user_id: str, left_ms: int) -> LoginLocked:
        """The refusal of a login as ``user_id``, locked for ``left_ms`` more."""
        return LoginLocked(user_id, self.failures_before_lock, left_ms)

    async def check(self, user_id: str) -> None:
        """Raises LoginLocked if the id's logins are locked."""
        failures = self.keys.login_failures(user_id)
        if await self.client.hexists(failures, "lk"):
            raise self.locked(user_id, await self.client.pttl(failures))

    async def count_failure(self, user_id: str, lock_audit: StagedAudit | None) -> None:
        """Counts a wrong password for the id, known or not (login_failed.lua); raises
        LoginLocked if it began the lock (then ``lock_audit``, the lock's record, is
        staged in the same step) or found one begun meanwhile."""
        if id_problem(user_id):
            # No account can have this id (ids are checked at creation): nothing to
            # guess, and a key named by an arbitrary string (megabytes) is not kept.
            return
        keys = [self.keys.login_failures(user_id)]
        args: list[Any] = [self.failures_before_lock, self.lock_s]
        try:
            result = await run_audited(self._login_failed, self.keys.audit_staged, lock_audit,
                                       keys, args)  # fmt: skip
        except ReplyLost:
            # Counted or not, the password was wrong: that is the answer. Not sent again:
            # a repeat would count twice.
            return
        if as_text(result[0]) != "COUNTED":
            raise self.locked(user_id, int(result[1]))
