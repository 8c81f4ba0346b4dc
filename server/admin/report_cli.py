"""``report``: the quality report of a period and region (R16, R17, R18), computed
from the audit trail: a terminal table by default, or ``--csv FILE`` / ``--html FILE``.

Mounted into authq-admin by add_report_command(); exit codes: 0 the report was made
(whatever it flags), 1 a file could not be written or the trail could not be read,
2 a bad option (dates, margin)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from server.admin.accounts_cli import AdminContext, Subparsers
from server.admin.archive_cli import add_archive_dir_option
from server.reports import (
    Period,
    PeriodError,
    build_report,
    render_csv,
    render_html,
    render_table,
)
from server.reports.sources import branch_regions, load_history
from server.store.audit import AuditError


def _margin(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction such as 0.25, got {text!r}"
        ) from None
    if not 0 <= value < 10:
        raise argparse.ArgumentTypeError(f"must be between 0 and 10 (0.25 = 25%), got {value}")
    return value


def add_report_command(subparsers: Subparsers) -> None:
    report = subparsers.add_parser(
        "report",
        help="quality report of a period: tellers, reviewers, authorizers, branches (R17)",
        description=__doc__,
    )
    report.add_argument("--from", dest="first", required=True, metavar="YYYY-MM-DD",
                        help="first day of the period (UTC)")  # fmt: skip
    report.add_argument("--to", dest="last", required=True, metavar="YYYY-MM-DD",
                        help="last day of the period, included (UTC)")  # fmt: skip
    report.add_argument("--region", help="only the branches of this region (default: all)")
    add_archive_dir_option(report)
    report.add_argument(
        "--margin",
        type=_margin,
        default=0.25,
        help="flag branches worse than the regional figure by more than this fraction "
        "(default 0.25 = 25%%)",
    )
    report.add_argument("--csv", type=Path, metavar="FILE", help="write the report as CSV")
    report.add_argument(
        "--html", type=Path, metavar="FILE", help="write the report as an HTML page with charts"
    )
    report.set_defaults(run_admin=run_report)


async def run_report(ctx: AdminContext, args: argparse.Namespace, out: TextIO) -> int:
    try:
        period = Period.parse(args.first, args.last)
    except PeriodError as exc:
        print(f"authq-admin report: {exc}", file=sys.stderr)
        return 2
    regions = await branch_regions(ctx.accounts.client, ctx.accounts.keys)
    try:
        history = await load_history(ctx.audit, period, known_branches=regions.keys())
    except AuditError as exc:
        print(f"authq-admin report: {exc}: run `authq-admin audit verify`", file=sys.stderr)
        return 1
    report = build_report(
        history, period, region=args.region, branch_regions=regions, margin=args.margin
    )
    written = []
    try:
        if args.csv is not None:
            args.csv.write_text(render_csv(report), encoding="utf-8")
            written.append(f"CSV written to {args.csv}")
        if args.html is not None:
            args.html.write_text(render_html(report), encoding="utf-8")
            written.append(f"HTML written to {args.html}")
    except OSError as exc:
        print(f"authq-admin report: {exc}", file=sys.stderr)
        return 1
    if not written:
        out.write(render_table(report))
        return 0
    for line in written:
        print(line, file=out)
    for row in report.flagged:
        print(f"flagged for suspension review: {row.key}", file=out)
    return 0
