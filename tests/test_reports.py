"""Quality reports (R16-R18) from the audit trail: figures checked against a small
history computed by hand, the R17 flagging rule on both sides of its margin, the same
answer for a past period later on, and the CSV and HTML outputs of authq-admin."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from PIL import Image

from server.accounts.store import AccountStore
from server.reports import Kind, Period, PeriodError, Report, Row, build_report, render_csv
from server.reports.charts import histogram_bins
from server.reports.figures import Figures
from server.reports.flags import judge
from server.reports.history import collect
from server.reports.sources import branch_regions, load_history
from server.reports.stats import p90
from server.store.audit import AuditEntry, AuditLog
from server.store.keys import Keys
from tests.conftest import RunningServer
from tests.helpers import request
from tests.test_cli import _cli_env, run_cli

# 2026-03-02 00:05 UTC: the period is that one day.
T0 = int(datetime(2026, 3, 2, 0, 5, tzinfo=UTC).timestamp()) * 1000
DAY = Period.parse("2026-03-02", "2026-03-02")
REGIONS = {"b1": "north", "b2": "north", "b3": "north"}  # b9 (south) comes from the trail


def at(seconds: float) -> int:
    return T0 + int(seconds * 1000)


class Trail:
    """Builds the audit records the server writes, with chosen times."""

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    def add(self, actor: str, role: str, action: str, target: str, t: float,
            outcome: str = "OK", **details: str | int) -> None:  # fmt: skip
        self.entries.append(AuditEntry(actor=actor, role=role, origin="test", action=action,
                                       target=target, outcome=outcome, details=details,
                                       at_ms=at(t)))  # fmt: skip

    def submit(self, rid: str, teller: str, branch: str, t: float, prep: int) -> None:
        self.add(teller, "TELLER", "SUBMIT", rid, t, business_type="CASH_WITHDRAWAL",
                 amount_minor=100, branch=branch, preparation_s=prep)  # fmt: skip

    def claim(self, rid: str, who: str, t: float, token: int) -> None:
        self.add(who, "AUTHORIZER", "CLAIM", rid, t, token=token)

    def decide(self, rid: str, who: str, t: float, token: int, outcome: str,
               reason: str = "", refused: str = "") -> None:  # fmt: skip
        details: dict[str, str | int] = {"outcome": outcome, "reason_code": reason, "token": token}
        self.entries.append(AuditEntry(actor=who, role="AUTHORIZER", origin="test",
                                       action="DECIDE", target=rid, outcome=refused or "OK",
                                       details=details, at_ms=at(t)))  # fmt: skip

    def review(self, rid: str, who: str, t: float, confirm: bool) -> None:
        details = {"outcome": "CONFIRM" if confirm else "SEND_BACK", "checks": "CASH_RECOUNTED"}
        self.entries.append(AuditEntry(actor=who, role="ONSITE_REVIEWER", origin="test",
                                       action="ONSITE_REVIEW", target=rid, details=details,
                                       at_ms=at(t)))  # fmt: skip


def hand_computed_trail() -> Trail:
    """Times in seconds after T0. The expected figures are worked out in the tests."""
    tr = Trail()
    tr.add("admin", "ADMIN", "BRANCH_CREATE", "b9", -9000, name="Branch 9", region="south")
    # b1 (teller t1, on-site reviewer r1)
    tr.submit("R1", "t1", "b1", 0, 40)
    tr.submit("R2", "t1", "b1", 0, 50)
    tr.claim("R1", "a1", 10, 1)
    tr.decide("R1", "a1", 40, 1, "APPROVE")  # wait 10, handling 30
    tr.claim("R2", "a1", 50, 2)
    tr.decide("R2", "a1", 110, 2, "REJECT", "ID_MISMATCH")  # wait 50, handling 60
    tr.submit("R3", "t1", "b1", 100, 70)
    tr.review("R3", "r1", 130, confirm=True)
    tr.claim("R3", "a2", 150, 3)  # wait 20 (from the confirmation)
    tr.decide("R3", "a2", 170, 3, "ASK_SUPPLEMENT")  # handling 20
    tr.add("t1", "TELLER", "SUPPLY", "R3", 200, images=1)
    tr.claim("R3", "a2", 230, 4)  # wait 30 (from the supply)
    tr.decide("R3", "a2", 250, 4, "APPROVE")  # handling 20
    tr.decide("R3", "a2", 251, 4, "APPROVE")  # a retry of the same decision: once only
    tr.submit("R11", "t1", "b1", 300, 45)
    tr.review("R11", "r1", 320, confirm=False)
    # b2 (teller t2)
    tr.submit("R4", "t2", "b2", 0, 0)  # preparation not reported
    tr.submit("R5", "t2", "b2", 10, 90)
    tr.claim("R4", "a1", 100, 5)  # wait 100
    tr.add("a1", "AUTHORIZER", "RELEASE", "R4", 120, token=5)  # handling 20
    tr.claim("R4", "a2", 140, 6)  # wait 20 (from the hand-back)
    tr.decide("R4", "a2", 240, 6, "REJECT", "SIGNATURE_MISMATCH")  # handling 100
    tr.claim("R5", "a2", 300, 7)  # wait 290
    tr.decide("R5", "a2", 420, 7, "REJECT", "OTHER")  # handling 120
    # b3 (teller t3)
    tr.submit("R6", "t3", "b3", 0, 30)
    tr.submit("R7", "t3", "b3", 0, 30)
    tr.claim("R6", "a1", 5, 8)  # wait 5
    tr.decide("R6", "a1", 15, 8, "APPROVE")  # handling 10
    tr.decide("R6", "a1", 16, 99, "REJECT", "OTHER", refused="stale fencing token 99")
    tr.claim("R7", "a2", 10, 12)  # wait 10; the lease then lapses: no handling
    tr.add("system", "-", "LEASE_EXPIRED", "R7", 15, holder="a2", token=12)
    tr.add("system", "-", "LEASE_EXPIRED", "R7", 17, holder="a2", token=12)  # once only
    tr.claim("R7", "a1", 20, 9)  # wait 5 (from the lapse)
    tr.decide("R7", "a1", 30, 9, "APPROVE")  # handling 10
    # b3, entirely on the day before: outside the period
    tr.submit("R8", "t3", "b3", -600, 30)
    tr.claim("R8", "a2", -596, 13)
    tr.add("system", "-", "LEASE_EXPIRED", "R8", -594, holder="a2", token=13)
    tr.claim("R8", "a1", -590, 10)
    tr.decide("R8", "a1", -580, 10, "APPROVE")
    # b9, region south
    tr.submit("R10", "t9", "b9", 0, 20)
    tr.claim("R10", "a1", 10, 11)
    tr.decide("R10", "a1", 1000, 11, "REJECT", "ID_INVALID")
    return tr


async def stored_trail(redis_client: aioredis.Redis) -> AuditLog:
    """The trail in a real AuditLog on Redis, and branches b1-b3 stored with region."""
    log = AuditLog(redis_client)
    await log.append_many(hand_computed_trail().entries)
    accounts = AccountStore(redis_client, Keys())
    for branch, region in REGIONS.items():
        await accounts.create_branch(branch, branch, region)
    return log


async def north(redis_client: aioredis.Redis, margin: float = 0.25) -> Report:
    log = await stored_trail(redis_client)
    regions = await branch_regions(redis_client, Keys())
    return build_report(
        await load_history(log), DAY, region="north", branch_regions=regions, margin=margin
    )


def row(report: Report, kind: Kind, key: str) -> Row:
    (found,) = [r for r in report.rows[kind] if r.key == key]
    return found


def approx(value: float | None) -> object:
    return pytest.approx(value, abs=1e-9)


async def test_figures_match_the_hand_computed_history(redis_client: aioredis.Redis) -> None:
    report = await north(redis_client)
    region = report.region_figures
    # Submitted in the period, north: R1 R2 R3 R11 (b1), R4 R5 (b2), R6 R7 (b3); R8 was
    # the day before, R10 is south.
    assert region.volume == 8
    # Decided: approved R1 R3 R6 R7, rejected R2 R4 R5; R3's supplement request.
    assert (region.approved, region.rejected, region.supplements) == (4, 3, 1)
    assert region.rejection_rate == approx(3 / 7)
    assert region.reasons == (("ID_MISMATCH", 1), ("OTHER", 1), ("SIGNATURE_MISMATCH", 1))
    assert region.sent_back == 1
    # One lease lapsed in the period (R7, a2's; R8's lapse was the day before).
    assert region.lapsed == 1
    # Handling: 30 60 20 20 (b1), 20 100 120 (b2), 10 10 (b3) = 390 s over 9.
    assert region.handling_avg_s == approx(390 / 9)
    assert region.handling_p90_s == 120  # nearest rank: the 9th of 9
    # Waits: 10 50 20 30 (b1), 100 20 290 (b2), 5 10 5 (b3) = 540 s over 10.
    assert region.wait_avg_s == approx(540 / 10)
    assert region.wait_p90_s == 100  # nearest rank: the 9th of 10
    # Preparation: 40 50 70 45 (b1), 90 (b2; R4 did not report), 30 30 (b3).
    assert region.preparation_avg_s == approx(355 / 7)
    assert region.preparation_p90_s == 90

    b1 = row(report, Kind.BRANCH, "b1").figures
    assert (b1.volume, b1.approved, b1.rejected, b1.supplements, b1.sent_back) == (4, 2, 1, 1, 1)
    assert b1.rejection_rate == approx(1 / 3)
    assert (b1.handling_avg_s, b1.handling_p90_s) == (32.5, 60)
    assert (b1.wait_avg_s, b1.wait_p90_s) == (27.5, 50)
    assert (b1.preparation_avg_s, b1.preparation_p90_s) == (51.25, 70)
    b2 = row(report, Kind.BRANCH, "b2")
    assert (b2.figures.volume, b2.figures.approved, b2.figures.rejected) == (2, 0, 2)
    assert b2.figures.handling_avg_s == 80
    assert b2.figures.wait_avg_s == approx(410 / 3)
    assert b2.figures.preparation_avg_s == 90
    # Compared with the region: rate 1 / (3/7), handling 80 / (390/9).
    assert b2.vs_region.rejection_rate == approx(7 / 3)
    assert b2.vs_region.handling == approx(80 / (390 / 9))
    assert b2.vs_region.volume == approx(2 / (8 / 3))  # branches average 8/3 submissions
    b3 = row(report, Kind.BRANCH, "b3").figures
    assert (b3.volume, b3.approved, b3.rejected, b3.rejection_rate) == (2, 2, 0, 0)
    assert (b3.handling_avg_s, b3.preparation_avg_s) == (10, 30)
    assert b3.lapsed == 0  # the authorizer's, not the branch's
    assert b3.wait_avg_s == approx(20 / 3)
    assert [r.key for r in report.rows[Kind.BRANCH]] == ["b1", "b2", "b3"]  # no b9

    t1 = row(report, Kind.TELLER, "t1")
    assert t1.branch == "b1"
    assert t1.figures == b1
    r1 = row(report, Kind.REVIEWER, "r1")
    assert r1.branch == "b1"
    # Two reviews, one sent back; the center's work on R3, which it confirmed.
    assert (r1.figures.volume, r1.figures.sent_back) == (2, 1)
    assert (r1.figures.approved, r1.figures.rejected, r1.figures.supplements) == (1, 0, 1)
    assert (r1.figures.handling_avg_s, r1.figures.wait_avg_s) == (20, 25)
    assert r1.figures.preparation_avg_s is None

    a1 = row(report, Kind.AUTHORIZER, "a1").figures
    # R1 approve, R2 reject, R6 approve, R7 approve (R10 is south, R8 outside).
    assert (a1.volume, a1.approved, a1.rejected, a1.supplements) == (4, 3, 1, 0)
    assert a1.reasons == (("ID_MISMATCH", 1),)
    # Handling 30 60 20(release) 10 10; waits of its claims 10 50 100 5 5.
    assert (a1.handling_avg_s, a1.handling_p90_s) == (26, 60)
    assert a1.wait_avg_s == 34
    assert a1.lapsed == 0
    a2 = row(report, Kind.AUTHORIZER, "a2").figures
    assert (a2.volume, a2.approved, a2.rejected, a2.supplements) == (4, 1, 2, 1)
    assert a2.rejection_rate == approx(2 / 3)
    assert (a2.handling_avg_s, a2.wait_avg_s) == (65, 74)
    assert a2.lapsed == 1
    assert row(report, Kind.AUTHORIZER, "a2").vs_region.volume == 1

    # R17 with a 25% margin: b2 is worse on both, b3 better on both, b1 in between.
    assert [r.key for r in report.flagged] == ["b2"]
    assert len(row(report, Kind.BRANCH, "b2").verdict.reasons) == 2  # type: ignore[union-attr]
    assert [r.key for r in report.commended] == ["b3"]


def test_a_put_back_claim_is_neither_handled_nor_a_lapse() -> None:
    """A claim the dispatcher put back (its offer never reached the authorizer) ends
    the claim without handling time or a lapse against them, and the next wait is
    counted from the put-back."""
    tr = Trail()
    tr.submit("P1", "t1", "b1", 0, 30)
    tr.claim("P1", "a1", 10, 1)
    tr.add("system", "-", "PUT_BACK", "P1", 11, holder="a1", token=1, note="left")
    tr.claim("P1", "a2", 25, 2)
    tr.decide("P1", "a2", 40, 2, "APPROVE")
    history = collect(tr.entries)
    assert history.lapses == []
    assert [(h.authorizer, h.claimed_ms, h.ended_ms) for h in history.handlings] == [
        ("a2", at(25), at(40))
    ]
    assert [(w.authorizer, w.queued_ms, w.claimed_ms) for w in history.waits] == [
        ("a1", at(0), at(10)),
        ("a2", at(11), at(25)),
    ]


async def test_the_whole_center_and_other_regions(redis_client: aioredis.Redis) -> None:
    log = await stored_trail(redis_client)
    history = await load_history(log)
    everything = build_report(history, DAY, branch_regions=REGIONS)
    assert everything.region_figures.volume == 9  # R10 of b9 too
    assert row(everything, Kind.AUTHORIZER, "a1").figures.volume == 5
    # b9's region comes from its BRANCH_CREATE record in the trail.
    south = build_report(history, DAY, region="south", branch_regions=REGIONS)
    assert [r.key for r in south.rows[Kind.BRANCH]] == ["b9"]
    assert south.region_figures.handling_avg_s == 990
    assert build_report(history, DAY, region="east").region_figures.volume == 0


async def test_flagging_on_both_sides_of_the_margin(redis_client: aioredis.Redis) -> None:
    # b2's rejection rate is 7/3 = 2.333 times the region's; its handling 1.846 times.
    log = await stored_trail(redis_client)
    history = await load_history(log)

    def verdict(margin: float) -> tuple[bool, int]:
        report = build_report(history, DAY, region="north", branch_regions=REGIONS,
                              margin=margin)  # fmt: skip
        b2 = row(report, Kind.BRANCH, "b2").verdict
        assert b2 is not None
        return b2.flagged, len(b2.reasons)

    assert verdict(0.80) == (True, 2)  # both over 1.8x
    assert verdict(0.90) == (True, 1)  # 1.846 < 1.9: only the rejection rate
    assert verdict(1.30) == (True, 1)  # 2.333 > 2.3
    assert verdict(1.34) == (False, 0)  # 2.333 < 2.34


def _figures(handling: float | None, approved: int, rejected: int) -> Figures:
    return Figures(volume=1, approved=approved, rejected=rejected, supplements=0, sent_back=0,
                   lapsed=0, reasons=(), handling_avg_s=handling, handling_p90_s=handling,
                   wait_avg_s=None, wait_p90_s=None, preparation_avg_s=None,
                   preparation_p90_s=None)  # fmt: skip


def test_the_rule_itself_at_its_edges() -> None:
    region = _figures(40.0, 3, 1)  # 25% rejected, 40 s
    assert judge(_figures(50.0, 3, 1), region, 0.25).flagged is False  # exactly +25%
    assert judge(_figures(50.5, 3, 1), region, 0.25).flagged is True
    assert judge(_figures(40.0, 1, 1), region, 0.25).flagged is True  # 50% rejected
    assert judge(_figures(30.0, 4, 0), region, 0.25).commended is False  # exactly -25%
    better = judge(_figures(29.0, 4, 0), region, 0.25)
    assert (better.flagged, better.commended) == (False, True)
    # No decisions: judged on handling time alone.
    assert judge(_figures(29.0, 0, 0), region, 0.25).commended is True
    assert judge(_figures(None, 0, 0), region, 0.25).commended is False  # nothing to judge
    with pytest.raises(ValueError, match="margin"):
        judge(region, region, -0.1)


async def test_a_past_period_recomputes_identically(redis_client: aioredis.Redis) -> None:
    log = await stored_trail(redis_client)
    first = render_csv(build_report(await load_history(log), DAY, branch_regions=REGIONS))
    later = Trail()  # the next day's work lands in the trail
    later.submit("R20", "t1", "b1", 86_400, 10)
    later.claim("R20", "a1", 86_410, 20)
    later.decide("R20", "a1", 86_420, 20, "REJECT", "OTHER")
    later.claim("R2", "a2", 86_500, 21)  # even a late event on an old request
    await log.append_many(later.entries)
    again = render_csv(build_report(await load_history(log), DAY, branch_regions=REGIONS))
    assert again == first
    next_day = Period.parse("2026-03-03", "2026-03-03")
    assert build_report(await load_history(log), next_day).region_figures.volume == 1


def test_statistics_and_bins_by_hand() -> None:
    assert p90([5, 1, 4, 2, 3]) == 5
    assert p90(list(range(1, 11))) == 9
    assert p90(list(range(1, 12))) == 10  # ceil(9.9) = 10th of 11
    assert p90([]) is None
    assert histogram_bins([0, 10, 20, 30], bins=3) == [(0, 10, 1), (10, 20, 1), (20, 30, 2)]
    assert histogram_bins([7, 7]) == [(7, 7, 2)]


def test_periods_are_checked() -> None:
    assert DAY.end_ms - DAY.start_ms == 86_400_000
    assert at(-301) not in DAY
    assert at(-300) in DAY
    with pytest.raises(PeriodError, match="--to"):
        Period.parse("2026-03-02", "2026-03-01")
    with pytest.raises(PeriodError, match="--from"):
        Period.parse("March 2", "2026-03-01")


async def admin(redis_url: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.admin.cli", "--redis-url", redis_url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env=dict(os.environ),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_csv_html_and_table_from_authq_admin(
    redis_client: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    await stored_trail(redis_client)
    csv_file, html_file = tmp_path / "report.csv", tmp_path / "report.html"
    code, out, err = await admin(
        redis_url, "report", "--from", "2026-03-02", "--to", "2026-03-02",
        "--region", "north", "--csv", str(csv_file), "--html", str(html_file),
    )  # fmt: skip
    assert code == 0, err
    assert "flagged for suspension review: b2" in out
    lines = list(csv.DictReader(io.StringIO(csv_file.read_text(encoding="utf-8"))))
    assert [(line["kind"], line["id"]) for line in lines] == [
        ("region", "north"), ("branch", "b1"), ("branch", "b2"), ("branch", "b3"),
        ("teller", "t1"), ("teller", "t2"), ("teller", "t3"), ("reviewer", "r1"),
        ("authorizer", "a1"), ("authorizer", "a2"),
    ]  # fmt: skip
    b2 = lines[2]
    assert (b2["volume"], b2["rejected"], b2["rejection_rate"]) == ("2", "2", "1")
    assert b2["rejection_reasons"] == "OTHER:1;SIGNATURE_MISMATCH:1"
    assert b2["handling_avg_s"] == "80"
    assert b2["r17"] == "SUSPENSION_REVIEW"
    assert lines[3]["r17"] == "COMMENDED"
    assert lines[0]["rejection_rate"] == "0.4286"
    assert (lines[0]["lapsed"], lines[8]["lapsed"], lines[9]["lapsed"]) == ("1", "0", "1")

    page = html_file.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    for data in images:
        with Image.open(io.BytesIO(base64.b64decode(data))) as picture:
            picture.load()
            assert picture.format == "PNG"
            assert picture.width >= 720
            assert picture.height > 300
            assert len(picture.getcolors(100_000) or []) > 5  # something was drawn
    assert "b2" in page
    assert "SUSPENSION REVIEW" in page

    code, out, err = await admin(redis_url, "report", "--from", "2026-03-02", "--to", "2026-03-02")
    assert code == 0, err
    # All regions (b9 too: one rejection, 990 s): 4 of 8 rejected, handling 1380/10 s.
    assert (
        "FLAGGED for suspension review: b2: rejection rate 100.0% against the regional 50.0%\n"
        in out
    )
    assert "FLAGGED for suspension review: b9" in out
    assert "Commended: b1" in out
    assert "Commended: b3" in out
    assert "Tellers (4)" in out
    assert "t9 (b9)" in out
    code, _, err = await admin(redis_url, "report", "--from", "2026-03-03", "--to", "2026-03-02")
    assert code == 2
    assert "--to 2026-03-02 is before --from 2026-03-03" in err
    code, _, err = await admin(redis_url, "report", "--from", "2026-03-02", "--to",
                               "2026-03-02", "--margin", "-1")  # fmt: skip
    assert code == 2
    assert "--margin" in err


async def test_a_real_server_records_what_the_report_needs(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        await teller.submit(request(request_id="report-0001", preparation_seconds=42))
        offer = await authorizer.next(timeout=5)
        await authorizer.decide(offer.request.request_id, offer.lease.fencing_token, "reject",
                                reason_code="AMOUNT_MISMATCH")  # fmt: skip
    await server.runtime.center.flush_audit()
    history = await load_history(server.runtime.audit)
    info = history.requests["report-0001"]
    assert (info.branch, info.teller, info.preparation_s) == ("branch-1", "teller-1", 42)
    today = datetime.fromtimestamp(info.submitted_ms / 1000, UTC).date().isoformat()
    report = build_report(history, Period.parse(today, today))
    teller_row = row(report, Kind.TELLER, "teller-1")
    assert teller_row.branch == "branch-1"
    assert (teller_row.figures.volume, teller_row.figures.rejected) == (1, 1)
    assert teller_row.figures.preparation_avg_s == 42
    authorizer_row = row(report, Kind.AUTHORIZER, "authorizer-1").figures
    assert authorizer_row.reasons == (("AMOUNT_MISMATCH", 1),)
    assert authorizer_row.handling_avg_s is not None
    assert authorizer_row.handling_avg_s >= 0
    assert len(history.waits) == 1


async def test_the_teller_command_line_reports_its_preparation_time(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    images = tmp_path / "imgs"
    assert (await run_cli("teller_client.cli", "demo-images", str(images), env=env))[0] == 0
    code, _, err = await run_cli(
        "teller_client.cli", "submit", "--type", "CASH_WITHDRAWAL", "--amount", "120.00",
        "--account", "6222020200001234", "--customer", "Zhang San",
        "--image", f"ID_FRONT={images / 'id_front.jpg'}",
        "--image", f"ID_BACK={images / 'id_back.jpg'}",
        "--image", f"VOUCHER={images / 'voucher.jpg'}",
        "--request-id", "prepared-0001", "--prepared-seconds", "37", env=env,
    )  # fmt: skip
    assert code == 0, err
    await server.runtime.center.flush_audit()
    info = (await load_history(server.runtime.audit)).requests["prepared-0001"]
    assert info.preparation_s == 37
