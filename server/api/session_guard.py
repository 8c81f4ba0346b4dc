"""Ends a long call when the login it was opened under no longer holds: an account
disabled for leave or deregistered (R12), a token logged out, or the account's roles,
qualification or branch changed (R13: its rights were settled when the call began).
Unary calls are checked as they start; a call that lasts (a session, a watch, a Next
waiting for work) re-checks every REVALIDATE_S seconds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TypeVar

from server.errors import AuthqError

REVALIDATE_S = 1.0

T = TypeVar("T")

# None while the login holds, else the refusal that ends the call.
LoginCheck = Callable[[], Awaitable[AuthqError | None]]


async def watch_login(check: LoginCheck, on_ended: Callable[[AuthqError], None]) -> None:
    while True:
        await asyncio.sleep(REVALIDATE_S)
        try:
            # Shielded: the call ending cancels this guard, and a redis-py call
            # cancelled mid-reply drops its connection unclosed; let it finish.
            refusal = await asyncio.shield(check())
        except Exception:
            continue  # the store is away: that is not a revocation
        if refusal is not None:
            on_ended(refusal)
            return


async def while_login_holds(work: Awaitable[T], check: LoginCheck) -> T:
    """``await work``, unless the login stops holding first: then ``work`` is cancelled
    and the refusal raised. Work already done when that is seen is returned."""
    task = asyncio.ensure_future(work)
    ended: list[AuthqError] = []
    guard = asyncio.create_task(watch_login(check, ended.append))
    try:
        await asyncio.wait((task, guard), return_when=asyncio.FIRST_COMPLETED)
    finally:
        guard.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled() and ended:
        raise ended[0]
    return task.result()


async def while_login_holds_each(
    stream: AsyncGenerator[T, None], check: LoginCheck
) -> AsyncIterator[T]:
    """Yields what ``stream`` yields until the login stops holding, then closes it and
    raises the refusal."""
    ended: list[AuthqError] = []
    guard = asyncio.create_task(watch_login(check, ended.append))
    step: asyncio.Future[T] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(stream))
            await asyncio.wait((step, guard), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                raise ended[0]
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        guard.cancel()
        if step is not None and not step.done():
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await step
        await stream.aclose()
