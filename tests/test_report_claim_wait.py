"""The queue wait in the quality reports: a claim made in the period of a request that
entered the queue before it (submitted, confirmed on site or supplied earlier) keeps its
wait when the report reads the trail from the period's start, as a read of the whole
trail gives it; and a claim whose offer never reached its authorizer (put back by the
dispatcher, or sent back by the image check) is no wait, nor row, of theirs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from server.api import authorizer as authorizer_api
from server.api import authorizer_session
from server.reports import Kind, Period, build_report, render_csv
from server.reports.sources import load_history
from server.store.audit import AuditEntry, AuditLog
from server.store.queue_store import Claim
from tests.conftest import RunningServer
from tests.helpers import request

HOUR_MS = 3_600_000
DAY_S = 86_400
HOUR_S = 3_600


def _ms(day: int, hour: int = 0, second: int = 0) -> int:
    """A time in March 2026 (UTC), ``second`` seconds after the hour."""
    return int(datetime(2026, 3, day, hour, tzinfo=UTC).timestamp() + second) * 1000


def _entry(actor: str, role: str, action: str, target: str, at_ms: int,
           **details: str | int) -> AuditEntry:  # fmt: skip
    return AuditEntry(actor=actor, role=role, origin="test", action=action, target=target,
                      details=details, at_ms=at_ms)  # fmt: skip


def _login(day: int) -> AuditEntry:
    """A batch's first record, so that the hour index notes its day."""
    return _entry("t1", "TELLER", "LOGIN", "t1", _ms(day))


def _submit(rid: str, at_ms: int) -> AuditEntry:
    return _entry("t1", "TELLER", "SUBMIT", rid, at_ms, business_type="CASH_WITHDRAWAL",
                  amount_minor=100, branch="b1", preparation_s=30)  # fmt: skip


def _claim(rid: str, who: str, at_ms: int, token: int) -> AuditEntry:
    return _entry(who, "AUTHORIZER", "CLAIM", rid, at_ms, token=token)


def _decide(rid: str, who: str, at_ms: int, token: int, outcome: str = "APPROVE") -> AuditEntry:
    return _entry(who, "AUTHORIZER", "DECIDE", rid, at_ms, token=token, outcome=outcome,
                  reason_code="")  # fmt: skip


async def _chain(client: aioredis.Redis, batches: dict[int, list[AuditEntry]]) -> list[int]:
    """Chains each day's batch and notes it in the hour index under that day (as if
    chained then): the first seq of each batch."""
    log = AuditLog(client)
    firsts = [(await log.append_many(batch))[0].seq for batch in batches.values()]
    await client.delete(log.hours_key)
    await client.hset(log.hours_key, mapping={
        str(_ms(day) // HOUR_MS): first for day, first in zip(batches, firsts, strict=True)
    })  # fmt: skip
    return firsts


PERIOD = Period.parse("2026-03-19", "2026-03-20")
REGIONS = {"b1": "north"}


async def test_claims_in_the_period_keep_the_waits_that_began_before_it(
    redis_client: aioredis.Redis,
) -> None:
    """W submitted on the 5th, R confirmed on site on the 13th, S supplied on the 15th:
    all three claimed on the 19th, so each waited from before the period. R's and S's
    decisions in the period take the read back to their SUBMITs on the 12th; only W's
    claim takes it back to the 5th. V is all in the period. OLD, on the 1st, is not
    needed."""
    batches = {
        1: [_login(1), _submit("OLD", _ms(1, 1)), _claim("OLD", "a1", _ms(1, 2), 1),
            _decide("OLD", "a1", _ms(1, 3), 1)],
        5: [_login(5), _submit("W", _ms(5, 1))],
        12: [_login(12), _submit("R", _ms(12, 2)),
             _submit("S", _ms(12, 3)), _claim("S", "a1", _ms(12, 4), 2),
             _decide("S", "a1", _ms(12, 5), 2, "ASK_SUPPLEMENT")],
        13: [_login(13), _entry("r1", "ONSITE_REVIEWER", "ONSITE_REVIEW", "R", _ms(13, 0, 1),
                                outcome="CONFIRM")],
        15: [_login(15), _entry("t1", "TELLER", "SUPPLY", "S", _ms(15, 0, 1))],
        19: [_login(19), _claim("W", "a1", _ms(19, 2), 3), _claim("R", "a1", _ms(19, 3), 4),
             _decide("R", "a1", _ms(19, 3, 30), 4), _claim("S", "a2", _ms(19, 4), 5),
             _decide("S", "a2", _ms(19, 5), 5), _submit("V", _ms(19, 6)),
             _claim("V", "a2", _ms(19, 7), 6), _decide("V", "a2", _ms(19, 8), 6)],
        21: [_login(21), _decide("W", "a1", _ms(21, 1), 3)],
    }  # fmt: skip
    firsts = await _chain(redis_client, batches)
    log = AuditLog(redis_client)
    read = await load_history(log, PERIOD, known_branches=REGIONS.keys())
    # Looked back to the 5th (W's SUBMIT), and no further: OLD is not read.
    assert read.from_seq == firsts[1]
    assert "OLD" not in read.requests
    by_period = build_report(read, PERIOD, branch_regions=REGIONS)
    by_whole = build_report(await load_history(log), PERIOD, branch_regions=REGIONS)
    # By hand, in seconds: W waited from its SUBMIT (5th 01:00) to the 19th 02:00;
    # R from its confirmation (13th 00:00:01) to the 19th 03:00; S from its SUPPLY
    # (15th 00:00:01) to the 19th 04:00; V one hour.
    w = 14 * DAY_S + HOUR_S
    r = 6 * DAY_S + 3 * HOUR_S - 1
    s = 4 * DAY_S + 4 * HOUR_S - 1
    v = HOUR_S
    assert by_period.region_figures.wait_avg_s == (w + r + s + v) / 4
    assert render_csv(by_period) == render_csv(by_whole)
    authorizers = {row.key: row.figures for row in by_period.rows[Kind.AUTHORIZER]}
    assert set(authorizers) == {"a1", "a2"}
    assert authorizers["a1"].wait_avg_s == (w + r) / 2
    assert authorizers["a2"].wait_avg_s == (s + v) / 2
    assert [row.figures.wait_avg_s for row in by_period.rows[Kind.REVIEWER]] == [r]
    assert by_period.rows == by_whole.rows


async def test_a_claim_just_before_the_period_does_not_make_the_read_look_back(
    redis_client: aioredis.Redis,
) -> None:
    """Z, submitted on the 10th, was claimed on the 18th at 23:30 and chained in the
    19th's batch: its wait is not the period's, so the read stays at the 19th."""
    batches = {
        10: [_login(10), _submit("Z", _ms(10, 1))],
        19: [_login(19), _claim("Z", "a1", _ms(18, 23) + 30 * 60_000, 1),
             _decide("Z", "a1", _ms(18, 23) + 40 * 60_000, 1), _submit("V", _ms(19, 6)),
             _claim("V", "a1", _ms(19, 7), 2), _decide("V", "a1", _ms(19, 8), 2)],
    }  # fmt: skip
    firsts = await _chain(redis_client, batches)
    log = AuditLog(redis_client)
    read = await load_history(log, PERIOD, known_branches=REGIONS.keys())
    assert read.from_seq == firsts[1]
    report = build_report(read, PERIOD, branch_regions=REGIONS)
    assert report.region_figures.wait_avg_s == HOUR_S
    assert render_csv(report) == render_csv(
        build_report(await load_history(log), PERIOD, branch_regions=REGIONS)
    )


async def test_an_offer_that_never_reached_its_authorizer_is_no_wait_of_theirs(
    redis_client: aioredis.Redis,
) -> None:
    """a3 was claimed for twice and got neither offer: P was put back by the
    dispatcher, Q sent back to its teller by the image check. a3 has no row; the
    requests' rows keep the time they waited."""
    day = [
        _login(19),
        _submit("P", _ms(19, 1)),
        _claim("P", "a3", _ms(19, 1, 10), 1),
        _entry(
            "system",
            "-",
            "PUT_BACK",
            "P",
            _ms(19, 1, 11),
            holder="a3",
            token=1,
            note="authorizer left before the offer arrived",
        ),
        _claim("P", "a1", _ms(19, 1, 25), 2),
        _decide("P", "a1", _ms(19, 1, 40), 2),
        _submit("Q", _ms(19, 2)),
        _claim("Q", "a3", _ms(19, 2, 30), 3),
        _entry(
            "system",
            "SYSTEM",
            "IMAGE_CHECK_SEND_BACK",
            "Q",
            _ms(19, 2, 30),
            kinds="ID_FRONT",
            note="image check failed",
        ),
        _entry("t1", "TELLER", "SUPPLY", "Q", _ms(19, 2, 200)),
        _claim("Q", "a2", _ms(19, 2, 260), 4),
        _decide("Q", "a2", _ms(19, 2, 300), 4),
    ]
    await _chain(redis_client, {19: day})
    history = await load_history(AuditLog(redis_client), PERIOD, known_branches=REGIONS.keys())
    assert [(w.request_id, w.authorizer, w.reached) for w in history.waits] == [
        ("P", "a3", False),
        ("P", "a1", True),
        ("Q", "a3", False),
        ("Q", "a2", True),
    ]
    report = build_report(history, PERIOD, branch_regions=REGIONS)
    authorizers = {row.key: row for row in report.rows[Kind.AUTHORIZER]}
    assert set(authorizers) == {"a1", "a2"}  # no volume-0 row for a3
    assert authorizers["a1"].figures.wait_avg_s == 14  # from the put-back (11 s) to 25 s
    assert authorizers["a2"].figures.wait_avg_s == 60  # from the SUPPLY (200 s) to 260 s
    assert authorizers["a1"].vs_region.volume == 1
    assert authorizers["a1"].figures.handling_avg_s == 15
    assert report.region_figures.lapsed == 0
    # The branch's: P 10 + 14, Q 30 + 60.
    assert report.region_figures.wait_avg_s == (10 + 14 + 30 + 60) / 4
    assert report.region_figures.handling_avg_s == (15 + 40) / 2


async def test_a_real_put_back_gives_the_authorizer_who_never_got_it_no_row(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with server.teller() as teller, server.authorizer("auth-u") as unlucky:
        rid = (await teller.submit(request())).request.request_id

        def failing(claim: Claim) -> Any:
            raise ValueError("cannot be shown (injected)")

        monkeypatch.setattr(authorizer_api, "offer_to_pb", failing)
        with pytest.raises(Exception, match="cannot be shown"):
            await unlucky.next(timeout=30)
        monkeypatch.setattr(authorizer_api, "offer_to_pb", authorizer_session.offer_to_pb)
    async with server.authorizer("auth-v") as other:
        offer = await other.next(timeout=10)
        assert offer.request.request_id == rid
        await other.decide(rid, offer.lease.fencing_token, "approve")
    await server.runtime.center.flush_audit()
    history = await load_history(server.runtime.audit)
    assert [(w.authorizer, w.reached) for w in history.waits] == [
        ("auth-u", False),
        ("auth-v", True),
    ]
    today = datetime.fromtimestamp(history.requests[rid].submitted_ms / 1000, UTC).date()
    report = build_report(history, Period(today, today))
    assert [row.key for row in report.rows[Kind.AUTHORIZER]] == ["auth-v"]
    assert report.rows[Kind.AUTHORIZER][0].figures.volume == 1
