"""Who is calling: established by the server from the caller's login token (sent as
``authorization: Bearer <token>`` metadata), never from a message field (R11)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from server.accounts.model import Account, Role
from server.accounts.store import AccountStore, token_digest
from server.api.rights import RIGHTS
from server.api.session_guard import LoginCheck
from server.api.token_cache import TokenCache
from server.center import Identity
from server.errors import AccountChanged, AuthqError, PermissionDenied, Unauthenticated

AUTH_KEY = "authorization"


def bearer_token(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == AUTH_KEY and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    raise Unauthenticated(
        f"missing {AUTH_KEY} metadata: log in with AuthService.Login and send 'Bearer <token>'",
        reason="TOKEN_MISSING",
    )


Refusal = Callable[[Identity, str, str], Awaitable[None]]


class Authenticator:
    def __init__(
        self,
        accounts: AccountStore,
        on_refusal: Refusal | None = None,
        tokens: TokenCache | None = None,
    ) -> None:
        self.accounts = accounts
        # Verified tokens, dropped the moment Redis reports a revocation (token_cache.py).
        self.tokens = tokens
        # Each refusal is audited (issue: "Each refusal is PERMISSION_DENIED naming the
        # rule, and is audited").
        self.on_refusal = on_refusal

    async def identify(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> Identity:
        account = await self.account(bearer_token(context))
        if account is None:
            raise Unauthenticated(
                "the token is unknown, expired or revoked: log in again", reason="TOKEN_INVALID"
            )
        identity = Identity(
            user_id=account.user_id,
            branch_id=account.branch_id,
            roles=account.roles,
            qualification=account.qualification,
            origin=str(context.peer() or ""),
        )
        allowed = RIGHTS.get(method, frozenset())
        if not account.roles & allowed:
            held = ", ".join(sorted(account.roles)) or "no role"
            needed = ", ".join(sorted(allowed)) or "no one"
            refusal = PermissionDenied(
                f"{method} is for {needed}; {account.user_id} holds {held} (R13)",
                reason="ROLE_LACKS_RIGHT",
                method=method,
                needed=",".join(sorted(allowed)),
                held=",".join(sorted(account.roles)),
            )
            if self.on_refusal is not None:
                await self.on_refusal(identity, method, str(refusal))
            raise refusal
        return identity

    async def account(self, token: str) -> Account | None:
        """The active account holding the token, from the cache while it is live."""
        cache = self.tokens
        if cache is None:
            return await self.accounts.authenticate(token)
        digest = token_digest(token)
        account = cache.get(digest)
        if account is None:
            generation = cache.generation
            account = await self.accounts.authenticate(token)
            if account is not None:
                cache.put(digest, account, generation)
        return account

    def login_check(
        self, context: grpc.aio.ServicerContext[Any, Any], identity: Identity
    ) -> LoginCheck:
        """What a long call opened with ``context`` re-checks (session_guard.py): that
        its login holds as it was when ``identity`` was established."""
        token = bearer_token(context)
        return lambda: self.still_holds(token, identity)

    async def still_holds(self, token: str, identity: Identity) -> AuthqError | None:
        """None while ``token`` still logs in an active account with the rights
        ``identity`` was given; else the refusal that ends a long call made with it.
        Uncached on purpose: this is the backstop that ends a long call within a
        second whatever happens to the cache's notifications."""
        account = await self.accounts.authenticate(token)
        if account is None:
            return Unauthenticated(
                "the login token was revoked or the account disabled: call ended (R12)",
                reason="TOKEN_INVALID",
            )
        rights = (account.roles, account.qualification, account.branch_id)
        if rights != (identity.roles, identity.qualification, identity.branch_id):
            return AccountChanged(account.user_id)
        return None


__all__ = ["AUTH_KEY", "Authenticator", "Role", "bearer_token"]
