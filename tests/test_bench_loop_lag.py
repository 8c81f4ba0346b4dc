"""The bench's reading of the server's event-loop lag: a window's ticks from two
scrapes of the real metric, their quantiles as Prometheus computes them, and the
figure beside the half-load targets."""

from __future__ import annotations

import asyncio
import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bench import loop_lag
from bench.procs import AuthqServer
from bench.report import _beside
from bench.targets import check
from server.metrics.registry import LOOP_LAG_BUCKETS, ServerMetrics


def _scraped(registry: CollectorRegistry) -> loop_lag.LagCounts:
    return loop_lag.parse(generate_latest(registry).decode())


def test_a_window_counts_only_the_ticks_between_its_two_scrapes() -> None:
    metrics = ServerMetrics()
    lag = metrics.loop_lag_seconds
    for seconds in (0.0, 0.3, 0.3):  # before the window
        lag.observe(seconds)
    before = _scraped(metrics.registry)
    for seconds in [0.0] * 90 + [0.003] * 6 + [0.007] * 3 + [0.04]:
        lag.observe(seconds)
    figures = loop_lag.between(before, _scraped(metrics.registry))
    assert figures["ticks"] == 100
    assert figures["mean_ms"] == pytest.approx((6 * 3 + 3 * 7 + 40) / 100, abs=0.01)
    assert figures["p50_ms"] == pytest.approx(1000 * 0.001 * 50 / 90, abs=0.01)
    # The 99th tick of 100 is the 3rd of the 3 in (5, 10] ms: at its upper bound.
    assert figures["p99_ms"] == pytest.approx(10.0)
    assert (figures["late_5ms_share"], figures["late_10ms_share"]) == (0.04, 0.01)


def test_quantiles_interpolate_within_a_bucket_as_prometheus_does() -> None:
    counts = {0.001: 0.0, 0.002: 50.0, 0.005: 100.0, math.inf: 100.0}
    assert loop_lag.quantile(0.25, counts) == pytest.approx(0.0015)
    assert loop_lag.quantile(0.75, counts) == pytest.approx(0.0035)
    # Beyond the last finite bound, that bound: the histogram cannot say more.
    assert loop_lag.quantile(0.99, {0.001: 10.0, 0.002: 90.0, math.inf: 100.0}) == 0.002
    assert math.isnan(loop_lag.quantile(0.99, {0.001: 0.0, math.inf: 0.0}))


def test_the_buckets_the_report_counts_by_are_the_servers() -> None:
    assert {ms / 1000 for ms in loop_lag.LATE_MS} <= set(LOOP_LAG_BUCKETS)


def test_a_scrape_without_the_histogram_is_refused() -> None:
    with pytest.raises(ValueError, match="authq_event_loop_lag_seconds"):
        loop_lag.parse("# nothing here\n")


def test_the_half_load_targets_carry_the_servers_loop_lag() -> None:
    ceiling = {"server_cpu_us_per_call": 300.0, "load_cpu_us_per_call": 200.0}
    submit = {"rate_per_s": 1000.0, "server_cpu_s_per_1000": 0.6,
              "redis_cpu_s_per_1000": 0.2, "load_cpu_s_per_1000": 0.3}  # fmt: skip
    half = {"submit_ack": {"p99_ms": 22.0}, "notification": {"p99_ms": 26.0},
            "floor": {"p99_ms": 2.6}, "loop_lag": {"ticks": 1600, "p99_ms": 14.5}}  # fmt: skip
    run = {
        "echo": {"unary_256": {"rate_per_s": 4000.0, **ceiling},
                 "stream_200k": {"rate_per_s": 2000.0, **ceiling}},
        "submit": dict.fromkeys(("unary_0", "session_0", "unary_1", "session_1"), submit),
        "cycle": {"max": {"cycles": {"rate_per_s": 2000.0}}, "half": half},
        "deep": {"at_depth": {"claim": {"p99_ms": 6.0}}, "at_1k": {"claim": {"p99_ms": 5.0}},
                 "redis_bytes_per_item": 540.0},
    }  # fmt: skip
    beside = {row["target"]: _beside(row) for row in check(run) if _beside(row)}
    assert beside == {
        "Half load (full cycle): p99 submit ack < 10 ms":
            " (floor: 2.6 ms; server loop late: 14.5 ms)",
        "Half load (full cycle): p99 decision-to-teller notification < 5 ms":
            " (floor: 2.6 ms; server loop late: 14.5 ms)",
    }  # fmt: skip


async def test_the_bench_server_serves_its_loop_lag_at_the_benchs_tick() -> None:
    with AuthqServer(metrics=True) as server:
        first = await server.loop_lag()
        assert first is not None
        async with asyncio.timeout(20):
            while True:
                await asyncio.sleep(0.2)
                later = await server.loop_lag()
                assert later is not None
                if later.ticks >= first.ticks + 40:
                    break
        assert loop_lag.between(first, later)["ticks"] == later.ticks - first.ticks
    with AuthqServer() as plain:
        assert await plain.loop_lag() is None
