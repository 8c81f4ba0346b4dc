"""The report as plain-text tables for a terminal."""

from __future__ import annotations

from collections.abc import Sequence

from server.reports.cells import COLUMNS, percent, reasons, seconds, verdict, why
from server.reports.figures import Kind, Report, Row

TITLES = {
    Kind.BRANCH: "Branches",
    Kind.TELLER: "Tellers",
    Kind.REVIEWER: "On-site reviewers",
    Kind.AUTHORIZER: "Authorizers",
}


def render_table(report: Report) -> str:
    lines = [
        f"Quality report, {report.period}, region {report.region or 'all'}",
        f"(xN: compared with the regional figure; flagged when worse by more than "
        f"{report.margin:.0%}, R17)",
        "",
    ]
    region = report.region_figures
    lines += [
        f"Region: {region.volume} submitted, {region.approved} approved, "
        f"{region.rejected} rejected (rate {percent(region.rejection_rate)}; "
        f"{reasons(region)}); supplement requests {region.supplements}; "
        f"sent back on site {region.sent_back}; leases lapsed undecided {region.lapsed}",
        f"  handling avg {seconds(region.handling_avg_s)} s, p90 "
        f"{seconds(region.handling_p90_s)} s; queue wait avg {seconds(region.wait_avg_s)} s, "
        f"p90 {seconds(region.wait_p90_s)} s; preparation avg "
        f"{seconds(region.preparation_avg_s)} s, p90 {seconds(region.preparation_p90_s)} s "
        "(R18 target: under 60 s)",
        "",
    ]
    for row in report.flagged:
        lines.append(f"FLAGGED for suspension review: {row.key}: {why(row)}")
    for row in report.commended:
        lines.append(f"Commended: {row.key}: {why(row)}")
    if report.flagged or report.commended:
        lines.append("")
    for kind, title in TITLES.items():
        lines.append(f"{title} ({len(report.rows[kind])})")
        lines += _grid(report.rows[kind], kind)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _grid(rows: Sequence[Row], kind: Kind) -> list[str]:
    if not rows:
        return ["  (none in this period)"]
    header = [kind.value, *(c.title for c in COLUMNS)]
    if kind is Kind.BRANCH:
        header.append("R17")
    body = []
    for row in rows:
        name = f"{row.key} ({row.branch})" if row.branch else row.key
        cells = [name, *(c.cell(row) for c in COLUMNS)]
        if kind is Kind.BRANCH:
            cells.append(verdict(row))
        body.append(cells)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return [
        ("  " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))).rstrip()
        for line in [header, *body]
    ]
