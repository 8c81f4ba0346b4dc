"""The report's figures: per branch, teller, on-site reviewer and authorizer, and for
the region as a whole, over a period (R16, R17).

What each figure counts, for a row of each kind:
- volume: submissions (branch, teller, region), reviews (on-site reviewer), decisions
  made (authorizer); compared with the average volume of the rows of the same kind.
- approved / rejected / supplements: decisions made in the period on the row's
  requests (for a reviewer: the requests it confirmed; for an authorizer: its own
  decisions). Rejection rate = rejected / (approved + rejected): asking for images is
  not a final decision. Reasons: the rejection reason codes, counted.
- sent back: on-site reviews that sent the request back to the teller.
- lapsed: claims whose lease ran out undecided, the item going back to the queue
  (authorizer and region rows only: it is the authorizer's, R16).
- handling time: claim to decision or hand-back, for claims ending in the period.
- queue wait: entering the queue to the claim, for claims made in the period (an
  authorizer's: its claims whose offer reached it; one put back or sent back by the
  image check before it was offered counts for the request's rows only).
- preparation time: what the teller's workstation reported at submit (R18).
Each figure is compared with the region's figure over all its requests (pooled, so a
busy branch weighs more than a quiet one) as a ratio: 1.30 is 30% above average."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from server.reports.flags import Verdict, judge
from server.reports.history import History, RequestInfo
from server.reports.period import Period
from server.reports.stats import mean, p90, ratio

DEFAULT_REGION = "default"


class Kind(StrEnum):
    BRANCH = "branch"
    TELLER = "teller"
    REVIEWER = "reviewer"
    AUTHORIZER = "authorizer"
    REGION = "region"


@dataclass(slots=True)
class _Tally:
    volume: int = 0
    approved: int = 0
    rejected: int = 0
    supplements: int = 0
    sent_back: int = 0
    lapsed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    handling_ms: list[int] = field(default_factory=list)
    wait_ms: list[int] = field(default_factory=list)
    preparation_s: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Figures:
    volume: int
    approved: int
    rejected: int
    supplements: int
    sent_back: int
    lapsed: int
    # (reason code, count), most frequent first.
    reasons: tuple[tuple[str, int], ...]
    handling_avg_s: float | None
    handling_p90_s: float | None
    wait_avg_s: float | None
    wait_p90_s: float | None
    preparation_avg_s: float | None
    preparation_p90_s: float | None

    @property
    def rejection_rate(self) -> float | None:
        decided = self.approved + self.rejected
        return self.rejected / decided if decided else None

    @classmethod
    def of(cls, tally: _Tally) -> Figures:
        handling = [ms / 1000 for ms in tally.handling_ms]
        wait = [ms / 1000 for ms in tally.wait_ms]
        preparation = [float(s) for s in tally.preparation_s]
        return cls(
            volume=tally.volume,
            approved=tally.approved,
            rejected=tally.rejected,
            supplements=tally.supplements,
            sent_back=tally.sent_back,
            lapsed=tally.lapsed,
            reasons=tuple(sorted(tally.reasons.items(), key=lambda item: (-item[1], item[0]))),
            handling_avg_s=mean(handling),
            handling_p90_s=p90(handling),
            wait_avg_s=mean(wait),
            wait_p90_s=p90(wait),
            preparation_avg_s=mean(preparation),
            preparation_p90_s=p90(preparation),
        )


@dataclass(frozen=True, slots=True)
class Comparison:
    """Each figure of a row divided by the region's (None: nothing to compare)."""

    volume: float | None
    rejection_rate: float | None
    handling: float | None
    wait: float | None
    preparation: float | None


@dataclass(frozen=True, slots=True)
class Row:
    kind: Kind
    key: str
    figures: Figures
    vs_region: Comparison
    # The branch of a teller or on-site reviewer ("" for the others).
    branch: str = ""
    verdict: Verdict | None = None


@dataclass(frozen=True, slots=True)
class Report:
    period: Period
    region: str | None
    margin: float
    region_figures: Figures
    rows: Mapping[Kind, list[Row]]
    # Every handling time of the region in the period, seconds (the distribution chart).
    handling_s: tuple[float, ...]

    @property
    def flagged(self) -> list[Row]:
        return [row for row in self.rows[Kind.BRANCH] if row.verdict and row.verdict.flagged]

    @property
    def commended(self) -> list[Row]:
        return [row for row in self.rows[Kind.BRANCH] if row.verdict and row.verdict.commended]


class _Book:
    """Tallies keyed by (kind, key)."""

    def __init__(self) -> None:
        self.tallies: dict[tuple[Kind, str], _Tally] = {}
        self.branch_of: dict[str, str] = {}

    def of(self, kind: Kind, key: str) -> _Tally:
        tally = self.tallies.get((kind, key))
        if tally is None:
            tally = self.tallies[(kind, key)] = _Tally()
        return tally

    def for_request(self, info: RequestInfo, authorizer: str = "") -> list[_Tally]:
        """The tallies a fact about this request counts in."""
        self.branch_of.setdefault(info.teller, info.branch)
        tallies = [
            self.of(Kind.REGION, ""),
            self.of(Kind.BRANCH, info.branch),
            self.of(Kind.TELLER, info.teller),
        ]
        if info.reviewer:
            tallies.append(self.of(Kind.REVIEWER, info.reviewer))
        if authorizer:
            tallies.append(self.of(Kind.AUTHORIZER, authorizer))
        return tallies


def build_report(
    history: History,
    period: Period,
    *,
    region: str | None = None,
    branch_regions: Mapping[str, str] | None = None,
    margin: float = 0.25,
) -> Report:
    """The report over ``period`` for the branches of ``region`` (None: all). A branch
    missing from ``branch_regions`` is in the default region."""
    regions = {**(branch_regions or {}), **history.branch_regions}

    def wanted(request_id: str) -> RequestInfo | None:
        info = history.requests.get(request_id)
        if info is None:
            return None
        if region is not None and regions.get(info.branch, DEFAULT_REGION) != region:
            return None
        return info

    book = _Book()
    book.of(Kind.REGION, "")
    handling_s: list[float] = []
    for submitted in history.requests.values():
        if submitted.submitted_ms in period and wanted(submitted.request_id):
            for tally in book.for_request(submitted)[:3]:
                tally.volume += 1
                if submitted.preparation_s is not None:
                    tally.preparation_s.append(submitted.preparation_s)
    for review in history.reviews:
        info = wanted(review.request_id)
        if info is None or review.at_ms not in period:
            continue
        book.branch_of.setdefault(review.reviewer, info.branch)
        reviewer = book.of(Kind.REVIEWER, review.reviewer)
        reviewer.volume += 1
        if not review.confirmed:
            for tally in [*book.for_request(info)[:3], reviewer]:
                tally.sent_back += 1
    for decision in history.decisions:
        info = wanted(decision.request_id)
        if info is None or decision.at_ms not in period:
            continue
        book.of(Kind.AUTHORIZER, decision.authorizer).volume += 1
        for tally in book.for_request(info, decision.authorizer):
            if decision.outcome == "APPROVE":
                tally.approved += 1
            elif decision.outcome == "REJECT":
                tally.rejected += 1
                tally.reasons[decision.reason_code or "?"] += 1
            elif decision.outcome == "ASK_SUPPLEMENT":
                tally.supplements += 1
    for handling in history.handlings:
        info = wanted(handling.request_id)
        if info is None or handling.ended_ms not in period:
            continue
        handling_s.append(handling.ms / 1000)
        for tally in book.for_request(info, handling.authorizer):
            tally.handling_ms.append(handling.ms)
    for lapse in history.lapses:
        if wanted(lapse.request_id) is None or lapse.at_ms not in period:
            continue
        book.of(Kind.REGION, "").lapsed += 1
        book.of(Kind.AUTHORIZER, lapse.authorizer).lapsed += 1
    for wait in history.waits:
        info = wanted(wait.request_id)
        if info is None or wait.claimed_ms not in period:
            continue
        # An offer that never reached its authorizer: no wait (nor row) of theirs.
        for tally in book.for_request(info, wait.authorizer if wait.reached else ""):
            tally.wait_ms.append(wait.ms)
    return _assemble(book, period, region, margin, handling_s)


def _assemble(
    book: _Book, period: Period, region: str | None, margin: float, handling_s: list[float]
) -> Report:
    region_figures = Figures.of(book.of(Kind.REGION, ""))
    rows: dict[Kind, list[Row]] = {}
    for kind in (Kind.BRANCH, Kind.TELLER, Kind.REVIEWER, Kind.AUTHORIZER):
        entries = sorted(
            (key, Figures.of(tally)) for (k, key), tally in book.tallies.items() if k is kind
        )
        average_volume = mean([figures.volume for _, figures in entries])
        rows[kind] = [
            Row(
                kind=kind,
                key=key,
                figures=figures,
                vs_region=_compare(figures, region_figures, average_volume),
                branch=book.branch_of.get(key, "") if kind in _BRANCH_STAFF else "",
                verdict=judge(figures, region_figures, margin) if kind is Kind.BRANCH else None,
            )
            for key, figures in entries
        ]
    return Report(period, region, margin, region_figures, rows, tuple(handling_s))


_BRANCH_STAFF = frozenset({Kind.TELLER, Kind.REVIEWER})


def _compare(figures: Figures, region: Figures, average_volume: float | None) -> Comparison:
    return Comparison(
        volume=ratio(figures.volume, average_volume),
        rejection_rate=ratio(figures.rejection_rate, region.rejection_rate),
        handling=ratio(figures.handling_avg_s, region.handling_avg_s),
        wait=ratio(figures.wait_avg_s, region.wait_avg_s),
        preparation=ratio(figures.preparation_avg_s, region.preparation_avg_s),
    )


def all_rows(report: Report) -> Iterable[Row]:
    for kind in (Kind.BRANCH, Kind.TELLER, Kind.REVIEWER, Kind.AUTHORIZER):
        yield from report.rows[kind]
