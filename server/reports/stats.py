"""Averages and percentiles of the report, defined once so the tests can compute the
same figures by hand."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def p90(values: Sequence[float]) -> float | None:
    """Nearest rank: the smallest value with at least 90% of the values at or below
    it (of 10 values the 9th smallest, of 5 the largest). Always a value that
    occurred, never an interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def ratio(value: float | None, average: float | None) -> float | None:
    """value / average; None when either is missing or the average is 0."""
    if value is None or average is None or average == 0:
        return None
    return value / average
