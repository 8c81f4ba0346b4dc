"""PNG plots (matplotlib, Agg): latency CDFs and throughput over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.stats import Recorder


def cdf(path: Path, title: str, recorders: dict[str, Recorder]) -> str:
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, rec in recorders.items():
        values = sorted(max(v, 1e-3) for v in rec.latencies_ms)
        if values:
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.plot(values, ys, label=f"{label} (n={len(values)})")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log)")
    ax.set_ylabel("fraction of calls")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def timeline(path: Path, title: str, recorders: dict[str, Recorder]) -> str:
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, rec in recorders.items():
        if rec.done_at:
            points = rec.timeline(min(rec.done_at))
            ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
    ax.set_xlabel("seconds since the scenario's first completion")
    ax.set_ylabel("completions per second (0.5 s bins)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
