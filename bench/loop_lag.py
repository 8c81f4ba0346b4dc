"""How late the server's event loop ran during a window, from its own metric.

The server under test serves ``authq_event_loop_lag_seconds`` (server/metrics/loop_lag.py)
with a short tick; a scrape before and after a window gives that window's ticks by
lateness. The half-load targets' tail follows this figure (bench/FINDINGS.md), so the
report puts it beside them: a lag near the bound says the server's one thread kept
the requests waiting, a small lag beside a long tail says something else did."""

from __future__ import annotations

import asyncio
import math
import urllib.request
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

METRIC: Final = "authq_event_loop_lag_seconds"
# The tick the bench's server runs: 200 ticks a second, so an 8 s window has 1,600
# and its p99 is the 16th latest. Under load the loop is awake anyway (the tick's own
# cost is in server/settings.py).
TICK_S: Final = 0.005
# Lateness at or above which a tick is counted in the report (a bucket bound).
LATE_MS: Final = (5, 10)


@dataclass(frozen=True)
class LagCounts:
    """The histogram as scraped: cumulative tick counts by upper bound (seconds)."""

    buckets: dict[float, float]
    total_s: float

    @property
    def ticks(self) -> float:
        return self.buckets.get(math.inf, 0.0)


def parse(text: str) -> LagCounts:
    buckets: dict[float, float] = {}
    total_s = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != METRIC:
            continue
        for sample in family.samples:
            if sample.name == f"{METRIC}_bucket":
                buckets[float(sample.labels["le"])] = sample.value
            elif sample.name == f"{METRIC}_sum":
                total_s = sample.value
    if math.inf not in buckets:
        raise ValueError(f"no {METRIC} histogram in the scrape")
    return LagCounts(buckets, total_s)


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


async def scrape(port: int) -> LagCounts:
    return parse(await asyncio.to_thread(_get, port))


def quantile(q: float, counts: dict[float, float]) -> float:
    """The q-quantile in seconds, interpolated within its bucket as Prometheus's
    histogram_quantile does; above the last finite bound, that bound; NaN without
    ticks."""
    bounds = sorted(counts)
    total = counts[math.inf]
    if total <= 0:
        return math.nan
    rank = q * total
    below, lower = 0.0, 0.0
    for bound in bounds:
        if counts[bound] >= rank:
            if math.isinf(bound):
                return lower
            inside = counts[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        below, lower = counts[bound], bound
    return lower


def between(before: LagCounts, after: LagCounts) -> dict[str, Any]:
    """The window's ticks: how many, the mean and interpolated p50 / p99 lateness, and
    the share late by LATE_MS or more."""
    counts = {b: after.buckets[b] - before.buckets.get(b, 0.0) for b in after.buckets}
    ticks = counts[math.inf]
    figures: dict[str, Any] = {
        "ticks": int(ticks),
        "mean_ms": round((after.total_s - before.total_s) / ticks * 1000, 2) if ticks else None,
        "p50_ms": round(quantile(0.5, counts) * 1000, 2),
        "p99_ms": round(quantile(0.99, counts) * 1000, 2),
    }
    for ms in LATE_MS:
        on_time = counts[ms / 1000]  # KeyError: the server's buckets changed
        figures[f"late_{ms}ms_share"] = round(1 - on_time / ticks, 4) if ticks else None
    return figures


def note(figures: dict[str, Any]) -> str:
    """``; server loop late p99 12.0 ms (31% of ticks by 5 ms or more)`` or nothing."""
    lag = figures.get("loop_lag")
    if not lag or not lag["ticks"]:
        return ""
    return (f"; server loop late p99 {lag['p99_ms']:.1f} ms ({lag['late_5ms_share']:.0%} of "
            "ticks by 5 ms or more)")  # fmt: skip
