"""How late the server's event loop runs what is ready: a ticker due every
``metrics_loop_lag_tick_s`` on a fixed grid, which records by how much each tick ran
late.

Every handler, the gRPC machinery and every Redis reply share the one event-loop
thread, so when that thread is busy a request waits behind whatever else is queued.
The wait shows in no RPC histogram by itself (the call is timed once its handler runs),
yet it is most of the tail at high load (bench/FINDINGS.md, "The floor under the
half-load targets"). A timer waits in the same queue as a socket that became readable,
so how late the ticker runs is how long a request arriving then would wait to start.

Each tick is due a whole tick after the one before, not a tick after the ticker
woke: a stall of S seconds makes every tick due during it late, by S, S - tick and so
on, and all of them are recorded when the loop is free again. So the histogram samples
the loop at evenly spaced instants, busy or not, and its count is the window's length
in ticks. (A ticker that slept a fresh tick after each wake recorded one late tick per
stall and, at full load, 978 ticks in 8 s instead of 1,600: it under-sampled exactly
the stretches that matter.)

The lateness is timed by ``time.perf_counter``. uvloop drops any fraction of a
millisecond from a timer's delay, so with a tick that is not a whole number of
milliseconds a tick can come early; it counts as on time. The histogram's first
bucket is a millisecond: lags below that do not matter here."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Histogram

from server.background import BackgroundLoop


class LoopLagProbe:
    def __init__(self, histogram: Histogram, tick_s: float) -> None:
        self.histogram = histogram
        self.tick_s = tick_s
        self.loop = BackgroundLoop("loop-lag")

    def start(self) -> None:
        self.loop.start(self._run)

    async def stop(self) -> None:
        await self.loop.stop()

    async def _run(self) -> None:
        observe, tick_s, clock = self.histogram.observe, self.tick_s, time.perf_counter
        due = clock() + tick_s
        while not self.loop.stopping:
            await asyncio.sleep(max(0.0, due - clock()))
            now = clock()
            observe(max(0.0, now - due))
            due += tick_s
            while due <= now:  # the ticks due while the loop was busy
                observe(now - due)
                due += tick_s
