"""A transaction is authorized once (R8): when a branch reports that it authorized a
transaction on site, the center's request of the same id (a submit whose answer the
workstation never saw) is withdrawn in the same step, wherever it stood; one already
decided centrally is left as it is and reported as decided twice; and the center
takes no submit under an id already reported as a local fallback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from authq.channel import SessionCallError
from authq.v1 import authorizer_pb2 as apb
from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb
from google.protobuf.json_format import MessageToDict

from authorizer_console import fallback_view
from authorizer_console.client import AuthorizerSessionClient
from server.accounts.model import Role
from teller_client import fallback_cli
from teller_client.client import TellerClient
from teller_client.journal import FallbackEvent, Journal
from tests.conftest import PASSWORD, RunningServer, StartServer
from tests.helpers import fallback_record, request

AT_REVIEW_THRESHOLD = 50_000_000  # 500,000.00 CNY in fen: on-site review first (R2)


def deadline_fallback(submitted: tpb.SubmitRequest) -> tpb.FallbackRecord:
    """The fallback the workstation journals when a submit's answer never came."""
    return fallback_record(
        request_id=submitted.request_id, transaction=submitted.transaction,
        status_code="DEADLINE_EXCEEDED", status_message="Deadline Exceeded",
    )  # fmt: skip


async def report_one(teller: TellerClient, record: tpb.FallbackRecord) -> tpb.FallbackReportResult:
    (result,) = (await teller.report_fallbacks([record])).results
    return result


async def audit_of(server: RunningServer, target: str) -> list[tuple[str, dict[str, Any]]]:
    await server.runtime.center.flush_audit()
    return [
        (r.entry.action, dict(r.entry.details))
        async for r in server.runtime.audit.read()
        if r.entry.target == target
    ]


async def fallback_audit(server: RunningServer, target: str) -> dict[str, Any]:
    """The details of the one LOCAL_FALLBACK record the trail holds for the target."""
    (details,) = [d for action, d in await audit_of(server, target) if action == "LOCAL_FALLBACK"]
    return details


async def test_a_waiting_request_is_withdrawn_and_leaves_the_queue(
    server: RunningServer,
) -> None:
    async with server.teller() as teller:
        submitted = request()
        await teller.submit(submitted)
        before = await server.runtime.store.overview()
        assert before.waiting == 1
        result = await report_one(teller, deadline_fallback(submitted))
        assert result.status == tpb.FALLBACK_REPORT_STATUS_STORED
        assert result.also_submitted
        assert result.central_state == cpb.REQUEST_STATE_SENT_BACK
        view = await teller.get(submitted.request_id)
    assert view.state == cpb.REQUEST_STATE_SENT_BACK
    last = view.history[-1]
    assert (last.event, last.actor) == ("LOCAL_FALLBACK", "teller-1")
    assert "authorized on site" in last.note
    after = await server.runtime.store.overview()
    assert after.waiting == 0
    assert after.counts.get("QUEUED", 0) == 0
    assert after.counts.get("SENT_BACK") == 1
    assert after.waiting_by_branch.get("branch-1", 0) == 0
    assert await server.runtime.store.claim("authorizer-9") is None
    fallback = await fallback_audit(server, submitted.request_id)
    assert fallback["central_state"] == "SENT_BACK"
    assert fallback["withdrew"] == 1


async def test_an_item_in_an_authorizers_hands_is_withdrawn_and_its_decision_refused(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        submitted = request()
        await teller.submit(submitted)
        offer = await authorizer.next(timeout=10)
        assert offer.request.request_id == submitted.request_id
        result = await report_one(teller, deadline_fallback(submitted))
        assert result.central_state == cpb.REQUEST_STATE_SENT_BACK
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await authorizer.decide(submitted.request_id, offer.lease.fencing_token, "approve")
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "SENT_BACK" in (refused.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as no_renewal:
            await authorizer.renew(submitted.request_id, offer.lease.fencing_token)
        assert no_renewal.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (await teller.get(submitted.request_id)).state == cpb.REQUEST_STATE_SENT_BACK
    leases = server.runtime.store.keys.leases
    assert await server.runtime.store.client.zscore(leases, submitted.request_id) is None
    assert (await server.runtime.store.overview()).counts.get("CLAIMED", 0) == 0


async def offered(
    teller: TellerClient, session: AuthorizerSessionClient
) -> tuple[tpb.SubmitRequest, apb.Offer]:
    """A request submitted and offered to the authorizer's session, which holds it."""
    submitted = request()
    await teller.submit(submitted)
    session.credit(1)
    return submitted, await asyncio.wait_for(session.offers.get(), 10)


async def test_the_holders_session_hears_of_the_withdrawal_at_once(
    start_server: StartServer,
) -> None:
    # Renewals every 200 s: only the push can tell the console within the test.
    server = await start_server(lease_ms=600_000)
    async with (
        server.teller() as teller,
        server.authorizer() as authorizer,
        authorizer.session() as session,
    ):
        submitted, offer = await offered(teller, session)
        await report_one(teller, deadline_fallback(submitted))
        lost = await asyncio.wait_for(session.lost.get(), 10)
    assert lost.lease_lost.request_id == submitted.request_id
    assert lost.lease_lost.fencing_token == offer.lease.fencing_token
    assert lost.HasField("cause")
    cause = lost.cause
    assert (cause.event, cause.actor) == ("LOCAL_FALLBACK", "teller-1")
    assert cause.state == cpb.REQUEST_STATE_SENT_BACK
    assert "authorized on site" in cause.note


async def test_the_holders_own_decision_is_not_taken_for_a_loss(server: RunningServer) -> None:
    async with (
        server.teller() as teller,
        server.authorizer() as authorizer,
        authorizer.session() as session,
    ):
        submitted, offer = await offered(teller, session)
        changes = teller.watch(submitted.request_id)
        await session.decide(submitted.request_id, offer.lease.fencing_token, "approve")
        # The teller's watch hears APPROVED from the same fan-out as the session.
        async for change in changes:
            if change.state == cpb.REQUEST_STATE_APPROVED:
                break
        # A later reply on the stream: any lease_lost queued before it came first.
        with pytest.raises(SessionCallError):
            await session.decide("req-unknown-1", 1, "approve")
    assert session.lost.empty()


async def test_a_request_awaiting_on_site_review_is_withdrawn_from_the_reviewers_list(
    server: RunningServer,
) -> None:
    await server.account("reviewer-1", [Role.ONSITE_REVIEWER], "branch-1")
    async with server.teller() as teller:
        submitted = request(amount_minor=AT_REVIEW_THRESHOLD)
        reply = await teller.submit(submitted)
        assert reply.request.state == cpb.REQUEST_STATE_PENDING_ONSITE_REVIEW
        result = await report_one(teller, deadline_fallback(submitted))
        assert result.central_state == cpb.REQUEST_STATE_SENT_BACK
    async with TellerClient(server.target, "reviewer-1", PASSWORD) as reviewer:
        assert await reviewer.pending_review() == []


async def test_a_request_decided_centrally_stays_and_is_reported_decided_twice(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        submitted = request()
        await teller.submit(submitted)
        offer = await authorizer.next(timeout=10)
        await authorizer.decide(submitted.request_id, offer.lease.fencing_token, "approve")
        result = await report_one(teller, deadline_fallback(submitted))
        assert result.status == tpb.FALLBACK_REPORT_STATUS_STORED
        assert result.also_submitted
        assert result.central_state == cpb.REQUEST_STATE_APPROVED
        view = await teller.get(submitted.request_id)
    assert view.state == cpb.REQUEST_STATE_APPROVED
    assert [entry.event for entry in view.history][-1] != "LOCAL_FALLBACK"
    async with server.supervisor() as supervisor:
        (held,) = await supervisor.fallbacks()
    assert held.central_state == cpb.REQUEST_STATE_APPROVED
    assert "DECIDED TWICE" in fallback_view.describe(held)
    said = fallback_cli.central_note(True, "APPROVED")
    assert "authorized twice" in said
    fallback = await fallback_audit(server, submitted.request_id)
    assert fallback["central_state"] == "APPROVED"
    assert fallback["withdrew"] == 0


async def test_the_center_takes_no_submit_under_an_id_authorized_on_site(
    server: RunningServer,
) -> None:
    async with server.teller() as teller:
        late = request()
        result = await report_one(teller, deadline_fallback(late))
        assert result.status == tpb.FALLBACK_REPORT_STATUS_STORED
        assert not result.also_submitted
        assert result.central_state == cpb.REQUEST_STATE_UNSPECIFIED
        # The submit the workstation gave up on arrives after the report.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await teller.submit(late)
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "local fallback" in (refused.value.details() or "")
        assert "R8" in (refused.value.details() or "")
    assert not await server.runtime.store.exists(late.request_id)
    assert (await server.runtime.store.overview()).waiting == 0


async def test_another_branchs_request_is_neither_withdrawn_nor_revealed(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.teller("teller-2", "branch-2") as other:
        theirs = request()
        await other.submit(theirs)
        result = await report_one(teller, deadline_fallback(theirs))
        assert result.status == tpb.FALLBACK_REPORT_STATUS_CONFLICT
        assert "another branch" in result.message
        assert not result.also_submitted
        assert (await other.get(theirs.request_id)).state == cpb.REQUEST_STATE_QUEUED
    async with server.supervisor() as supervisor:
        assert await supervisor.fallbacks() == []


async def test_a_retried_report_withdraws_once(server: RunningServer) -> None:
    async with server.teller() as teller:
        submitted = request()
        await teller.submit(submitted)
        report = deadline_fallback(submitted)
        first = await report_one(teller, report)
        again = await report_one(teller, report)
        assert first.status == tpb.FALLBACK_REPORT_STATUS_STORED
        assert again.status == tpb.FALLBACK_REPORT_STATUS_DUPLICATE
        assert again.central_state == cpb.REQUEST_STATE_SENT_BACK
        view = await teller.get(submitted.request_id)
    assert [entry.event for entry in view.history].count("LOCAL_FALLBACK") == 1
    actions = [action for action, _ in await audit_of(server, submitted.request_id)]
    assert actions.count("LOCAL_FALLBACK") == 1
    assert "LOCAL_FALLBACK_WITHDRAWAL" not in actions


async def test_the_workstation_is_told_and_its_journal_keeps_it(
    server: RunningServer, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    async with server.teller() as teller:
        submitted = request()
        await teller.submit(submitted)  # its answer "lost": the workstation fell back
        journal.record_fallback(
            FallbackEvent(submitted.request_id, "teller-1", "", time.time_ns() // 1_000_000,
                          "CENTER_UNREACHABLE", MessageToDict(submitted.transaction),
                          status_code="DEADLINE_EXCEEDED")
        )  # fmt: skip
        report = await fallback_cli.sync(teller, journal, "teller-1")
    assert report.uploaded == 1
    (warning,) = report.warnings
    assert "withdrawn it (SENT_BACK)" in warning
    (entry,) = journal.entries().values()
    assert entry.central_state == "SENT_BACK"
    assert "authorized on site only" in fallback_cli.describe(entry)
