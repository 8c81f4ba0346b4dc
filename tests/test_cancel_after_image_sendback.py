"""A request the image check sent back to its teller (NEEDS_SUPPLEMENT, by `system`)
was never opened by an authorizer, so the teller may still withdraw it before
supplying anything (R4): the customer may leave instead of bringing a better ID card.
A supplement an authorizer asked for is still past the point of withdrawal."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from authq.refusals import Refusal, refusal_of
from authq.v1 import common_pb2 as cpb

from authorizer_console.client import AuthorizerClient
from server.store.audit import OUTCOME_OK
from teller_client.client import TellerClient
from tests.conftest import RunningServer
from tests.helpers import (
    corrupt_scan,
    request,
    request_with_front,
    standard_images,
    store_unchecked,
)
from tests.test_cli import _cli_env, run_cli
from tests.test_decide_supply_retries import trail

R4 = "R4: review has started, a request can only be withdrawn before that"


async def _sent_back_by_the_image_check(
    server: RunningServer, teller: TellerClient, authorizer: AuthorizerClient
) -> str:
    """Submits a request whose ID front is damaged (stored, never checked: the gate
    checks it at its first claim) and one good request; the authorizer is offered the
    good one while the damaged one goes back to the teller. Returns the damaged one."""
    bad_sha = await store_unchecked(server, corrupt_scan(standard_images()[0][1]))
    rid = (await teller.submit(request_with_front(bad_sha))).request.request_id
    good_id = (await teller.submit(request())).request.request_id
    assert (await authorizer.next(timeout=10)).request.request_id == good_id
    last = (await teller.get(rid)).history[-1]
    assert (last.event, last.actor, last.state) == (
        "SUPPLEMENT_REQUESTED", "system", cpb.REQUEST_STATE_NEEDS_SUPPLEMENT
    )  # fmt: skip
    return rid


async def test_a_request_the_image_check_sent_back_can_be_withdrawn_before_supplying(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = await _sent_back_by_the_image_check(server, teller, authorizer)
        update = await teller.cancel(rid, note="customer left")
        view = await teller.get(rid)
    assert update.state == cpb.REQUEST_STATE_CANCELLED
    assert view.state == cpb.REQUEST_STATE_CANCELLED
    assert [(e.event, e.actor, e.note) for e in view.history[-2:]] == [
        ("SUPPLEMENT_REQUESTED", "system", view.history[-2].note),
        ("CANCELLED", "teller-1", "customer left"),
    ]


async def test_the_tellers_watch_sees_the_withdrawal(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = await _sent_back_by_the_image_check(server, teller, authorizer)
        watch = teller.watch(rid)
        first = await anext(watch)  # a watch begins with the latest change
        await teller.cancel(rid)
        rest = [update async for update in watch]
    assert first.event == "SUPPLEMENT_REQUESTED"
    assert [(u.event, u.state) for u in rest] == [("CANCELLED", cpb.REQUEST_STATE_CANCELLED)]


async def test_a_withdrawn_sent_back_request_leaves_no_count_or_wait_behind(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = await _sent_back_by_the_image_check(server, teller, authorizer)
        before = await server.runtime.store.overview()
        await teller.cancel(rid)
    after = await server.runtime.store.overview()
    assert before.counts.get("NEEDS_SUPPLEMENT") == 1
    assert after.counts.get("NEEDS_SUPPLEMENT") == 0
    assert after.counts.get("CANCELLED") == before.counts.get("CANCELLED", 0) + 1
    # It waited nowhere for the center: the branch's waiting count and the lanes stay.
    assert after.waiting_by_branch == before.waiting_by_branch
    assert after.waiting == before.waiting == 0


async def test_the_withdrawal_of_a_sent_back_request_is_audited(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = await _sent_back_by_the_image_check(server, teller, authorizer)
        await teller.cancel(rid)
    assert await trail(server, rid, "CANCEL") == [OUTCOME_OK]


async def test_the_teller_command_line_withdraws_a_sent_back_request(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = await _sent_back_by_the_image_check(server, teller, authorizer)
        code, out, err = await run_cli("teller_client.cli", "cancel", rid, env=env)
        view = await teller.get(rid)
    assert code == 0, err
    assert "CANCELLED" in out
    assert view.state == cpb.REQUEST_STATE_CANCELLED


async def test_a_supplement_an_authorizer_asked_for_cannot_be_withdrawn(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=10)
        await authorizer.decide(
            rid, offer.lease.fencing_token, "ask", note="blurred", kinds=["ID_FRONT"]
        )
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.cancel(rid)
        view = await teller.get(rid)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refusal_of(failure.value) == Refusal(
        "ILLEGAL_TRANSITION",
        {"request_id": rid, "state": "NEEDS_SUPPLEMENT", "action": "cancel", "rule": R4},
    )
    assert view.state == cpb.REQUEST_STATE_NEEDS_SUPPLEMENT


async def test_a_sent_back_request_an_authorizer_had_opened_cannot_be_withdrawn(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image check finds the image supplied to an authorizer's request damaged: the
    send-back restores the review flag as it was before its claim, started."""
    images = server.runtime.center.images
    assert images is not None
    monkeypatch.setattr(images, "schedule", lambda sha256, data, stored: None)
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=10)
        await authorizer.decide(
            rid, offer.lease.fencing_token, "ask", note="blurred", kinds=["ID_FRONT"]
        )
        await teller.supply(rid, [("ID_FRONT", corrupt_scan(standard_images()[0][1]))])
        good_id = (await teller.submit(request())).request.request_id
        assert (await authorizer.next(timeout=10)).request.request_id == good_id
        last = (await teller.get(rid)).history[-1]
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.cancel(rid)
    assert (last.event, last.actor) == ("SUPPLEMENT_REQUESTED", "system")
    assert refusal_of(failure.value) == Refusal(
        "ILLEGAL_TRANSITION",
        {"request_id": rid, "state": "NEEDS_SUPPLEMENT", "action": "cancel", "rule": R4},
    )
