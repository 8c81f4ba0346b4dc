"""A background loop that stops for sure.

Cancelling a task is not enough on its own: a library that catches CancelledError
on the way (redis-py's reconnect path has done so) leaves the task running, and a
stop that awaits it hangs. So a loop also checks a flag, is woken to see it, and the
stop waits a bounded time.

A body that raises is logged and started again: a loop that ended on an error nobody
foresaw (an error reply where only lost connections were expected) would otherwise
leave the process running without it, and nothing would say so."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

# The pause before a failed body starts again, doubling while it keeps failing soon
# after each start.
RESTART_FIRST_S = 0.1
RESTART_MAX_S = 5.0
# A body that ran this long before failing is started again after the first pause.
RAN_WELL_S = 30.0

# Restarts by loop name, for the metrics endpoint (server/metrics/registry.py). Kept
# for the process, not on the loop objects: the parts that make loops know nothing of
# metrics, some start before them, and a counter must not fall when a loop is made
# again.
RESTARTS: dict[str, int] = {}


class BackgroundLoop:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = False
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # How often the body was started again after an error.
        self.restarts = 0
        # Listed at 0 from the start, so that an alert on an increase sees the first.
        RESTARTS.setdefault(name, 0)

    async def nap(self, timeout_s: float | None) -> None:
        """Returns when woken, or after ``timeout_s`` (None: only when woken); at once
        when stopping (a body that cleared ``wake`` after stop() set it would sleep
        out its timeout, and stop() with it)."""
        if self.stopping:
            return
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
        # that races with the event being set, and stop() hangs.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.wake.wait()

    def start(self, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._task = asyncio.create_task(self._supervise(body), name=self.name)

    async def _supervise(self, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        clock = asyncio.get_running_loop().time
        pause = RESTART_FIRST_S
        while not self.stopping:
            started = clock()
            try:
                await body()
                return
            except Exception:
                if self.stopping:
                    raise
                if clock() - started >= RAN_WELL_S:
                    pause = RESTART_FIRST_S
                log.exception("%s failed; starting it again in %gs", self.name, pause)
            self.restarts += 1
            RESTARTS[self.name] += 1
            # A plain sleep, not nap(): a loop woken on every event would restart at once.
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESTART_MAX_S)

    async def stop(self, timeout_s: float = 5.0) -> None:
        self.stopping = True
        self.wake.set()
        task = self._task
        if task is None:
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            log.warning("%s did not stop within %.0fs", self.name, timeout_s)
            return
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()
