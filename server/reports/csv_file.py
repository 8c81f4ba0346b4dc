"""The report as CSV: one line per branch, teller, on-site reviewer and authorizer,
and one for the region, with raw numbers (seconds, fractions) for a spreadsheet."""

from __future__ import annotations

import csv
import io

from server.reports.figures import Comparison, Figures, Report, all_rows
from server.reports.stats import ratio

HEADER = (
    "kind",
    "id",
    "branch",
    "volume",
    "volume_vs_avg",
    "approved",
    "rejected",
    "rejection_rate",
    "rejection_rate_vs_region",
    "rejection_reasons",
    "supplements",
    "sent_back",
    "lapsed",
    "handling_avg_s",
    "handling_p90_s",
    "handling_vs_region",
    "wait_avg_s",
    "wait_p90_s",
    "wait_vs_region",
    "preparation_avg_s",
    "preparation_p90_s",
    "preparation_vs_region",
    "r17",
    "r17_reasons",
)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}".rstrip("0").rstrip(".")


def _line(
    kind: str, key: str, branch: str, f: Figures, vs: Comparison, r17: str, why: str
) -> list[str]:
    return [
        kind,
        key,
        branch,
        str(f.volume),
        _num(vs.volume),
        str(f.approved),
        str(f.rejected),
        _num(f.rejection_rate),
        _num(vs.rejection_rate),
        ";".join(f"{code}:{count}" for code, count in f.reasons),
        str(f.supplements),
        str(f.sent_back),
        str(f.lapsed),
        _num(f.handling_avg_s),
        _num(f.handling_p90_s),
        _num(vs.handling),
        _num(f.wait_avg_s),
        _num(f.wait_p90_s),
        _num(vs.wait),
        _num(f.preparation_avg_s),
        _num(f.preparation_p90_s),
        _num(vs.preparation),
        r17,
        why,
    ]


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    region = report.region_figures
    same = Comparison(
        volume=None,
        rejection_rate=ratio(region.rejection_rate, region.rejection_rate),
        handling=ratio(region.handling_avg_s, region.handling_avg_s),
        wait=ratio(region.wait_avg_s, region.wait_avg_s),
        preparation=ratio(region.preparation_avg_s, region.preparation_avg_s),
    )
    writer.writerow(_line("region", report.region or "all", "", region, same, "", ""))
    for row in all_rows(report):
        r17, why = "", ""
        if row.verdict is not None:
            r17 = (
                "SUSPENSION_REVIEW"
                if row.verdict.flagged
                else ("COMMENDED" if row.verdict.commended else "")
            )
            why = "; ".join(row.verdict.reasons)
        writer.writerow(_line(row.kind.value, row.key, row.branch, row.figures, row.vs_region,
                              r17, why))  # fmt: skip
    return out.getvalue()
