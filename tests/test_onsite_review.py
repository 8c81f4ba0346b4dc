"""Authorization modes (R2, R3) and the on-site review step, allowed and refused."""

from __future__ import annotations

import grpc
import pytest
from authq import catalog
from authq.v1 import common_pb2 as cpb

from server.accounts.model import Role
from teller_client.client import TellerClient
from tests.conftest import PASSWORD, RunningServer
from tests.helpers import images, request

AT_THRESHOLD = 50_000_000  # 500,000.00 CNY in fen


async def _reviewer(
    server: RunningServer, user: str = "reviewer-1", branch: str = "branch-1"
) -> TellerClient:
    await server.account(user, [Role.ONSITE_REVIEWER], branch)
    return TellerClient(server.target, user, PASSWORD)


@pytest.mark.parametrize(
    ("business", "amount", "currency", "pending"),
    [
        ("CASH_WITHDRAWAL", AT_THRESHOLD, "CNY", True),
        ("CASH_WITHDRAWAL", AT_THRESHOLD - 1, "CNY", False),
        ("FX_TRANSFER", 2_000_000, "USD", True),
        ("FX_TRANSFER", 1_999_999, "USD", False),
        ("ACCOUNT_ADJUSTMENT", 100, "CNY", True),  # high-risk, whatever the amount
    ],
)
async def test_the_mode_follows_type_and_amount(
    server: RunningServer, business: str, amount: int, currency: str, pending: bool
) -> None:
    async with server.teller() as teller:
        reply = await teller.submit(request(business, amount, currency))
    expected = cpb.REQUEST_STATE_PENDING_ONSITE_REVIEW if pending else cpb.REQUEST_STATE_QUEUED
    assert reply.request.state == expected
    assert (await server.runtime.store.overview()).waiting == (0 if pending else 1)


async def test_a_reviewer_confirms_and_the_request_joins_the_queue(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request(amount_minor=AT_THRESHOLD))).request.request_id
        assert await server.runtime.store.claim("someone-else") is None  # not in the queue
        async with await _reviewer(server) as reviewer:
            pending = await reviewer.pending_review()
            assert [view.request_id for view in pending] == [rid]
            update = await reviewer.review(
                rid, confirm=True, checks=["CASH_RECOUNTED", "IDENTITY_CHECKED"]
            )
        assert update.state == cpb.REQUEST_STATE_QUEUED
        assert update.event == "ONSITE_CONFIRMED"
        offer = await authorizer.next(timeout=5)
        assert offer.request.request_id == rid
        confirmed = offer.request.history[-2]
        assert confirmed.actor == "reviewer-1"
        assert "CASH_RECOUNTED" in confirmed.note


async def test_checks_listed_again_and_again_are_recorded_once(server: RunningServer) -> None:
    async with server.teller() as teller, await _reviewer(server) as reviewer:
        rid = (await teller.submit(request(amount_minor=AT_THRESHOLD))).request.request_id
        update = await reviewer.review(
            rid, confirm=True, checks=["CASH_RECOUNTED", "IDENTITY_CHECKED"] * 2_000
        )
        assert update.state == cpb.REQUEST_STATE_QUEUED
    await server.runtime.center.flush_audit()
    (reviewed,) = [
        r.entry async for r in server.runtime.audit.read() if r.entry.action == "ONSITE_REVIEW"
    ]
    assert reviewed.details["checks"] == "CASH_RECOUNTED,IDENTITY_CHECKED"


async def test_the_center_takes_the_checks_the_clients_offer_and_no_other(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, await _reviewer(server) as reviewer:
        rid = (await teller.submit(request(amount_minor=AT_THRESHOLD))).request.request_id
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await reviewer.review(rid, confirm=True, checks=["CASH_RECOUNTED", "EYEBALLED"])
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        said = failure.value.details() or ""
        assert "unknown EYEBALLED: one of " + ", ".join(catalog.REVIEW_CHECKS) in said
        reviewed = await reviewer.review(rid, confirm=True, checks=list(catalog.REVIEW_CHECKS))
        assert reviewed.state == cpb.REQUEST_STATE_QUEUED


async def test_a_reviewer_sends_back_and_the_teller_sees_it(server: RunningServer) -> None:
    async with server.teller() as teller, await _reviewer(server) as reviewer:
        rid = (await teller.submit(request(amount_minor=AT_THRESHOLD))).request.request_id
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await reviewer.review(rid, confirm=False)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "note" in (failure.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await reviewer.review(rid, confirm=True)  # says nothing about what was checked
        assert "checks" in (failure.value.details() or "")
        await reviewer.review(rid, confirm=False, note="the cash count is 100 short")
        seen = [update async for update in teller.watch(rid)]
        assert seen[-1].state == cpb.REQUEST_STATE_SENT_BACK
        assert "100 short" in seen[-1].note


async def test_reviews_are_refused_outside_the_rules(server: RunningServer) -> None:
    await server.account("both-1", [Role.TELLER, Role.ONSITE_REVIEWER], "branch-1")
    async with TellerClient(server.target, "both-1", PASSWORD) as both:
        rid = (await both.submit(request(amount_minor=AT_THRESHOLD))).request.request_id
        # Its own submitter may not review it (R11) ...
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await both.review(rid, confirm=True, checks=["CASH_RECOUNTED"])
        assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "R11" in (failure.value.details() or "")
    # ... nor a reviewer of another branch (R2) ...
    async with await _reviewer(server, "reviewer-9", "branch-9") as other:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await other.review(rid, confirm=True, checks=["CASH_RECOUNTED"])
        assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "branch-1" in (failure.value.details() or "")
    # ... nor a teller who is not a reviewer (R13).
    async with server.teller("teller-5", "branch-1") as teller:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.review(rid, confirm=True, checks=["CASH_RECOUNTED"])
        assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "R13" in (failure.value.details() or "")
    assert (await server.runtime.store.get(rid)).state.value == "PENDING_ONSITE_REVIEW"


async def test_the_reviewer_never_authorizes_what_it_reviewed(server: RunningServer) -> None:
    async with server.teller() as teller, await _reviewer(server) as reviewer:
        rid = (await teller.submit(request(amount_minor=AT_THRESHOLD))).request.request_id
        await reviewer.review(rid, confirm=True, checks=["CASH_RECOUNTED"])
    store = server.runtime.store
    assert await store.claim("reviewer-1") is None  # passed over (R11)
    assert (await store.claim("authorizer-7")) is not None


async def test_a_pending_request_can_be_cancelled(server: RunningServer) -> None:
    async with server.teller() as teller:
        rid = (await teller.submit(request(amount_minor=AT_THRESHOLD))).request.request_id
        update = await teller.cancel(rid, "customer left")
        assert update.state == cpb.REQUEST_STATE_CANCELLED
    async with await _reviewer(server) as reviewer:
        assert await reviewer.pending_review() == []


async def test_an_application_form_stands_in_for_a_missing_voucher(server: RunningServer) -> None:
    async with server.teller() as teller:
        captured = images("ID_FRONT", "ID_BACK", "APPLICATION_FORM", seed=3)
        reply = await teller.submit(request(with_images=False), captured)
        assert reply.request.state == cpb.REQUEST_STATE_QUEUED
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.submit(request(with_images=False), captured[:2])
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "VOUCHER" in (failure.value.details() or "")
