"""Quality reports (R16, R17, R18) computed from the hash-chained audit trail, so a
report for any past period recomputes to the same figures: per branch, teller,
on-site reviewer and authorizer, compared with the regional average, with the
branches flagged for suspension review and the ones commended."""

from server.reports.csv_file import render_csv
from server.reports.figures import Figures, Kind, Report, Row, build_report
from server.reports.history import History, collect
from server.reports.html_page import render_html
from server.reports.period import Period, PeriodError
from server.reports.table import render_table

__all__ = [
    "Figures",
    "History",
    "Kind",
    "Period",
    "PeriodError",
    "Report",
    "Row",
    "build_report",
    "collect",
    "render_csv",
    "render_html",
    "render_table",
]
