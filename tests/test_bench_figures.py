"""How the bench turns what it measured into the report's figures: the "CPU allows"
column (what the cores allow against a ceiling, from the CPU each side spent per call
in the same run), the load generator's CPU, and the throughput plots' bins."""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
import uvloop

from bench import redis_stalls
from bench.load import closed_loop, open_loop
from bench.procs import cpu_seconds
from bench.stats import CpuSample, Recorder, cpu_per_1000
from bench.targets import check, cpu_allows, cpu_allows_free_server, loop_allows


def _ours(server_s: float, redis_s: float, load_s: float) -> dict[str, Any]:
    return {"server_cpu_s_per_1000": server_s, "redis_cpu_s_per_1000": redis_s,
            "load_cpu_s_per_1000": load_s}  # fmt: skip


def test_cpu_allows_counts_every_process_on_both_sides() -> None:
    echo = {"server_cpu_us_per_call": 250.0, "load_cpu_us_per_call": 150.0}
    # 0.4 ms per echo call against 0.6 + 0.2 + 0.2 = 1.0 ms per submit.
    assert cpu_allows(echo, _ours(0.6, 0.2, 0.2)) == pytest.approx(0.4)
    # Leaving out the load generator's share would overstate what the cores allow.
    assert cpu_allows(echo, _ours(0.6, 0.2, 0.0)) == pytest.approx(0.5)


async def test_a_load_loop_records_what_it_spent() -> None:
    recorder = Recorder("busy")

    async def busy() -> None:
        sum(range(20_000))  # CPU in this process, the load generator's
        await asyncio.sleep(0)

    await closed_loop(busy, recorder, concurrency=2, duration_s=5.0, max_count=200)
    assert recorder.count == 200
    assert recorder.load_cpu_s > 0
    merged = Recorder("both")
    merged.merge(recorder)
    merged.merge(recorder)
    assert merged.load_cpu_s == pytest.approx(2 * recorder.load_cpu_s)


def _steady(rate_per_s: float, seconds: float) -> Recorder:
    recorder = Recorder("steady")
    for i in range(int(rate_per_s * seconds)):
        recorder.add_ms(1.0, (i + 1) / rate_per_s)
    return recorder


@pytest.mark.parametrize("seconds", [1.2, 1.4, 2.0])
def test_a_steady_rate_plots_flat_to_its_end(seconds: float) -> None:
    """The last bin of a throughput plot ends with the load, mostly part way through
    it: a steady 100/s must not appear to collapse there."""
    recorder = _steady(100.0, seconds)
    points = recorder.timeline(0.0, bin_s=0.5)
    assert points
    assert all(rate == pytest.approx(100.0, rel=0.1) for _, rate in points), points
    assert points[-1][0] >= seconds - 0.5 - 0.5  # no more than one bin left out


def test_a_free_server_leaves_redis_and_the_load_generator() -> None:
    echo = {"server_cpu_us_per_call": 250.0, "load_cpu_us_per_call": 150.0}
    # Without the server's 0.6 ms, 0.2 + 0.2 ms per submit remain: 0.4 / 0.4.
    assert cpu_allows_free_server(echo, _ours(0.6, 0.2, 0.2)) == pytest.approx(1.0)
    assert cpu_allows_free_server(echo, _ours(0.0, 0.2, 0.2)) == cpu_allows(
        echo, _ours(0.0, 0.2, 0.2)
    )


def test_the_event_loop_allows_what_its_one_thread_spends_per_request() -> None:
    echo = {"rate_per_s": 4000.0}
    # 0.5 ms of the loop's thread per submit: 2,000/s at most, half the echo's rate.
    assert loop_allows(echo, {"loop_cpu_s_per_1000": 0.5}) == pytest.approx(0.5)
    assert loop_allows(echo, {"loop_cpu_s_per_1000": 0.25}) == pytest.approx(1.0)
    assert math.isnan(loop_allows(echo, {}))  # not measured: no figure, not infinity
    assert math.isnan(loop_allows(echo, {"loop_cpu_s_per_1000": 0.0}))


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_threads_cpu_leaves_out_the_other_threads() -> None:
    pid = os.getpid()
    process0, main0 = cpu_seconds(pid), cpu_seconds(pid, thread=pid)
    worker = threading.Thread(target=_spin, args=(0.3,))
    worker.start()
    worker.join()
    process1, main1 = cpu_seconds(pid), cpu_seconds(pid, thread=pid)
    assert process1 - process0 >= 0.25  # the worker's spin counts for the process
    assert main1 - main0 < 0.15  # but not for the main thread, which waited
    _spin(0.3)
    assert cpu_seconds(pid, thread=pid) - main1 >= 0.25


async def _rewrite_aof(client: aioredis.Redis) -> None:
    await client.bgrewriteaof()
    for _ in range(200):
        persistence = await client.info("persistence")
        if not int(persistence["aof_rewrite_in_progress"]) and not int(
            persistence["aof_rewrite_scheduled"]
        ):
            return
        await asyncio.sleep(0.05)


async def test_redis_stalls_count_the_rewrites_of_the_watch(redis_client: aioredis.Redis) -> None:
    await redis_client.set("bench:stalls", "x")
    await _rewrite_aof(redis_client)  # before the watch: not counted
    mark = await redis_stalls.begin(redis_client)
    before = await redis_stalls.since(redis_client, mark)
    assert before["redis_forks"] == 0
    assert before["redis_fsync_worst_ms"] >= 0
    await _rewrite_aof(redis_client)
    assert (await redis_stalls.since(redis_client, mark))["redis_forks"] == 1
    assert (await redis_client.config_get("latency-monitor-threshold")) == {
        "latency-monitor-threshold": str(redis_stalls.THRESHOLD_MS)
    }


def test_the_stall_note_names_slow_fsyncs_and_rewrites_only() -> None:
    quiet = {"redis_fsync_worst_ms": 4, "redis_fsync_slow_seconds": 0, "redis_forks": 0}
    assert redis_stalls.note(quiet) == ""
    assert redis_stalls.note({}) == ""
    slow = {"redis_fsync_worst_ms": 22, "redis_fsync_slow_seconds": 3, "redis_forks": 1}
    assert (
        redis_stalls.note(slow) == "; Redis fsync up to 22 ms (slow in 3 s), 1 AOF rewrite(s) ran"
    )
    assert redis_stalls.note({**quiet, "redis_forks": 2}) == "; 2 AOF rewrite(s) ran"


def _submit(rate: float, checked: float | None = None) -> dict[str, Any]:
    figures: dict[str, Any] = {"rate_per_s": rate, "server_cpu_s_per_1000": 1.0,
                               "redis_cpu_s_per_1000": 0.1, "load_cpu_s_per_1000": 0.2}  # fmt: skip
    if checked is not None:
        figures["checked_rate_per_s"] = checked
    return figures


def test_image_targets_give_the_rate_with_every_check_done_beside_their_own() -> None:
    ceiling = {"server_cpu_us_per_call": 300.0, "load_cpu_us_per_call": 200.0}
    run = {
        "echo": {"unary_256": {"rate_per_s": 4000.0, **ceiling},
                 "stream_200k": {"rate_per_s": 2000.0, **ceiling}},
        "submit": {"unary_0": _submit(1600.0), "session_0": _submit(3200.0),
                   "unary_1": _submit(180.0, checked=120.0),
                   "session_1": _submit(260.0, checked=130.0)},
        "cycle": {"max": {"cycles": {"rate_per_s": 1500.0}},
                  "half": {"submit_ack": {"p99_ms": 8.0}, "notification": {"p99_ms": 9.0}}},
        "deep": {"at_depth": {"claim": {"p99_ms": 6.0}}, "at_1k": {"claim": {"p99_ms": 5.0}},
                 "redis_bytes_per_item": 540.0},
    }  # fmt: skip
    checked = check(run)
    rows = {row["target"].split(":")[0]: row for row in checked}
    unary_1 = rows["Submit, one 200 KB image (unary)"]
    assert (unary_1["value"], unary_1["all_checked"]) == (0.09, 0.06)
    assert rows["Submit, one 200 KB image (session)"]["all_checked"] == 0.065
    assert "all_checked" not in rows["Submit, no images, unary"]
    assert [row["pass"] for row in checked] == [False] * 4 + [True, True, False, True, True]


def test_cpu_figures_per_request_and_per_second_of_the_window() -> None:
    before = CpuSample(server_s=1.0, redis_s=0.5, at=10.0, loop_s=2.0)
    after = CpuSample(server_s=3.0, redis_s=1.0, at=12.0, loop_s=3.0)
    figures = cpu_per_1000(before, after, requests=1000, load_s=0.4)
    assert figures == pytest.approx({
        "server_cpu_s_per_1000": 2.0, "server_cpu_util": 1.0,
        "redis_cpu_s_per_1000": 0.5, "redis_cpu_util": 0.25,
        "loop_cpu_s_per_1000": 1.0, "loop_cpu_util": 0.5,
        "load_cpu_s_per_1000": 0.4,
    })  # fmt: skip


def test_the_half_load_targets_carry_the_floor_measured_beside_them() -> None:
    ceiling = {"server_cpu_us_per_call": 300.0, "load_cpu_us_per_call": 200.0}
    half = {"submit_ack": {"p99_ms": 22.0}, "notification": {"p99_ms": 26.0}}
    run = {
        "echo": {"unary_256": {"rate_per_s": 4000.0, **ceiling},
                 "stream_200k": {"rate_per_s": 2000.0, **ceiling}},
        "submit": {key: _submit(1000.0) for key in ("unary_0", "session_0", "unary_1",
                                                     "session_1")},
        "cycle": {"max": {"cycles": {"rate_per_s": 2000.0}}, "half": half},
        "deep": {"at_depth": {"claim": {"p99_ms": 6.0}}, "at_1k": {"claim": {"p99_ms": 5.0}},
                 "redis_bytes_per_item": 540.0},
    }  # fmt: skip
    assert not any("floor_p99_ms" in row for row in check(run))
    half["floor"] = {"p99_ms": 2.6}
    floors = {row["target"]: row.get("floor_p99_ms") for row in check(run)}
    assert [name for name, floor in floors.items() if floor == 2.6] == [
        "Half load (full cycle): p99 submit ack < 10 ms",
        "Half load (full cycle): p99 decision-to-teller notification < 5 ms",
    ]
    assert sum(floor is not None for floor in floors.values()) == 2


def test_an_open_loop_never_counts_time_before_a_call_started() -> None:
    # uvloop cuts a sleep to whole milliseconds: at 4,000 calls/s every slot's sleep
    # ends early, and a call measured from its slot alone would come out negative.
    recorder = Recorder("instant")

    async def instant() -> None:
        return None

    async def run() -> None:
        await open_loop(instant, recorder, rate=4000.0, duration_s=0.25, max_count=1000)

    uvloop.run(run())
    assert recorder.count == 1000
    assert min(recorder.latencies_ms) >= 0.0
