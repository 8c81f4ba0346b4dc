"""The full cycle without images: tellers submit and watch, automated authorizers take
and decide, the teller is notified. First at the most this machine carries (closed
loop), then at half of that rate (open loop) for the latency targets, then the
latency floor under those targets on the same Redis (bench/baselines.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bench import loop_lag
from bench.baselines import durable_floor
from bench.load import closed_loop, open_loop
from bench.procs import AuthqServer
from bench.rig import CycleRig
from bench.stats import Recorder, cpu_per_1000


def _figures(rig: CycleRig, server: AuthqServer, cpu0: Any, requests: int) -> dict[str, Any]:
    result: dict[str, Any] = {
        "cycles": rig.cycle.summary(),
        "submit_ack": rig.ack.summary(),
        "decision": rig.decision.summary(),
        "notification": rig.notify.summary(),
        "queue_wait": _all_waits(rig).summary(),
        "decisions_per_s": round(rig.decisions.rate(), 1),
    }
    result.update(cpu_per_1000(cpu0, server.cpu(), requests, rig.cycle.load_cpu_s))
    result.update(server.rss())
    return result


async def _window(
    server: AuthqServer, rig: CycleRig, load: Callable[[], Awaitable[object]]
) -> dict[str, Any]:
    """Warms the rig's streams, runs ``load`` and gives its window's figures: the
    rig's latencies, CPU per request (a submit and a decide per cycle; claims ride
    on the same events), what Redis stalled on, and the server loop's lag."""
    for _ in range(50):
        await rig.one_cycle()
    rig.reset()
    cpu0, mark, lag0 = server.cpu(), await server.stalls_begin(), await server.loop_lag()
    await load()
    figures = _figures(rig, server, cpu0, 2 * rig.cycle.count)
    figures.update(await server.stalls_since(mark))
    lag1 = await server.loop_lag()
    if lag0 is not None and lag1 is not None:  # None: the server serves no metrics
        figures["loop_lag"] = loop_lag.between(lag0, lag1)
    return figures


def _all_waits(rig: CycleRig) -> Recorder:
    merged = Recorder("submit ack to offer")
    for recorder in rig.waits.values():
        merged.merge(recorder)
    return merged


async def run_cycle(
    server: AuthqServer, duration_s: float, concurrency: int = 256
) -> tuple[dict[str, Any], dict[str, CycleRig], Recorder]:
    """The figures, the rigs of the two phases and the floor's latencies."""
    out: dict[str, Any] = {"concurrency": concurrency}
    rigs: dict[str, CycleRig] = {}
    async with CycleRig(server.target) as rig:
        out["max"] = await _window(server, rig, lambda: closed_loop(
            rig.one_cycle, rig.cycle, concurrency=concurrency, duration_s=duration_s,
            max_count=2_000_000))  # fmt: skip
        rigs["max"] = rig
    # The archiver runs at a lower priority and waits while the center is busy, so it
    # falls behind at the maximum; the half load is measured from a settled server,
    # and the catching up is reported.
    out["max"]["archive_backlog_after"] = await server.archive_backlog()
    out["max"]["archive_caught_up_s"] = await server.archive_settled()
    max_rate = out["max"]["cycles"]["rate_per_s"]
    half = max(10.0, max_rate / 2)
    async with CycleRig(server.target) as rig:
        out["half"] = await _window(server, rig, lambda: open_loop(
            rig.one_cycle, rig.cycle, rate=half, duration_s=duration_s,
            max_count=2_000_000))  # fmt: skip
        out["half"]["offered_rate_per_s"] = round(half, 1)
        rigs["half"] = rig
    # Archiving waits while the center is busy (server/archive/deferral.py): what it
    # left for later is reported, as at the maximum.
    out["half"]["archive_backlog_after"] = await server.archive_backlog()
    out["half"]["archive_caught_up_s"] = await server.archive_settled()
    # A cycle is two requests answered after a durable write (the submit, the decide):
    # the floor stores as many per second, on as many streams as the rig had.
    mark = await server.stalls_begin()
    out["half"]["floor"], floor = await durable_floor(
        server.redis_url, server.tmp / "floor", rate=2 * half,
        streams=rig.n_tellers + rig.n_authorizers, duration_s=duration_s,
        redis_pid=server.redis_pid,
    )  # fmt: skip
    out["half"]["floor"].update(await server.stalls_since(mark))
    return out, rigs, floor
