"""report.json and report.md from one run's figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench import loop_lag, redis_stalls


def _ms(s: dict[str, Any]) -> str:
    return f"{s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['p99_ms']:.2f} | {s['max_ms']:.2f}"


def _row(name: str, s: dict[str, Any], ceiling: float | None = None, extra: str = "") -> str:
    ratio = f"{s['rate_per_s'] / ceiling:.2f}" if ceiling else "-"
    return f"| {name} | {s['count']} | {s['rate_per_s']:.0f} | {_ms(s)} | {ratio} | {extra} |"


def _cpu(s: dict[str, Any]) -> str:
    return (f"{s['server_cpu_s_per_1000']:.3f} / {s['redis_cpu_s_per_1000']:.3f} / "
            f"{s.get('load_cpu_s_per_1000', math.nan):.3f}")  # fmt: skip


def _loop(s: dict[str, Any]) -> str:
    """How busy the server's event-loop thread was: near 100%, that thread bounds it."""
    busy = s.get("loop_cpu_util", math.nan)
    return f"; event loop {busy:.0%} busy" if math.isfinite(busy) else ""


def _beside(target: dict[str, Any]) -> str:
    """What the report puts beside a target's value: `` (floor: 3.2 ms)``."""
    if "all_checked" in target:
        return f" (all checked: {target['all_checked']})"
    parts = []
    if "floor_p99_ms" in target:
        parts.append(f"floor: {target['floor_p99_ms']:.1f} ms")
    if "loop_lag_p99_ms" in target:
        parts.append(f"server loop late: {target['loop_lag_p99_ms']:.1f} ms")
    return f" ({'; '.join(parts)})" if parts else ""


def markdown(r: dict[str, Any]) -> str:
    echo, redis, sub, cyc, deep, mix = (r[k] for k in ("echo", "redis", "submit", "cycle",
                                                        "deep", "mix"))  # fmt: skip
    u256, s200 = echo["unary_256"]["rate_per_s"], echo["stream_200k"]["rate_per_s"]
    rcl = redis["claim_serial"]["rate_per_s"]
    head = "| what | n | per s | p50 ms | p95 ms | p99 ms | max ms | x ceiling | notes |"
    sep = "|---|---|---|---|---|---|---|---|---|"
    lines = [
        f"# authq benchmark ({r['mode']})", "",
        f"Run {r['started']}, {r['elapsed_s']:.0f} s. Machine: {r['machine']}.", "",
        "Server: `authq-server` subprocess, embedded redis-server, AOF appendfsync always; "
        "its CPU figures include its child processes (archiver, image checks). "
        f"Client: this harness (grpc.aio + uvloop), {r['client_note']}", "",
        "## Throughput and latency", "", head, sep,
    ]  # fmt: skip
    for key, label, ceiling in (
        ("unary_0", "submit unary, 0 images", u256),
        ("session_0", "submit session, 0 images", u256),
        ("unary_0_2proc", "submit unary, 0 images, 2 client procs", u256),
        ("unary_1", "submit unary, 1 image", s200), ("session_1", "submit session, 1 image", s200),
        ("unary_3", "submit unary, 3 images", s200 / 3),
        ("session_3", "submit session, 3 images", s200 / 3),
    ):  # fmt: skip
        if key in sub:
            s = sub[key]
            checks = (
                f"; image checks {s['checks_pending_after']} behind at the end, done "
                f"{s['checks_caught_up_s']:.1f} s later (all checked: "
                f"{s.get('checked_rate_per_s', 0):.0f}/s)"
                if "checks_caught_up_s" in s
                else ""
            )
            # Against the durable echo too (per image: 3 images are 3 of its uploads).
            floor = echo.get("store_stream_200k" if s["images"] else "store_256")
            per_s = s["rate_per_s"] * max(1, s["images"])
            durable = f"; x durable echo {per_s / floor['rate_per_s']:.2f}" if floor else ""
            notes = f"CPU s/1000 srv/redis/load {_cpu(s)}{_loop(s)}{durable}{checks}"
            lines.append(_row(label, s, ceiling, notes))
    half = sub["unary_0_half"]
    offered = f"offered {half['offered_rate_per_s']:.0f}/s{redis_stalls.note(half)}"
    lines.append(_row("submit unary, 0 img, at half load (open loop)", half, None, offered))
    for phase in ("max", "half"):
        c = cyc[phase]
        archive = (
            f"; archive {c['archive_backlog_after']} behind at the end, caught up in "
            f"{c['archive_caught_up_s']:.1f} s"
            if "archive_caught_up_s" in c
            else ""
        )
        lines += [
            _row(f"full cycle ({phase}): submit -> teller sees decision", c["cycles"], None,
                 f"CPU s/1000 srv/redis/load {_cpu(c)}{_loop(c)}; "
                 f"RSS {c['server_rss_bytes'] >> 20} MiB"
                 f"{archive}{redis_stalls.note(c)}{loop_lag.note(c)}"),
            _row(f"full cycle ({phase}): submit ack", c["submit_ack"]),
            _row(f"full cycle ({phase}): decision (decide call)", c["decision"]),
            _row(f"full cycle ({phase}): decision-to-teller notification", c["notification"]),
            _row(f"full cycle ({phase}): submit ack -> offer (queue wait)", c["queue_wait"]),
        ]  # fmt: skip
    if "floor" in cyc["half"]:
        f = cyc["half"]["floor"]
        lines.append(_row(
            "floor: durable echo stream at the half load's 2 durable requests per cycle",
            f, None, f"offered {f['offered_rate_per_s']:.0f}/s, on the cycle's Redis just "
            f"after it; CPU s/1000 srv/redis/load {f['server_cpu_us_per_call'] / 1000:.3f} / "
            f"{f.get('redis_cpu_us_per_call', math.nan) / 1000:.3f} / "
            f"{f['load_cpu_us_per_call'] / 1000:.3f}{redis_stalls.note(f)}",
        ))  # fmt: skip
    for key, label in (("at_1k", "~1,000"), ("at_depth", f"{deep['depth']:,}")):
        forked = deep[key].get("redis_forks", 0)
        rewrite = f"Redis forked {forked}x for AOF rewrites during these claims" if forked else ""
        lines += [
            _row(
                f"claim (unary Next, one at a time), {label} waiting",
                deep[key]["claim"],
                rcl,
                rewrite,
            ),
            _row(f"decision (unary Decide), {label} waiting", deep[key]["decision"]),
        ]
    lines.append(
        _row(
            f"decisions by 8 session authorizers, {deep['depth']:,} waiting",
            deep["drain_decision"],
            rcl,
            f"CPU s/1000 {_cpu(deep['drain_cpu'])}",
        )
    )
    lines += ["", "x ceiling: requests/s over the ceiling of the same kind (bare unary echo 256 B "
              "for submits without images; bare chunked 200 KB upload per image for images; "
              "bare Redis claim script one at a time for claims).", "",
              "CPU s/1000 srv/redis/load: CPU seconds per 1,000 requests of the server "
              "(its child processes included), of Redis and of the load generator.", "",
              "## Targets", "",
              "| target | value | bound | result | CPU allows | ... with a free server "
              "| event loop allows |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in r["targets"]:
        allows, free = t.get("cpu_allows", "-"), t.get("cpu_allows_free_server", "-")
        loop = t.get("loop_allows", "-")
        beside = _beside(t)
        verdict = "PASS" if t["pass"] else "FAIL"
        lines.append(f"| {t['target']} | {t['value']} {t['unit']}{beside} | {t['bound']} | "
                     f"{verdict} | {allows} | {free} | {loop} |")  # fmt: skip
    lines += ["", "CPU allows: the ratio the two cores would give if the scenario and its "
              "ceiling both kept them busy: the ceiling's CPU per call (echo server and load "
              "generator) over the scenario's per request (server, Redis, load generator). "
              "Below the bound, the CPU spent per request must fall before the target can "
              "be met. With a free server: the same without the server's CPU, the most a "
              "change to the server alone could give. Event loop allows: the ratio if the "
              "server's event-loop thread, which runs every handler, did nothing but these "
              "requests (its CPU per request over the ceiling's rate); a ratio near it is "
              "bound by that one thread. All checked: the image targets' "
              "ratio counting the uploads over the time until every one of their full "
              "checks was done, not only acknowledged. Floor: the p99 of the bare durable "
              "echo stream (one Lua script per request, answered once it is on disk) at "
              "the half load's rate of durable requests, on the same Redis just after the "
              "half-load window: at or above the bound, no design that stores each "
              "request meets it on this machine; below it, the gap is authq's. Server loop "
              "late: the p99 of how late the server's event loop ran ticks due every 5 ms "
              "in the window (its authq_event_loop_lag_seconds metric): how long a request "
              "arriving then waited for the one thread that runs every handler."]  # fmt: skip
    if "echo_drift" in r:
        moved = max(abs(x - 1.0) for x in r["echo_drift"].values())
        lines += ["", f"The ratios divide by ceilings measured at the start of the run; "
                  f"measured again at its end they had moved by up to {moved:.0%} (Ceilings, "
                  "below): a ratio closer to its bound than that is not settled by this "
                  "run."]  # fmt: skip
    lines += ["", "## Ceilings (same run)", "", head, sep]
    for key, label in (
        ("unary_256", "echo unary 256 B"),
        ("unary_200k", "echo unary 200 KB"),
        ("stream_200k", f"echo client stream 200 KB, {echo['chunk_bytes']} B chunks"),
    ):
        s = echo[key]
        lines.append(_row(label, s, None, f"server CPU {s['server_cpu_us_per_call']} us/call, "
                          f"load {s['load_cpu_us_per_call']} us/call"))  # fmt: skip
    # The least any durable design pays, as a fraction of the echo it is built on.
    for key, label, plain in (
        ("store_256", "echo unary 256 B + one Redis script (AOF always)", u256),
        ("store_stream_200k", "echo chunked 200 KB + appended and fsynced + one Redis "
                              "script", s200),
    ):  # fmt: skip
        if key in echo:
            s = echo[key]
            lines.append(_row(label, s, plain, f"server CPU {s['server_cpu_us_per_call']} "
                              f"us/call, redis {s['redis_cpu_us_per_call']} us/call, load "
                              f"{s['load_cpu_us_per_call']} us/call"))  # fmt: skip
    for key, label in (
        ("unary_256", "echo unary 256 B, again at the end of the run"),
        ("stream_200k", "echo client stream 200 KB, again at the end of the run"),
    ):
        if key in r.get("echo_end", {}):
            s, moved = r["echo_end"][key], r["echo_drift"][key]
            lines.append(_row(label, s, None, f"x the start's {moved:.2f}"))
    for key, label in (
        ("claim_serial", "bare Redis claim script, 1 in flight"),
        ("claim_50", "bare Redis claim script, 50 in flight"),
    ):
        s = redis[key]
        lines.append(_row(label, s, None, f"redis CPU {s['redis_cpu_us_per_call']} us/call"))
    lines += [
        "",
        "## Chunk size: 1 MB upload to the echo server, 16 in flight",
        "",
        "| chunk | uploads/s | p50 ms | p99 ms | server CPU us/upload |",
        "|---|---|---|---|---|",
    ]
    for size, s in echo["chunk_sizes_1mb"].items():
        lines.append(f"| {int(size) // 1024} KB | {s['rate_per_s']:.0f} | {s['p50_ms']:.1f} | "
                     f"{s['p99_ms']:.1f} | {s['server_cpu_us_per_call']} |")  # fmt: skip
    lines += [
        "", "## Deep queue", "",
        f"- depth {deep['depth']:,} items without images{r['deep_note']}; loaded by pipelining the "
        f"server's submit script at {deep['load_per_s']:.0f} items/s, during which Redis "
        f"rewrote its AOF {deep.get('load_redis_forks', '?')} times; server and Redis "
        f"settled (no rewrite running or due) after {deep['settle_s']} s",
        f"- Redis used_memory {deep['redis_used_memory_full'] >> 20} MiB: "
        f"**{deep['redis_bytes_per_item']:.0f} bytes per waiting item**",
        f"- server RSS {deep['server_rss_bytes'] >> 20} MiB, redis RSS "
        f"{deep['redis_rss_bytes'] >> 20} MiB", "",
        "## Mix under a flood (aging)", "",
        f"Config `[server] importance_step_ms = {mix['config']['importance_step_ms']}, "
        f"urgency_step_ms = {mix['config']['urgency_step_ms']}`: head-start gap between urgent "
        f"importance 3 and normal importance 1 is {mix['head_start_gap_ms']} ms. Flood "
        f"{mix['flood_rate_per_s']:.0f}/s urgent high, trickle {mix['low_rate_per_s']:.0f}/s low, "
        f"4 authorizers deciding {mix['decisions_per_s']:.0f}/s; {mix['waiting_at_end']} still "
        "waiting at the end.", "",
        "| class | submitted | claimed | wait p50 ms | p95 | p99 | max |",
        "|---|---|---|---|---|---|---|",
        f"| high (3, urgent) | {mix['high_submitted']} | {mix['high_claimed']} | "
        f"{_ms(mix['high_wait'])} |",
        f"| low (1, normal) | {mix['low_submitted']} | {mix['low_claimed']} | "
        f"{_ms(mix['low_wait'])} |",
    ]  # fmt: skip
    if r["server_errors"]:
        lines += ["", "## Errors the server logged", ""]
        lines += [f"- `{line[:160]}`" for line in r["server_errors"][:10]]
    lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in r["plots"]), ""]
    return "\n".join(lines)


def write(out_dir: Path, r: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
    (out_dir / "report.md").write_text(markdown(r))
