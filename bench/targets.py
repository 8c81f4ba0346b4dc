"""The targets of issue 5, checked against one run's figures (as ratios where the
issue states them as ratios to a ceiling measured in the same run)."""

from __future__ import annotations

import math
from typing import Any


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def check(r: dict[str, Any]) -> list[dict[str, Any]]:
    echo, sub, cyc, deep = r["echo"], r["submit"], r["cycle"], r["deep"]
    unary256 = echo["unary_256"]["rate_per_s"]
    stream200 = echo["stream_200k"]["rate_per_s"]
    rows = [
        ("Submit, no images, unary: >= 50% of bare unary echo req/s",
         _ratio(sub["unary_0"]["rate_per_s"], unary256), 0.5, "ratio"),
        ("Submit, no images, session stream: >= 2x bare unary echo req/s",
         _ratio(sub["session_0"]["rate_per_s"], unary256), 2.0, "ratio"),
        ("Submit, one 200 KB image (unary): >= 60% of bare chunked upload req/s",
         _ratio(sub["unary_1"]["rate_per_s"], stream200), 0.6, "ratio"),
        ("Submit, one 200 KB image (session): >= 60% of bare chunked upload req/s",
         _ratio(sub["session_1"]["rate_per_s"], stream200), 0.6, "ratio"),
        ("Full cycle, no images: >= 1,000 req/s submit to teller seeing the decision",
         cyc["max"]["cycles"]["rate_per_s"], 1000.0, "req/s"),
    ]  # fmt: skip
    out = [
        {"target": name, "value": round(value, 3), "bound": bound, "unit": unit,
         "pass": bool(value >= bound)}
        for name, value, bound, unit in rows
    ]  # fmt: skip
    upper = [
        ("Half load (full cycle): p99 submit ack < 10 ms",
         cyc["half"]["submit_ack"]["p99_ms"], 10.0, "ms"),
        ("Half load (full cycle): p99 decision-to-teller notification < 5 ms",
         cyc["half"]["notification"]["p99_ms"], 5.0, "ms"),
        ("Claim p99 at full depth within 1.5x of claim p99 at 1,000 waiting",
         _ratio(deep["at_depth"]["claim"]["p99_ms"], deep["at_1k"]["claim"]["p99_ms"]), 1.5,
         "ratio"),
        ("Redis memory per waiting item (no images) < 1 KB",
         deep["redis_bytes_per_item"], 1024.0, "bytes"),
    ]  # fmt: skip
    out += [
        {"target": name, "value": round(value, 3), "bound": bound, "unit": unit,
         "pass": bool(value < bound)}
        for name, value, bound, unit in upper
    ]  # fmt: skip
    return out
