"""What a teller session follows, and what the fallback journal keeps for reconciling.

A session's watch of a request it already follows (submitted or watched on it before)
is answered with the request as it stands, and a refused re-submit of a followed id
leaves the follow in place, so the first submission's decision is still pushed. A
fallback the center had decided too (authorized twice) waits in the journal for the
branch to reconcile it: listed with the command, reconcilable, kept by compaction."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from authq.channel import SessionCallError
from authq.refusals import Refusal
from authq.v1 import common_pb2 as cpb
from google.protobuf.json_format import MessageToDict

from teller_client import fallback_cli
from teller_client.client import TellerSessionClient
from teller_client.journal import (
    DAY_MS,
    FallbackEvent,
    Journal,
    JournalError,
    OnsiteDecision,
    Reconciliation,
    now_ms,
)
from tests.conftest import RunningServer
from tests.helpers import request, until


def states_pushed(session: TellerSessionClient) -> list[int]:
    """The states of the updates the session received so far (drained)."""
    states: list[int] = []
    while not session.updates.empty():
        states.append(session.updates.get_nowait().state)
    return states


async def wait_for_state(session: TellerSessionClient, state: int) -> None:
    """Returns once the session received an update in ``state``."""
    heard: list[int] = []

    def arrived() -> bool:
        heard.extend(states_pushed(session))
        return state in heard

    await until(arrived)


# -- a watch of a request the session follows ---------------------------------------


async def test_a_watch_of_a_request_submitted_on_the_session_is_answered(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, teller.session() as session:
        reply = await session.submit(request())
        rid = reply.request.request_id
        update = await asyncio.wait_for(session.watch(rid), 10)
    assert (update.request_id, update.state) == (rid, cpb.REQUEST_STATE_QUEUED)
    assert update.version == reply.request.version


async def test_a_watch_after_a_pushed_change_answers_the_latest_and_keeps_following(
    server: RunningServer,
) -> None:
    async with (
        server.teller() as teller,
        server.authorizer() as authorizer,
        teller.session() as session,
    ):
        rid = (await session.submit(request())).request.request_id
        offer = await authorizer.next(timeout=10)
        await wait_for_state(session, cpb.REQUEST_STATE_CLAIMED)  # pushed already
        update = await asyncio.wait_for(session.watch(rid), 10)
        assert (update.request_id, update.state) == (rid, cpb.REQUEST_STATE_CLAIMED)
        await authorizer.decide(rid, offer.lease.fencing_token, "approve")
        await wait_for_state(session, cpb.REQUEST_STATE_APPROVED)


async def test_a_request_watched_twice_on_the_session_is_answered_twice(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, teller.session() as session:
        rid = (await teller.submit(request())).request.request_id  # a unary submit
        first = await asyncio.wait_for(session.watch(rid), 10)
        again = await asyncio.wait_for(session.watch(rid), 10)
    assert first.state == again.state == cpb.REQUEST_STATE_QUEUED
    assert first.version == again.version


# -- a refused re-submit keeps the follow ---------------------------------------------


@pytest.mark.parametrize("followed_by", ["submit", "watch"])
async def test_a_refused_resubmit_keeps_the_earlier_follow_and_its_decision_is_pushed(
    server: RunningServer, followed_by: str
) -> None:
    async with (
        server.teller() as teller,
        server.authorizer() as authorizer,
        teller.session() as session,
    ):
        first = request()
        if followed_by == "submit":
            await session.submit(first)
        else:  # submitted elsewhere, watched here
            await teller.submit(first)
            await session.watch(first.request_id)
        corrected = request(request_id=first.request_id, amount_minor=1_300_000)
        with pytest.raises(SessionCallError) as refused:
            await session.submit(corrected)
        assert refused.value.code == grpc.StatusCode.ALREADY_EXISTS
        assert refused.value.refusal == Refusal(
            "ALREADY_EXISTS",
            {"request_id": first.request_id, "exists": "request", "state": "QUEUED"},
        )
        offer = await authorizer.next(timeout=10)
        assert offer.request.request_id == first.request_id
        await authorizer.decide(first.request_id, offer.lease.fencing_token, "approve")
        await wait_for_state(session, cpb.REQUEST_STATE_APPROVED)


# -- a fallback decided twice waits for the reconciling -------------------------------


@pytest.mark.parametrize("central", ["approve", "reject"])
async def test_a_fallback_the_center_decided_too_is_kept_until_reconciled(
    server: RunningServer, tmp_path: Path, central: str
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    async with server.teller() as teller, server.authorizer() as authorizer:
        submitted = request()
        rid = submitted.request_id
        await teller.submit(submitted)  # its answer "lost": the workstation fell back
        journal.record_fallback(
            FallbackEvent(rid, "teller-1", "", time.time_ns() // 1_000_000,
                          "CENTER_UNREACHABLE", MessageToDict(submitted.transaction),
                          status_code="DEADLINE_EXCEEDED")
        )  # fmt: skip
        offer = await authorizer.next(timeout=10)
        reason = {"reason_code": "ID_MISMATCH"} if central == "reject" else {}
        await authorizer.decide(rid, offer.lease.fencing_token, central, **reason)
        journal.record_onsite(rid, OnsiteDecision("senior-7", "APPROVED", "", now_ms()))
        report = await fallback_cli.sync(teller, journal, "teller-1")
    decided = "APPROVED" if central == "approve" else "REJECTED"
    assert report.warnings == [
        f"{rid}: {fallback_cli.central_note(True, decided)} (see `authq-teller show {rid}`)"
    ]
    entry = journal.entries()[rid]
    assert (entry.server_status, entry.central_state) == ("STORED", decided)
    assert entry.needs_reconciling
    assert not entry.settled
    assert f"authq-teller fallback reconcile {rid} --by ID --note TEXT" in fallback_cli.describe(
        entry
    )
    assert journal.compact(now_ms() + DAY_MS) == 0
    assert list(journal.entries()) == [rid]
    reconciled = journal.record_reconciled(
        rid, Reconciliation("branch-head-1", "cash recovered", now_ms())
    )
    assert (reconciled.settled, reconciled.state) == (True, "RECONCILED")
    assert journal.compact(now_ms() + DAY_MS) == 1
    assert journal.entries() == {}


@pytest.mark.parametrize("central_state", ["", "SENT_BACK", "CANCELLED"])
def test_a_fallback_the_center_holds_as_sent_is_settled_and_not_reconciled(
    tmp_path: Path, central_state: str
) -> None:
    """The control: the center did not decide it too (not received, or withdrawn or
    cancelled there), so nothing is left to reconcile and compaction lets it go."""
    journal = Journal(tmp_path / "journal.jsonl")
    journal.record_fallback(
        FallbackEvent("fb-held", "teller-1", "branch-1", 1, "CENTER_UNREACHABLE", {},
                      status_code="UNAVAILABLE")
    )  # fmt: skip
    journal.record_onsite("fb-held", OnsiteDecision("senior-7", "APPROVED", "", 2))
    journal.mark_uploaded(
        journal.entries()["fb-held"], "STORED", "", bool(central_state), central_state
    )
    entry = journal.entries()["fb-held"]
    assert not entry.needs_reconciling
    assert entry.settled
    assert "fallback reconcile" not in fallback_cli.describe(entry)
    with pytest.raises(JournalError, match="fb-held has nothing to reconcile"):
        journal.record_reconciled("fb-held", Reconciliation("branch-head-1", "x", 3))
    assert journal.compact(now_ms() + DAY_MS) == 1
