"""How report figures read as text, shared by the terminal table and the HTML page;
and the columns every row shows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from server.reports.figures import Figures, Row


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def times(value: float | None) -> str:
    """A ratio to the regional figure: ``x1.30``."""
    return "" if value is None else f"x{value:.2f}"


def with_ratio(text: str, value: float | None) -> str:
    shown = times(value)
    return f"{text} ({shown})" if shown else text


def reasons(figures: Figures) -> str:
    return ", ".join(f"{code} {count}" for code, count in figures.reasons) or "-"


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    cell: Callable[[Row], str]


def _f(row: Row) -> Figures:
    return row.figures


COLUMNS = (
    Column("volume", lambda r: with_ratio(str(_f(r).volume), r.vs_region.volume)),
    Column("approved", lambda r: str(_f(r).approved)),
    Column("rejected", lambda r: str(_f(r).rejected)),
    Column(
        "rejection rate",
        lambda r: with_ratio(percent(_f(r).rejection_rate), r.vs_region.rejection_rate),
    ),
    Column("reasons", lambda r: reasons(_f(r))),
    Column("supplements", lambda r: str(_f(r).supplements)),
    Column("sent back", lambda r: str(_f(r).sent_back)),
    Column("lapsed", lambda r: str(_f(r).lapsed)),
    Column(
        "handling avg s", lambda r: with_ratio(seconds(_f(r).handling_avg_s), r.vs_region.handling)
    ),
    Column("handling p90 s", lambda r: seconds(_f(r).handling_p90_s)),
    Column("wait avg s", lambda r: with_ratio(seconds(_f(r).wait_avg_s), r.vs_region.wait)),
    Column("wait p90 s", lambda r: seconds(_f(r).wait_p90_s)),
    Column(
        "preparation avg s",
        lambda r: with_ratio(seconds(_f(r).preparation_avg_s), r.vs_region.preparation),
    ),
    Column("preparation p90 s", lambda r: seconds(_f(r).preparation_p90_s)),
)


def verdict(row: Row) -> str:
    if row.verdict is None:
        return ""
    if row.verdict.flagged:
        return "SUSPENSION REVIEW"
    return "commended" if row.verdict.commended else ""


def why(row: Row) -> str:
    return "; ".join(row.verdict.reasons) if row.verdict else ""
