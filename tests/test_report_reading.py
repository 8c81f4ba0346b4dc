"""A report reads the audit trail from where its period starts, not from seq 1: the
hour index that audit_append.lua keeps, the seq a reading starts at, and the look-back
that finds the SUBMIT of a request decided in the period but submitted long before,
giving the figures a read of the whole trail gives."""

from __future__ import annotations

from datetime import UTC, datetime

import redis.asyncio as aioredis

from server.reports import Kind, Period, build_report, render_csv
from server.reports.sources import load_history
from server.store.audit import AuditEntry, AuditLog
from tests.test_reports import Trail, row

HOUR_MS = 3_600_000


def ms(day: int, hour: int = 0) -> int:
    """A time in March 2026 (UTC)."""
    return int(datetime(2026, 3, day, hour, tzinfo=UTC).timestamp()) * 1000


def entry(n: int) -> AuditEntry:
    return AuditEntry(actor="t1", role="TELLER", origin="test", action="LOGIN", target=f"x{n}")


async def index_of(client: aioredis.Redis, log: AuditLog) -> dict[int, int]:
    return {int(h): int(s) for h, s in (await client.hgetall(log.hours_key)).items()}


async def test_each_chained_batch_notes_the_first_seq_of_its_hour(
    redis_client: aioredis.Redis,
) -> None:
    log = AuditLog(redis_client)
    before_s, _ = await redis_client.time()
    await log.append_many([entry(n) for n in range(3)])
    await log.append_many([entry(n) for n in range(3, 5)])
    after_s, _ = await redis_client.time()
    index = await index_of(redis_client, log)
    first_hour = min(index)
    assert before_s // 3600 <= first_hour <= after_s // 3600
    assert index[first_hour] == 1
    if before_s // 3600 == after_s // 3600:
        # The second batch (seqs 4-5) came in the same hour: the hour keeps seq 1.
        assert index == {first_hour: 1}
    else:  # an hour began between the two
        assert set(index.values()) <= {1, 4}


async def set_index(client: aioredis.Redis, log: AuditLog, index: dict[int, int]) -> None:
    """Stands in for batches chained at other times than now."""
    await client.delete(log.hours_key)
    await client.hset(log.hours_key, mapping={str(h): s for h, s in index.items()})


async def test_the_reading_starts_at_the_first_seq_chained_from_the_hour_before(
    redis_client: aioredis.Redis,
) -> None:
    log = AuditLog(redis_client)
    await log.append_many([entry(n) for n in range(300)])
    h0 = ms(1) // HOUR_MS
    # Nothing noted yet: the trail cannot tell, so from the first record.
    assert await log.first_seq_since(ms(5)) == 1
    # Seqs 1-39 were chained before the index was kept (an older version of authq).
    await set_index(redis_client, log, {h0: 40, h0 + 5: 100, h0 + 30: 250})
    assert await log.first_seq_since(ms(1, 10)) == 250  # hours 9 on: hour 30's
    assert await log.first_seq_since(ms(1, 6)) == 100  # hours 5 on: hour 5's first
    assert await log.first_seq_since(ms(1, 5)) == 100  # hour 4 has nothing: hour 5's
    # Hour 0 is where the index starts: the records chained before its seq 40 are not
    # noted, and may be from any time.
    assert await log.first_seq_since(ms(1, 1)) == 1
    assert await log.first_seq_since(ms(3)) == 301  # nothing chained since
    # Redis's clock stepped back: hour 5 was noted after hour 7, at a later seq.
    await set_index(redis_client, log, {h0: 40, h0 + 5: 150, h0 + 7: 100})
    assert await log.first_seq_since(ms(1, 6)) == 100


async def stored_months(client: aioredis.Redis) -> tuple[AuditLog, list[int]]:
    """Three batches, as if chained on 1, 10 and 19 March: the first seq of each."""
    on_the_1st, on_the_10th, on_the_19th = Trail(), Trail(), Trail()
    for trail, day in ((on_the_1st, 1), (on_the_10th, 10), (on_the_19th, 19)):
        # A teller's login first, so that each batch's first record has its day.
        login = AuditEntry(actor="t1", role="TELLER", origin="test", action="LOGIN",
                           target="t1", at_ms=ms(day))  # fmt: skip
        trail.entries.append(login)
    base = (ms(19) - ms(2)) / 1000  # Trail's times are seconds after 2 March 00:05:
    on_the_1st.add("admin", "ADMIN", "BRANCH_CREATE", "b9", -86_000, region="south")
    on_the_1st.submit("OLD", "t1", "b1", -80_000, 30)
    on_the_1st.claim("OLD", "a1", -79_000, 1)
    on_the_1st.decide("OLD", "a1", -78_000, 1, "APPROVE")
    on_the_1st.submit("Z", "t1", "b1", -77_000, 30)
    # Submitted on the 10th, sent for better images, decided on the 19th.
    on_the_10th.submit("X", "t1", "b1", base - 9 * 86_400, 40)
    on_the_10th.claim("X", "a1", base - 9 * 86_400 + 60, 2)
    on_the_10th.decide("X", "a1", base - 9 * 86_400 + 90, 2, "ASK_SUPPLEMENT")
    # Done just before the period and chained in it (by a server that was restarting):
    # outside the period, so its SUBMIT on the 1st is not needed.
    on_the_19th.claim("Z", "a1", base - 900, 5)
    on_the_19th.decide("Z", "a1", base - 600, 5, "APPROVE")
    on_the_19th.add("t1", "TELLER", "SUPPLY", "X", base + 3600)
    on_the_19th.claim("X", "a2", base + 3700, 3)
    on_the_19th.decide("X", "a2", base + 3800, 3, "REJECT", "ID_MISMATCH")
    on_the_19th.submit("Y", "t9", "b9", base + 4000, 20)
    on_the_19th.claim("Y", "a2", base + 4010, 4)
    on_the_19th.decide("Y", "a2", base + 4100, 4, "APPROVE")
    log = AuditLog(client)
    firsts = []
    for trail in (on_the_1st, on_the_10th, on_the_19th):
        records = await log.append_many(trail.entries)
        firsts.append(records[0].seq)
    await set_index(client, log, {
        ms(1) // HOUR_MS: firsts[0], ms(10) // HOUR_MS: firsts[1], ms(19) // HOUR_MS: firsts[2]
    })  # fmt: skip
    return log, firsts


PERIOD = Period.parse("2026-03-19", "2026-03-20")


async def test_a_request_submitted_before_the_period_is_read_back_to_its_submit(
    redis_client: aioredis.Redis,
) -> None:
    log, firsts = await stored_months(redis_client)
    known = {"b1", "b9"}
    history = await load_history(log, PERIOD, known_branches=known)
    # X's SUBMIT (the 10th) is nine days before the period: looked back to it, and no
    # further (the 1st's records are not read).
    assert history.from_seq == firsts[1]
    assert "OLD" not in history.requests
    whole = await load_history(log)
    assert whole.from_seq == 1
    regions = {"b1": "north", "b9": "south"}
    report = build_report(history, PERIOD, branch_regions=regions)
    assert render_csv(report) == render_csv(build_report(whole, PERIOD, branch_regions=regions))
    b1 = row(report, Kind.BRANCH, "b1").figures
    assert (b1.rejected, b1.volume) == (1, 0)  # X, decided in the period, submitted before


async def test_a_period_with_nothing_from_before_reads_from_its_own_start(
    redis_client: aioredis.Redis,
) -> None:
    log, firsts = await stored_months(redis_client)
    tenth = Period.parse("2026-03-10", "2026-03-10")
    history = await load_history(log, tenth, known_branches={"b1", "b9"})
    assert history.from_seq == firsts[1]
    assert set(history.requests) == {"X", "Y"}  # Y: read on to the trail's end
    later = await load_history(log, Period.parse("2026-03-25", "2026-03-31"))
    assert later.from_seq == (await log.head())[0] + 1
    assert not later.requests
    assert not later.decisions


async def test_a_branch_whose_region_only_the_trail_holds_is_read_back_to_it(
    redis_client: aioredis.Redis,
) -> None:
    log, _ = await stored_months(redis_client)
    # b9 is not among the stored branches: its region is in the BRANCH_CREATE of the 1st.
    history = await load_history(log, PERIOD, known_branches={"b1"})
    assert history.from_seq == 1
    report = build_report(history, PERIOD, region="south", branch_regions={"b1": "north"})
    assert row(report, Kind.BRANCH, "b9").figures.volume == 1
