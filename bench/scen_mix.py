"""The mix under a flood: urgent high-importance work arrives faster than the
authorizers decide, while a trickle of low-importance work arrives too. With small
aging steps (set through --config) the low items still move: each waits about its
head-start deficit, however deep the flood grows."""

from __future__ import annotations

import asyncio
from typing import Any

from bench import workload
from bench.load import open_loop
from bench.procs import AuthqServer
from bench.rig import CycleRig
from bench.stats import Recorder, cpu_per_1000

CONFIG = {"importance_step_ms": 400, "urgency_step_ms": 150}
# An urgent importance-3 item starts (3 - 1) * 400 + 150 ms ahead of a normal
# importance-1 item, so a low item waits about that long behind any flood.
HEAD_START_GAP_MS = 2 * CONFIG["importance_step_ms"] + CONFIG["urgency_step_ms"]


async def run_mix(server: AuthqServer, duration_s: float, flood_rate: float = 400.0,
                  low_rate: float = 20.0) -> tuple[dict[str, Any], CycleRig]:  # fmt: skip
    # Four authorizers, one item each, 10 ms of "reading" per item: fewer decisions
    # per second than the flood brings.
    async with CycleRig(server.target, tellers=2, authorizers=4, credits=1, think_s=0.01) as rig:
        high, low = Recorder("high submits"), Recorder("low submits")
        cpu0 = server.cpu()
        await asyncio.gather(
            open_loop(lambda: rig.submit(workload.HIGH, urgent=True), high, rate=flood_rate,
                      duration_s=duration_s, max_count=100_000),
            open_loop(lambda: rig.submit(workload.LOW), low, rate=low_rate,
                      duration_s=duration_s, max_count=10_000),
        )  # fmt: skip
        cpu1 = server.cpu()
        await asyncio.sleep(HEAD_START_GAP_MS / 1000 + 0.5)  # the last low items' turn
        overview = await _waiting(server)
        high_w, low_w = rig.waits[3], rig.waits[1]
        out: dict[str, Any] = {
            "config": CONFIG,
            "head_start_gap_ms": HEAD_START_GAP_MS,
            "flood_rate_per_s": flood_rate,
            "low_rate_per_s": low_rate,
            "high_submitted": high.count,
            "low_submitted": low.count,
            "high_claimed": high_w.count,
            "low_claimed": low_w.count,
            "high_wait": high_w.summary(),
            "low_wait": low_w.summary(),
            "decisions_per_s": round(rig.decisions.rate(), 1),
            "waiting_at_end": overview,
        }
        # The two loops ran over the same window, each counting the whole process.
        requests = high.count + low.count + rig.decisions.count
        out.update(cpu_per_1000(cpu0, cpu1, requests, high.load_cpu_s))
        return out, rig


async def _waiting(server: AuthqServer) -> int:
    client = server.redis()
    try:
        counts = await client.hgetall("{authq}:counts")
        return int(counts.get(b"QUEUED", 0))
    finally:
        await client.aclose()
