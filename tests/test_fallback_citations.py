"""ReportFallbacks checks what a fallback record cites (R8): an EMERGENCY fallback names
an emergency declared for the teller's branch (or center-wide) and in force when the
fallback happened, give or take a branch's clock; an on-site authorization comes after
the fallback. A record that fails refuses the whole call, naming its field, and nothing
of the call is stored."""

from __future__ import annotations

import time

import grpc
import pytest
from authq.refusals import refusal_of
from authq.v1 import teller_pb2 as tpb

from server.accounts.model import Role
from server.center import EMERGENCY_CLOCK_SKEW_MS
from tests.conftest import RunningServer
from tests.helpers import fallback_record

HOUR_MS = 3_600_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def emergency_record(emergency_id: str, **overrides: object) -> tpb.FallbackRecord:
    record = fallback_record(cause=tpb.FALLBACK_CAUSE_EMERGENCY, emergency_id=emergency_id,
                             status_code="", status_message="", **overrides)  # fmt: skip
    return record


async def refused(server: RunningServer, *records: tpb.FallbackRecord) -> grpc.aio.AioRpcError:
    async with server.teller() as teller:
        with pytest.raises(grpc.aio.AioRpcError) as refusal:
            await teller.report_fallbacks(records)
    return refusal.value


def assert_names(exc: grpc.aio.AioRpcError, field: str, problem: str) -> None:
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.details() == f"{field}: {problem}"
    refusal = refusal_of(exc)
    assert refusal is not None
    assert refusal.reason == "INVALID_FIELD"
    assert refusal.metadata["field"] == field
    assert [v.field for v in refusal.violations] == [field]


async def stored_ids(server: RunningServer) -> list[str]:
    async with server.supervisor() as supervisor:
        return sorted(r.request_id for r in await supervisor.fallbacks())


async def declare(server: RunningServer, *branches: str) -> str:
    """Declares an emergency for ``branches`` (none: center-wide), once teller-1 of
    branch-1 and teller-2 of branch-2 exist."""
    await server.account("teller-1", [Role.TELLER], "branch-1")
    await server.account("teller-2", [Role.TELLER], "branch-2")
    async with server.supervisor() as supervisor:
        emergency = await supervisor.declare_emergency("network down", list(branches))
    return emergency.emergency_id


async def backdate(
    server: RunningServer, emergency_id: str, declared_at_ms: int, ended_at_ms: int = 0
) -> None:
    """Moves an emergency's period into the past, as the center's clock had it then."""
    emergencies = server.runtime.center.emergencies
    key = emergencies.keys.emergency(emergency_id)
    await emergencies.client.hset(key, "at", declared_at_ms)
    if ended_at_ms:
        await emergencies.client.hset(key, "ended_at", ended_at_ms)


async def test_an_emergency_never_declared_refuses_the_whole_batch(server: RunningServer) -> None:
    good = fallback_record(request_id="fb-good-0001")
    made_up = emergency_record("E42", request_id="fb-made-up-0001")
    exc = await refused(server, good, made_up)
    assert_names(exc, "records[1].emergency_id", "no emergency E42 was declared")
    assert await stored_ids(server) == []
    await server.runtime.center.flush_audit()
    refusals = [(r.entry.action, r.entry.target, r.entry.outcome)
                async for r in server.runtime.audit.read()
                if r.entry.action.startswith("LOCAL_FALLBACK")]  # fmt: skip
    assert refusals == [
        ("LOCAL_FALLBACK", "fb-made-up-0001",
         "records[1].emergency_id: no emergency E42 was declared"),
    ]  # fmt: skip


async def test_another_branchs_emergency_cannot_be_cited(server: RunningServer) -> None:
    emergency_id = await declare(server, "branch-2")
    exc = await refused(server, emergency_record(emergency_id))
    assert_names(
        exc,
        "records[0].emergency_id",
        f"emergency {emergency_id} does not cover branch branch-1: its submissions still "
        "went to the center",
    )
    assert await stored_ids(server) == []


@pytest.mark.parametrize("branches", [(), ("branch-2", "branch-1")])
async def test_an_emergency_covering_the_branch_is_cited(
    server: RunningServer, branches: tuple[str, ...]
) -> None:
    emergency_id = await declare(server, *branches)
    async with server.teller() as teller:
        [result] = (await teller.report_fallbacks([emergency_record(emergency_id)])).results
    assert result.status == tpb.FALLBACK_REPORT_STATUS_STORED
    async with server.supervisor() as supervisor:
        [stored] = await supervisor.fallbacks()
    assert (stored.cause, stored.emergency_id) == (tpb.FALLBACK_CAUSE_EMERGENCY, emergency_id)


async def test_an_emergency_declared_after_the_fallback_cannot_be_cited(
    server: RunningServer,
) -> None:
    emergency_id = await declare(server, "branch-1")
    late = emergency_record(emergency_id, occurred_at_ms=now_ms() - 2 * EMERGENCY_CLOCK_SKEW_MS)
    exc = await refused(server, late)
    assert_names(
        exc,
        "records[0].emergency_id",
        f"emergency {emergency_id} was declared after the fallback",
    )
    assert await stored_ids(server) == []


async def test_an_ended_emergency_is_cited_for_what_happened_during_it(
    server: RunningServer,
) -> None:
    emergency_id = await declare(server, "branch-1")
    async with server.supervisor() as supervisor:
        await supervisor.end_emergency(emergency_id, "network back")
    ended = now_ms() - HOUR_MS
    await backdate(server, emergency_id, ended - HOUR_MS, ended)
    during = emergency_record(emergency_id, request_id="fb-during-0001",
                              occurred_at_ms=ended - HOUR_MS // 2)  # fmt: skip
    # A branch clock a little ahead of the center's: still during the emergency.
    skewed = emergency_record(emergency_id, request_id="fb-skewed-0001",
                              occurred_at_ms=ended + EMERGENCY_CLOCK_SKEW_MS // 2)  # fmt: skip
    async with server.teller() as teller:
        results = (await teller.report_fallbacks([during, skewed])).results
    assert [r.status for r in results] == [tpb.FALLBACK_REPORT_STATUS_STORED] * 2
    assert await stored_ids(server) == ["fb-during-0001", "fb-skewed-0001"]


async def test_an_emergency_ended_before_the_fallback_cannot_be_cited(
    server: RunningServer,
) -> None:
    emergency_id = await declare(server, "branch-1")
    async with server.supervisor() as supervisor:
        await supervisor.end_emergency(emergency_id, "network back")
    ended = now_ms() - HOUR_MS
    await backdate(server, emergency_id, ended - HOUR_MS, ended)
    after = emergency_record(emergency_id, occurred_at_ms=ended + 2 * EMERGENCY_CLOCK_SKEW_MS)
    exc = await refused(server, after)
    assert_names(
        exc, "records[0].emergency_id", f"emergency {emergency_id} had ended before the fallback"
    )
    assert await stored_ids(server) == []


async def test_an_onsite_time_before_the_occurrence_is_refused(server: RunningServer) -> None:
    occurred = now_ms() - HOUR_MS
    record = fallback_record(occurred_at_ms=occurred, onsite_outcome=tpb.ONSITE_OUTCOME_APPROVED,
                             onsite_authorizer="senior-7", onsite_at_ms=occurred - 1)  # fmt: skip
    exc = await refused(server, record)
    assert_names(
        exc,
        "records[0].onsite_at_ms",
        "is before occurred_at_ms: it was authorized on site after the fallback",
    )
    assert await stored_ids(server) == []
    record.onsite_at_ms = occurred  # authorized on site at once
    async with server.teller() as teller:
        [result] = (await teller.report_fallbacks([record])).results
    assert result.status == tpb.FALLBACK_REPORT_STATUS_STORED
