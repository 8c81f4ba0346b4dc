"""Ends a session stream when its login token stops being valid: an account disabled
for leave or deregistered (R12), or logged out. Unary calls check the token on every
call; a long-lived stream re-checks it every REVALIDATE_S seconds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

REVALIDATE_S = 1.0

TokenCheck = Callable[[], Awaitable[bool]]


async def watch_token(still_valid: TokenCheck, on_revoked: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(REVALIDATE_S)
        try:
            # Shielded: the stream ending cancels this guard, and a redis-py call
            # cancelled mid-reply drops its connection unclosed; let it finish.
            valid = await asyncio.shield(still_valid())
        except Exception:
            continue  # the store is away: that is not a revocation
        if not valid:
            on_revoked()
            return
