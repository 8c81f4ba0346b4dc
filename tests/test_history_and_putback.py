"""The first history entry says the state a request entered (R2: PENDING_ONSITE_REVIEW
for one awaiting its on-site review, as the event stream said) in Watch, Get and the
archive; and an offer that never reached anyone (put back by the dispatcher, or sent
back by the image check as `system`) leaves the request as withdrawable as before its
claim (R4), while an authorizer's own hand-back still ends that."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import grpc
import pytest
from authq.refusals import Refusal, refusal_of
from authq.v1 import common_pb2 as cpb

from server.accounts.model import Role
from server.api import authorizer as authorizer_api
from server.archive.layout import day_dir, parse_day
from server.dispatch import NOT_MADE, Waiter
from server.store.queue_store import Claim
from teller_client.client import TellerClient
from tests.conftest import PASSWORD, RunningServer, StartServer
from tests.helpers import (
    corrupt_scan,
    images,
    request,
    request_with_front,
    standard_images,
    store_unchecked,
)
from tests.test_archive import FAST, archive_root, archived

AT_THRESHOLD = 50_000_000  # CNY 500,000.00 in fen: on-site review first (R2)
R4 = "R4: review has started, a request can only be withdrawn before that"


async def _reviewer(server: RunningServer) -> TellerClient:
    await server.account("reviewer-1", [Role.ONSITE_REVIEWER], "branch-1")
    return TellerClient(server.target, "reviewer-1", PASSWORD)


async def _next_event(watch: AsyncGenerator[cpb.RequestUpdate, None], event: str) -> None:
    """Reads the request's updates until one of ``event`` (the stream ends the wait)."""
    async for update in watch:
        if update.event == event:
            return
    raise AssertionError(f"no {event} before the watch ended")


def _cannot_be_shown(claim: Claim) -> Any:
    raise ValueError("cannot be shown (injected)")


# -- the SUBMITTED entry's state ---------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "state"),
    [
        (AT_THRESHOLD, cpb.REQUEST_STATE_PENDING_ONSITE_REVIEW),
        (AT_THRESHOLD - 1, cpb.REQUEST_STATE_QUEUED),
    ],
)
async def test_the_submitted_entry_says_the_state_the_request_entered(
    server: RunningServer, amount: int, state: cpb.RequestState.ValueType
) -> None:
    async with server.teller() as teller:
        reply = await teller.submit(request(amount_minor=amount))
        rid = reply.request.request_id
        watch = teller.watch(rid)
        first = await anext(watch)
        await watch.aclose()
        view = await teller.get(rid)
    assert reply.request.state == state
    assert (first.event, first.state) == ("SUBMITTED", state)
    assert [(e.event, e.state) for e in view.history] == [("SUBMITTED", state)]


async def test_a_request_confirmed_on_site_keeps_its_first_state_through_to_the_archive(
    start_server: StartServer,
) -> None:
    server = await start_server(**FAST)
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request(amount_minor=AT_THRESHOLD))).request.request_id
        async with await _reviewer(server) as reviewer:
            await reviewer.review(rid, confirm=True, checks=["CASH_RECOUNTED"])
        view = await teller.get(rid)
        offer = await authorizer.next(timeout=10)
        await authorizer.decide(rid, offer.lease.fencing_token, "approve")
    expected = [
        ("SUBMITTED", "PENDING_ONSITE_REVIEW"),
        ("ONSITE_CONFIRMED", "QUEUED"),
    ]
    assert [(e.event, cpb.RequestState.Name(e.state)) for e in view.history] == [
        (event, f"REQUEST_STATE_{state}") for event, state in expected
    ]
    marker = await archived(server.runtime, rid)
    directory = day_dir(archive_root(server), parse_day(marker.day))
    document = json.loads((directory / f"{rid}.json").read_text())
    assert [(e["event"], e["state"]) for e in document["history"]] == [
        *expected,
        ("CLAIMED", "CLAIMED"),
        ("APPROVED", "APPROVED"),
    ]


# -- an offer nobody got, and the cancel (R4) -----------------------------------------


async def test_an_offer_that_could_not_be_made_leaves_the_request_withdrawable(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with server.teller() as teller, server.authorizer("auth-pb") as authorizer:
        rid = (await teller.submit(request())).request.request_id
        watch = teller.watch(rid)
        monkeypatch.setattr(authorizer_api, "offer_to_pb", _cannot_be_shown)
        with pytest.raises(grpc.aio.AioRpcError):
            await authorizer.next(timeout=10)
        await _next_event(watch, "RELEASED")
        await watch.aclose()
        update = await teller.cancel(rid, note="customer changed their mind")
        view = await teller.get(rid)
    assert update.state == cpb.REQUEST_STATE_CANCELLED
    assert [(e.event, e.actor, e.note) for e in view.history[1:]] == [
        ("CLAIMED", "auth-pb", ""),
        ("RELEASED", "auth-pb", NOT_MADE),
        ("CANCELLED", "teller-1", "customer changed their mind"),
    ]


async def test_an_offer_whose_authorizer_left_leaves_the_request_withdrawable(
    server: RunningServer,
) -> None:
    def gone(_waiter: Waiter, _claim: Claim) -> bool:
        return False  # the authorizer left while its item was being claimed

    async with server.teller() as teller:
        rid = (await teller.submit(request())).request.request_id
        watch = teller.watch(rid)
        server.runtime.dispatcher.add(Waiter("auth-gone", gone))
        await _next_event(watch, "RELEASED")
        await watch.aclose()
        update = await teller.cancel(rid)
    assert update.state == cpb.REQUEST_STATE_CANCELLED


async def test_a_put_back_after_a_hand_back_leaves_review_started(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The put-back restores the flag as it was before its claim: an authorizer had
    opened the item earlier, so the cancel stays refused."""
    async with (
        server.teller() as teller,
        server.authorizer("auth-a") as first,
        server.authorizer("auth-b") as second,
    ):
        rid = (await teller.submit(request())).request.request_id
        offer = await first.next(timeout=10)
        await first.release(rid, offer.lease.fencing_token)
        watch = teller.watch(rid)
        await _next_event(watch, "RELEASED")  # the hand-back itself
        monkeypatch.setattr(authorizer_api, "offer_to_pb", _cannot_be_shown)
        with pytest.raises(grpc.aio.AioRpcError):
            await second.next(timeout=10)
        await _next_event(watch, "RELEASED")  # the put-back
        await watch.aclose()
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.cancel(rid)
    _refused_by_r4(failure.value, rid)


async def test_an_authorizers_hand_back_still_ends_the_right_to_withdraw(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=10)
        await authorizer.release(rid, offer.lease.fencing_token)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.cancel(rid)
    _refused_by_r4(failure.value, rid)


async def test_a_request_the_image_check_sent_back_can_be_withdrawn_once_supplied(
    server: RunningServer,
) -> None:
    # Stored but never checked: the gate checks it at the first claim and sends the
    # request back.
    bad_sha = await store_unchecked(server, corrupt_scan(standard_images()[0][1]))
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request_with_front(bad_sha))).request.request_id
        good_id = (await teller.submit(request())).request.request_id
        assert (await authorizer.next(timeout=10)).request.request_id == good_id
        sent_back = (await teller.get(rid)).history[-1]
        await teller.supply(rid, images("ID_FRONT", seed=7))
        update = await teller.cancel(rid, note="customer left")
    assert (sent_back.event, sent_back.actor) == ("SUPPLEMENT_REQUESTED", "system")
    assert update.state == cpb.REQUEST_STATE_CANCELLED


def _refused_by_r4(exc: grpc.aio.AioRpcError, request_id: str) -> None:
    """A cancel of a waiting request an authorizer had opened (R4)."""
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refusal_of(exc) == Refusal(
        "ILLEGAL_TRANSITION",
        {"request_id": request_id, "state": "QUEUED", "action": "cancel", "rule": R4},
    )
