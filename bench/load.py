"""Load loops, every one bounded in time and in count and stopping by itself."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable

from bench.stats import Recorder, load_cpu_s, now

Op = Callable[[], Awaitable[object]]
MAX_ERRORS = 200


def quiet_collector() -> None:
    """Takes what a load process has set up (modules, clients) out of the garbage
    collector's sight, as the server does at start (server/app.py): a full
    collection of it paused the load generator's loop 25-30 ms on the bench machine,
    and every call in flight would have counted that pause as the server's."""
    gc.collect()
    gc.freeze()


async def closed_loop(
    op: Op, recorder: Recorder, *, concurrency: int, duration_s: float, max_count: int
) -> None:
    """``concurrency`` workers, each starting its next call when the last returns."""
    cpu0 = load_cpu_s()
    deadline = now() + duration_s
    started = 0

    async def worker() -> None:
        nonlocal started
        while now() < deadline and started < max_count and recorder.errors < MAX_ERRORS:
            started += 1
            t0 = now()
            try:
                await op()
            except Exception:
                recorder.errors += 1
                continue
            recorder.add(t0)

    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(concurrency))), duration_s + 30.0
        )
    finally:
        recorder.load_cpu_s += load_cpu_s() - cpu0


async def open_loop(
    op: Op, recorder: Recorder, *, rate: float, duration_s: float, max_count: int,
    max_in_flight: int = 2000,
) -> None:  # fmt: skip
    """Calls start on a fixed schedule whatever the answers do; latency is measured from
    the scheduled start, so a stalled server is not hidden (no coordinated omission).
    uvloop cuts a timer's delay to whole milliseconds, so above 1,000 calls/s a call
    mostly starts before its slot: it is then measured from its actual start, which
    would otherwise understate it by up to a millisecond.
    Beyond ``max_in_flight`` outstanding calls a slot is skipped and counted an error."""
    cpu0 = load_cpu_s()
    t0 = now()
    count = min(max_count, int(rate * duration_s))
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        started = min(scheduled, now())  # the earlier: see above
        try:
            await op()
        except Exception:
            recorder.errors += 1
            return
        recorder.add(started)

    for i in range(count):
        scheduled = t0 + i / rate
        delay = scheduled - now()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= max_in_flight:
            recorder.errors += 1
            continue
        task = asyncio.create_task(one(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _done, pending = await asyncio.wait(tasks, timeout=30.0)
        for task in pending:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    recorder.load_cpu_s += load_cpu_s() - cpu0
