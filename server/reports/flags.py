"""The suspension-review rule (R17): a branch whose average handling time or
rejection rate is worse than the regional figure by more than the margin is flagged
for suspension review; one better than it by more than the margin on every figure
it can be judged on is commended. A figure the branch has no data for (no decision,
no handled claim in the period) is not judged. Exactly at the margin is neither."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.reports.figures import Figures


@dataclass(frozen=True, slots=True)
class Verdict:
    flagged: bool
    commended: bool
    # Why, one line per judged figure that is out of line (flagged) or better.
    reasons: tuple[str, ...]


def judge(branch: Figures, region: Figures, margin: float) -> Verdict:
    if margin < 0:
        raise ValueError(f"--margin must be 0 or more, got {margin}")
    judged = [
        ("average handling time", branch.handling_avg_s, region.handling_avg_s, _seconds),
        ("rejection rate", branch.rejection_rate, region.rejection_rate, _percent),
    ]
    worse: list[str] = []
    better: list[str] = []
    count = 0
    for name, value, average, show in judged:
        if value is None or average is None:
            continue
        count += 1
        line = f"{name} {show(value)} against the regional {show(average)}"
        if value > average * (1 + margin):
            worse.append(line)
        elif value < average * (1 - margin):
            better.append(line)
    if worse:
        return Verdict(True, False, tuple(worse))
    commended = count > 0 and len(better) == count
    return Verdict(False, commended, tuple(better) if commended else ())


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def _percent(value: float) -> str:
    return f"{value:.1%}"
