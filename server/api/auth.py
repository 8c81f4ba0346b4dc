"""AuthService: log in, change the password, log out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeAlias

import grpc
from authq.v1 import auth_pb2 as upb
from authq.v1 import auth_pb2_grpc

from server.accounts.login_lock import LoginLocked, LoginRefused
from server.accounts.store import AccountStore, Session
from server.api.identity import bearer_token
from server.api.status import translate_errors
from server.center import Center, Identity
from server.errors import InvalidArgument, Unauthenticated
from server.store.audit_records import StagedAudit

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def _reply(session: Session) -> upb.LoginReply:
    return upb.LoginReply(
        token=session.token,
        expires_at_ms=session.expires_at_ms,
        user_id=session.account.user_id,
        branch_id=session.account.branch_id,
        roles=[upb.Role.Value("ROLE_" + role.value) for role in sorted(session.account.roles)],
        password_days_left=session.password_days_left,
    )


@contextlib.contextmanager
def _refusals(center: Center, lock: StagedAudit) -> Iterator[None]:
    """Says a refused login as the caller's refusal; wakes the audit writer for the
    record of a lock this attempt began (login_failed.lua staged it)."""
    try:
        yield
    except LoginLocked as exc:
        raise Unauthenticated(
            str(exc), reason="LOGIN_LOCKED", seconds_left=exc.seconds_left
        ) from None
    except LoginRefused as exc:
        raise Unauthenticated(str(exc), reason="LOGIN_REFUSED") from None
    finally:
        if lock.staged:
            center.staged()


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """Every login, failed or not, password change and logout is audited (R11, R15)."""

    def __init__(self, accounts: AccountStore, center: Center) -> None:
        self.accounts = accounts
        self.center = center

    @translate_errors
    async def Login(self, request: upb.LoginRequest, context: Context) -> upb.LoginReply:
        if not request.user_id or not request.password:
            raise InvalidArgument("user_id", "user_id and password are required")
        who = Identity(request.user_id[:64], origin=str(context.peer() or ""))
        async with self.center.audited(who, "LOGIN", who.user_id) as audit:
            lock = self._lock_audit(who)
            with _refusals(self.center, lock):
                session = await self.accounts.login(request.user_id, request.password, audit, lock)
            return _reply(session)

    @translate_errors
    async def ChangePassword(
        self, request: upb.ChangePasswordRequest, context: Context
    ) -> upb.LoginReply:
        who = Identity(request.user_id[:64], origin=str(context.peer() or ""))
        async with self.center.audited(who, "PASSWORD_CHANGE", who.user_id) as audit:
            lock = self._lock_audit(who)
            with _refusals(self.center, lock):
                session = await self.accounts.change_password(
                    request.user_id, request.old_password, request.new_password, audit, lock
                )
            return _reply(session)

    def _lock_audit(self, who: Identity) -> StagedAudit:
        """The record of a login lock, staged only by the wrong password that begins
        one: once per lock, not per attempt refused (R15). The script adds how many
        wrong passwords it took and for how long it locks."""
        return self.center.stage(who, "LOGIN_LOCK", who.user_id)

    @translate_errors
    async def Logout(self, request: upb.LogoutRequest, context: Context) -> upb.LogoutReply:
        # Whose token it is, the script reads as it ends it, and names in the record.
        anyone = Identity("", origin=str(context.peer() or ""))
        audit = self.center.stage(anyone, "LOGOUT", "")
        await self.accounts.logout(bearer_token(context), audit)
        if audit.staged:
            self.center.staged()
        return upb.LogoutReply()
