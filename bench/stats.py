"""Latency and throughput bookkeeping shared by every scenario."""

from __future__ import annotations

import math
import time
from array import array
from dataclasses import dataclass, field
from typing import Any


def now() -> float:
    """Seconds on CLOCK_MONOTONIC, which is system-wide on Linux: comparable across
    the harness and its client worker processes."""
    return time.monotonic()


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


@dataclass
class Recorder:
    """Latencies in milliseconds and the completion times (monotonic seconds).

    Kept in arrays of doubles rather than lists: a list of a million floats is one
    more thing for the garbage collector to walk, element by element, on each of
    the load generator's full collections, and those pauses would be counted as the
    server's latency."""

    name: str
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    done_at: array[float] = field(default_factory=lambda: array("d"))
    errors: int = 0
    # CPU seconds the load loops that filled it spent: their whole process's, so two
    # loops running at once each count both.
    load_cpu_s: float = 0.0

    def add(self, started: float, finished: float | None = None) -> None:
        end = now() if finished is None else finished
        self.latencies_ms.append((end - started) * 1000.0)
        self.done_at.append(end)

    def add_ms(self, value_ms: float, at: float) -> None:
        self.latencies_ms.append(value_ms)
        self.done_at.append(at)

    def merge(self, other: Recorder) -> None:
        self.latencies_ms.extend(other.latencies_ms)
        self.done_at.extend(other.done_at)
        self.errors += other.errors
        self.load_cpu_s += other.load_cpu_s

    @property
    def count(self) -> int:
        return len(self.latencies_ms)

    def rate(self) -> float:
        """Completions per second between the first and the last completion."""
        if len(self.done_at) < 2:
            return 0.0
        span = max(self.done_at) - min(self.done_at)
        return (len(self.done_at) - 1) / span if span > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        return {
            "count": len(ordered),
            "errors": self.errors,
            "rate_per_s": round(self.rate(), 1),
            "p50_ms": round(percentile(ordered, 50), 3),
            "p95_ms": round(percentile(ordered, 95), 3),
            "p99_ms": round(percentile(ordered, 99), 3),
            "max_ms": round(ordered[-1], 3) if ordered else math.nan,
        }

    def timeline(self, start: float, bin_s: float = 0.5) -> list[tuple[float, float]]:
        """(seconds since start, completions per second) per bin."""
        if not self.done_at:
            return []
        bins: dict[int, int] = {}
        for t in self.done_at:
            key = int((t - start) / bin_s)
            bins[key] = bins.get(key, 0) + 1
        last = max(bins)
        points = [(k * bin_s, bins.get(k, 0) / bin_s) for k in range(last)]
        # The last bin ends at the last completion, mostly before its full width: its
        # count over the full width would draw a collapse that never happened. It is
        # a rate over the part it covers, or left out when that is under half a bin.
        covered = max(self.done_at) - start - last * bin_s
        if covered >= bin_s / 2:
            points.append((last * bin_s, bins[last] / covered))
        return points


@dataclass
class CpuSample:
    server_s: float
    redis_s: float
    at: float
    loop_s: float = math.nan  # the server's event-loop thread alone


def load_cpu_s() -> float:
    """CPU seconds of this process (every thread: grpc's too)."""
    return time.process_time()


def cpu_per_1000(
    before: CpuSample, after: CpuSample, requests: int, load_s: float = math.nan
) -> dict[str, float]:
    """Server and Redis CPU over the window, and ``load_s``, what the load generator
    spent in it (``Recorder.load_cpu_s``): it shares the machine's cores, so its share
    per request bounds a ratio as much as the server's does."""
    if requests <= 0:
        return {"server_cpu_s_per_1000": math.nan, "redis_cpu_s_per_1000": math.nan,
                "load_cpu_s_per_1000": math.nan}  # fmt: skip
    span = max(1e-9, after.at - before.at)
    used = {
        "server": after.server_s - before.server_s,
        "redis": after.redis_s - before.redis_s,
        "loop": after.loop_s - before.loop_s,  # the server's event-loop thread
    }
    out = {"load_cpu_s_per_1000": round(load_s * 1000 / requests, 4)}
    for who, seconds in used.items():
        out[f"{who}_cpu_s_per_1000"] = round(seconds * 1000 / requests, 4)
        out[f"{who}_cpu_util"] = round(seconds / span, 3)
    return out
