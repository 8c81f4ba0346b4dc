"""What Redis itself stalled on during a measurement.

With ``appendfsync always`` Redis fsyncs its AOF before it answers the writes of each
event-loop turn, so one slow fsync holds up every command behind it, and an AOF
rewrite forks it and writes the whole dataset beside the load. Neither is authq's
work, and both reach the tail: the report gives them beside the latencies. Redis's
latency monitor keeps the worst fsync of each second that had one at or above its
threshold."""

from __future__ import annotations

from typing import Any, Final

import redis.asyncio as aioredis

FSYNC_EVENT: Final = "aof-fsync-always"
# The monitor's threshold: a stall shorter than this is not kept.
THRESHOLD_MS: Final = 2
SLOW_MS: Final = 5


async def forks(client: aioredis.Redis) -> int:
    """How many times Redis has forked (with ``save ""``: its AOF rewrites)."""
    return int((await client.info("stats"))["total_forks"])


async def begin(client: aioredis.Redis) -> int:
    """Starts a watch; returns the mark ``since`` takes."""
    await client.config_set("latency-monitor-threshold", THRESHOLD_MS)
    await client.latency_reset()
    return await forks(client)


async def since(client: aioredis.Redis, mark: int) -> dict[str, Any]:
    """The worst fsync, how many seconds had one of SLOW_MS or more, and the forks."""
    history = await client.latency_history(FSYNC_EVENT)
    worst = [int(ms) for _, ms in history]
    return {
        "redis_fsync_worst_ms": max(worst, default=0),
        "redis_fsync_slow_seconds": sum(ms >= SLOW_MS for ms in worst),
        "redis_forks": await forks(client) - mark,
    }


def note(figures: dict[str, Any]) -> str:
    """``; Redis fsync up to 22 ms (slow in 3 s), 1 AOF rewrite`` or nothing."""
    if "redis_forks" not in figures:
        return ""
    parts = []
    if figures["redis_fsync_worst_ms"] >= SLOW_MS:
        parts.append(f"Redis fsync up to {figures['redis_fsync_worst_ms']} ms (slow in "
                     f"{figures['redis_fsync_slow_seconds']} s)")  # fmt: skip
    if figures["redis_forks"]:
        parts.append(f"{figures['redis_forks']} AOF rewrite(s) ran")
    return "; " + ", ".join(parts) if parts else ""
