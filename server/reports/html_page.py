"""The report as one self-contained HTML page a manager can open: the summary, the
flagged and commended branches, two charts (PNG, embedded as data: URIs so the page
is one file) and the tables."""

from __future__ import annotations

import base64
import html

from server.reports.cells import COLUMNS, percent, reasons, seconds, verdict, why
from server.reports.charts import AVERAGE, BAR, FLAGGED, GOOD, Bar, bar_chart, histogram
from server.reports.figures import Kind, Report
from server.reports.table import TITLES

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.flagged td { background: #fbe3e0; }
tr.commended td { background: #e3f4e8; }
img { display: block; margin: 1em 0; border: 1px solid #ddd; }
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def rejection_chart(report: Report) -> bytes:
    bars = []
    for row in report.rows[Kind.BRANCH]:
        rate = row.figures.rejection_rate
        if rate is None:
            continue
        color = BAR
        if row.verdict is not None and row.verdict.flagged:
            color = FLAGGED
        elif row.verdict is not None and row.verdict.commended:
            color = GOOD
        bars.append(Bar(row.key, rate, color))
    lines = []
    average = report.region_figures.rejection_rate
    if average is not None:
        lines = [
            (f"regional average {average:.1%}", average, AVERAGE),
            (f"flag above {average * (1 + report.margin):.1%}", average * (1 + report.margin),
             FLAGGED),
        ]  # fmt: skip
    return bar_chart("Rejection rate by branch", bars, lines)


def handling_chart(report: Report) -> bytes:
    return histogram("Handling time (claim to decision or hand-back), seconds: items per range",
                     report.handling_s)  # fmt: skip


def render_html(report: Report) -> str:
    region = report.region_figures
    title = f"Quality report, {report.period}, region {report.region or 'all'}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>"
        + html.escape(
            f"{region.volume} submitted, {region.approved} approved, {region.rejected} "
            f"rejected (rate {percent(region.rejection_rate)}: {reasons(region)}), "
            f"{region.supplements} supplement requests, {region.sent_back} sent back on "
            f"site, {region.lapsed} leases lapsed undecided. Handling time avg "
            f"{seconds(region.handling_avg_s)} s (p90 "
            f"{seconds(region.handling_p90_s)} s); queue wait avg "
            f"{seconds(region.wait_avg_s)} s (p90 {seconds(region.wait_p90_s)} s); "
            f"preparation avg {seconds(region.preparation_avg_s)} s (R18 target under 60 s)."
        )
        + "</p>",
        "<p>"
        + html.escape(
            f"xN compares a figure with the regional one. A branch worse than the region "
            f"by more than {report.margin:.0%} on handling time or rejection rate is flagged "
            "for suspension review (R17); one better by as much on both is commended."
        )
        + "</p>",
    ]
    parts.append("<h2>Flagged for suspension review</h2><ul>")
    parts += [f"<li><b>{html.escape(r.key)}</b>: {html.escape(why(r))}</li>"
              for r in report.flagged] or ["<li>none</li>"]  # fmt: skip
    parts.append("</ul><h2>Commended</h2><ul>")
    parts += [f"<li><b>{html.escape(r.key)}</b>: {html.escape(why(r))}</li>"
              for r in report.commended] or ["<li>none</li>"]  # fmt: skip
    parts.append("</ul><h2>Charts</h2>")
    parts.append(_img(rejection_chart(report), "rejection rate by branch"))
    parts.append(_img(handling_chart(report), "handling time distribution"))
    for kind, heading in TITLES.items():
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(_table(report, kind))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _table(report: Report, kind: Kind) -> str:
    rows = report.rows[kind]
    if not rows:
        return "<p>none in this period</p>"
    head = [kind.value, *(c.title for c in COLUMNS)]
    if kind is Kind.BRANCH:
        head.append("R17")
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        cells = [f"{row.key} ({row.branch})" if row.branch else row.key,
                 *(c.cell(row) for c in COLUMNS)]  # fmt: skip
        mark = verdict(row)
        if kind is Kind.BRANCH:
            cells.append(mark)
        css = ' class="flagged"' if mark.startswith("SUSPENSION") else (
            ' class="commended"' if mark == "commended" else "")  # fmt: skip
        out.append(f"<tr{css}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)
