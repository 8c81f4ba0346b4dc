"""``python -m bench [--quick]``: fresh servers, every scenario, the baselines, then
bench/out/report.json, report.md and PNG plots."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import uvloop

from bench import baselines, plots, report, targets, workload
from bench.load import quiet_collector
from bench.procs import AuthqServer
from bench.scen_cycle import run_cycle
from bench.scen_deep import run_deep
from bench.scen_mix import CONFIG as MIX_CONFIG
from bench.scen_mix import run_mix
from bench.scen_submit import SubmitLoad, run_submit, run_submit_open
from bench.stats import Recorder

OUT = Path(__file__).with_name("out")


@dataclass(frozen=True)
class Plan:
    mode: str
    step_s: float  # one measurement's duration
    depth: int
    claims: int
    redis_items: int


# 3 s steps and 150,000 baseline items made the quick run 172-176 s here, too close
# to its 3 minutes; 80,000 items still outlast 2.5 s of claims at 50 in flight.
QUICK = Plan("quick", 2.5, 100_000, 300, 80_000)
# 2,000 claims per depth: the p99 is then the 20th slowest, not the 10th, and one
# stall of a noisy machine moves the depth ratio less.
FULL = Plan("full", 8.0, 1_000_000, 2000, 300_000)


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (f"{os.cpu_count()} x {model}, Linux {platform.release()}, Python "
            f"{platform.python_version()}, grpcio {grpc.__version__}")  # fmt: skip


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def main(plan: Plan) -> dict[str, Any]:
    t0 = time.monotonic()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    r: dict[str, Any] = {"mode": plan.mode, "machine": machine(), "server_errors": [],
                         "started": started}  # fmt: skip
    recs: dict[str, Recorder] = {}
    workload.warm_images()
    log("ceilings: bare grpc.aio echo server")
    r["echo"] = await baselines.echo_baselines(plan.step_s, workload.base_jpeg(0))
    log("ceilings: bare redis-server, claim-like script")
    r["redis"] = await baselines.redis_baselines(plan.step_s, plan.redis_items)

    sub: dict[str, Any] = {}
    with AuthqServer() as server:
        for form, images, concurrency in (("unary", 0, 64), ("session", 0, 256),
                                          ("unary", 1, 16), ("session", 1, 16),
                                          ("unary", 3, 8), ("session", 3, 8)):  # fmt: skip
            log(f"submit: {form}, {images} images")
            load = SubmitLoad(server.target, form, images, concurrency, plan.step_s, 1_000_000)
            sub[f"{form}_{images}"], recs[f"{form} {images} img"] = await run_submit(server, load)
        log("submit: unary, 0 images, 2 client processes")
        load = SubmitLoad(server.target, "unary", 0, 64, plan.step_s, 1_000_000)
        sub["unary_0_2proc"], _ = await run_submit(server, load, processes=2)
        log("submit: unary, 0 images, half load")
        half = sub["unary_0"]["rate_per_s"] / 2
        sub["unary_0_half"], recs["unary 0 img half load"] = await run_submit_open(
            server, half, plan.step_s
        )
    r["server_errors"] += server.errors
    r["submit"] = sub

    log("full cycle")
    # With its metrics endpoint, for the event loop's lag beside the half-load targets:
    # the cycle's calls are all on streams, which the RPC metrics time once per stream.
    with AuthqServer(metrics=True) as server:
        r["cycle"], rigs, floor = await run_cycle(server, plan.step_s)
    r["server_errors"] += server.errors

    log(f"deep queue: {plan.depth:,} items")
    with AuthqServer() as server:
        deep = await run_deep(server, plan.depth, plan.claims, plan.step_s)
    r["server_errors"] += server.errors
    claim_1k, claim_deep = deep.pop("_claim_1k"), deep.pop("_claim_deep")
    drain = deep.pop("_drain")
    r["deep"] = deep
    r["deep_note"] = (" (quick mode: the full run uses 1,000,000)"
                      if plan.depth < 1_000_000 else "")  # fmt: skip

    log("mix under a flood")
    with AuthqServer(MIX_CONFIG) as server:
        r["mix"], mix_rig = await run_mix(server, plan.step_s * 2)
    r["server_errors"] += server.errors

    log("ceilings again: bare grpc.aio echo server")
    r["echo_end"] = await baselines.echo_again(plan.step_s, workload.base_jpeg(0))
    r["echo_drift"] = baselines.drift(r["echo"], r["echo_end"])

    OUT.mkdir(parents=True, exist_ok=True)
    cyc_max, cyc_half = rigs["max"], rigs["half"]
    r["plots"] = [
        plots.cdf(OUT / "cdf_submit.png", "submit acknowledgement (closed loop at max)", recs),
        plots.cdf(OUT / "cdf_cycle.png", "full cycle latencies", {
            "submit ack (half load)": cyc_half.ack, "decision (half load)": cyc_half.decision,
            "notification (half load)": cyc_half.notify, "submit ack (max)": cyc_max.ack,
            "notification (max)": cyc_max.notify, "cycle (max)": cyc_max.cycle,
            "floor: durable echo stream at the half load's rate": floor}),
        plots.cdf(OUT / "cdf_claim.png", "claim (unary Next) by queue depth", {
            "~1,000 waiting": claim_1k, f"{plan.depth:,} waiting": claim_deep}),
        plots.timeline(OUT / "throughput_submit.png", "submits per second", recs),
        plots.timeline(OUT / "throughput_decisions.png", "decisions per second", {
            "full cycle, max": cyc_max.decisions, "full cycle, half": cyc_half.decisions,
            f"deep queue ({plan.depth:,})": drain, "mix (4 slow authorizers)": mix_rig.decisions}),
        plots.timeline(OUT / "throughput_mix.png", "mix: claims per second by class", {
            "high (importance 3, urgent)": mix_rig.waits[3],
            "low (importance 1)": mix_rig.waits[1]}),
    ]  # fmt: skip
    r["client_note"] = (
        "one client process (a second client process, row '2 client procs', shows whether "
        "the client saturated first)."
    )
    r["targets"] = targets.check(r)
    r["elapsed_s"] = time.monotonic() - t0
    report.write(OUT, r)
    return r


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="reduced set, under 3 minutes")
    args = parser.parse_args()
    quiet_collector()
    result = uvloop.run(main(QUICK if args.quick else FULL))
    log(f"done in {result['elapsed_s']:.0f} s: {OUT / 'report.md'}")
    for t in result["targets"]:
        log(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['value']} {t['unit']}")


if __name__ == "__main__":
    cli()
