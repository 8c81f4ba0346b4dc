"""Decide names image kinds only when it asks for images; a retried Supply or Submit
gets its original answer. An approval or rejection listing requested_kinds is refused
naming the field (unary and session alike), not recorded as if images were asked for.
A Supply retried after a lost reply is answered with the SUPPLIED entry it made and
audited as a REPEAT (R15); a Submit retried after one of its images failed the full
check gets the stored request back, while a first submit of it is still refused."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from authq import wire
from authq.channel import SessionCallError
from authq.refusals import FieldViolation, Refusal, refusal_of
from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb

from server.domain.states import State
from server.store.audit import OUTCOME_OK, OUTCOME_REPEAT
from teller_client.client import TellerClient, kind_value
from tests.conftest import RunningServer
from tests.helpers import corrupt_scan, images, request, standard_images

KINDS_ONLY_WHEN_ASKING = (
    "requested_kinds: only a request for images (ASK_SUPPLEMENT) names image kinds"
)


def invalid_field(name: str, message: str) -> Refusal:
    return Refusal("INVALID_FIELD", {"field": name}, (FieldViolation(name, message),))


async def trail(server: RunningServer, request_id: str, action: str) -> list[str]:
    """The outcomes the audit trail holds for ``action`` on the request, in order."""
    await server.runtime.center.flush_audit()
    return [r.entry.outcome async for r in server.runtime.audit.read()
            if r.entry.target == request_id and r.entry.action == action]  # fmt: skip


# -- Decide: requested_kinds belong to ASK_SUPPLEMENT ----------------------------------


@pytest.mark.parametrize(
    ("outcome", "extra"),
    [("approve", {}), ("reject", {"reason_code": "ID_MISMATCH"})],
)
async def test_a_decision_other_than_asking_that_names_kinds_is_refused(
    server: RunningServer, outcome: str, extra: dict[str, Any]
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=5)
        token = offer.lease.fencing_token
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await authorizer.decide(rid, token, outcome, kinds=["CUSTOMER_PHOTO"], **extra)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == KINDS_ONLY_WHEN_ASKING
        assert refusal_of(refused.value) == invalid_field(
            "requested_kinds", "only a request for images (ASK_SUPPLEMENT) names image kinds"
        )
        assert (await teller.get(rid)).state == cpb.REQUEST_STATE_CLAIMED
        # The same decision without kinds goes through, and its entry names none.
        decided = await authorizer.decide(rid, token, outcome, **extra)
        assert list(decided.requested_kinds) == []
        view = await teller.get(rid)
    assert [list(entry.requested_kinds) for entry in view.history] == [[]] * len(view.history)
    assert await trail(server, rid, "DECIDE") == [KINDS_ONLY_WHEN_ASKING, OUTCOME_OK]


async def test_an_approval_naming_kinds_in_a_session_is_refused_too(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        async with authorizer.session() as console:
            console.credit(1)
            offer = await console.offers.get()
            token = offer.lease.fencing_token
            with pytest.raises(SessionCallError) as refused:
                await console.decide(rid, token, "approve", kinds=["CUSTOMER_PHOTO"])
            assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.message == KINDS_ONLY_WHEN_ASKING
            assert refused.value.refusal == Refusal("INVALID_FIELD", {"field": "requested_kinds"})
            approved = await console.decide(rid, token, "approve")
    assert approved.state == cpb.REQUEST_STATE_APPROVED
    assert list(approved.requested_kinds) == []


# -- Supply: a retry after a lost reply is answered as done ---------------------------


async def _asked_for_photo(server: RunningServer, teller: TellerClient) -> str:
    """A request whose authorizer asked for a customer photo: its id."""
    async with server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=5)
        await authorizer.decide(rid, offer.lease.fencing_token, "ask", kinds=["CUSTOMER_PHOTO"])
    return rid


async def test_a_supply_sent_again_returns_the_supplied_update_and_is_audited_as_a_repeat(
    server: RunningServer,
) -> None:
    async with server.teller() as teller:
        rid = await _asked_for_photo(server, teller)
        refs = await teller.upload_images(images("CUSTOMER_PHOTO", seed=3))
        message = tpb.SupplyRequest(request_id=rid, images=refs, note="the customer")
        first = await teller.stub.Supply(message, metadata=teller.metadata)
        again = await teller.stub.Supply(message, metadata=teller.metadata)
    assert first.event == "SUPPLIED"
    assert again == first
    record = await server.runtime.store.get(rid)
    assert record.state is State.QUEUED
    assert [image.sha256 for image in record.supplements] == [refs[0].sha256]
    assert [entry.event for entry in record.history].count("SUPPLIED") == 1
    assert await trail(server, rid, "SUPPLY") == [OUTCOME_OK, OUTCOME_REPEAT]


async def test_a_supply_retried_after_the_item_was_claimed_again_is_answered_as_done(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer("authorizer-2") as second:
        rid = await _asked_for_photo(server, teller)
        refs = await teller.upload_images(images("CUSTOMER_PHOTO", seed=3))
        message = tpb.SupplyRequest(request_id=rid, images=refs, note="")
        first = await teller.stub.Supply(message, metadata=teller.metadata)
        await second.next(timeout=5)
        again = await teller.stub.Supply(message, metadata=teller.metadata)
    assert again == first
    assert (await server.runtime.store.get(rid)).state is State.CLAIMED


async def test_a_supply_of_other_images_or_by_another_teller_after_the_supply_is_refused(
    server: RunningServer,
) -> None:
    async with (
        server.teller() as teller,
        server.teller("teller-2") as colleague,  # same branch: may supply (README)
    ):
        rid = await _asked_for_photo(server, teller)
        photo = await teller.upload_images(images("CUSTOMER_PHOTO", seed=3))
        await teller.stub.Supply(
            tpb.SupplyRequest(request_id=rid, images=photo), metadata=teller.metadata
        )
        other = await teller.upload_images(images("CUSTOMER_PHOTO", seed=4))
        calls = [
            (teller, tpb.SupplyRequest(request_id=rid, images=other)),
            (teller, tpb.SupplyRequest(request_id=rid, images=[*photo, *other])),
            (colleague, tpb.SupplyRequest(request_id=rid, images=photo)),
        ]
        for client, message in calls:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.stub.Supply(message, metadata=client.metadata)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert refusal_of(refused.value) == Refusal(
                "ILLEGAL_TRANSITION",
                {
                    "request_id": rid,
                    "state": "QUEUED",
                    "action": "supply images to",
                    "rule": "no supplement was asked for",
                },
            )
    record = await server.runtime.store.get(rid)
    assert [image.sha256 for image in record.supplements] == [photo[0].sha256]


# -- Submit: a retry after its image failed the full check ----------------------------


async def _with_unchecked_bad_front(
    server: RunningServer, teller: TellerClient, monkeypatch: pytest.MonkeyPatch
) -> tuple[tpb.SubmitRequest, str]:
    """A submit whose ID front is damaged and not yet checked (the server went down
    after the upload's ack: the check runs when the image is next needed), and that
    image's sha256."""
    center = server.runtime.center
    assert center.images is not None
    monkeypatch.setattr(center.images, "schedule", lambda sha256, data, stored: None)
    ref = await teller.upload_image("ID_FRONT", corrupt_scan(standard_images()[0][1]))
    message = request(with_images=False)
    message.images.append(cpb.ImageRef(kind=kind_value("ID_FRONT"), sha256=ref.sha256))
    for kind, data in standard_images()[1:]:
        message.images.append(cpb.ImageRef(kind=kind_value(kind), sha256=wire.sha256_hex(data)))
    return message, ref.sha256


async def test_a_submit_retried_after_its_image_failed_returns_the_stored_request(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    center = server.runtime.center
    assert center.images is not None
    async with server.teller() as teller:
        message, bad = await _with_unchecked_bad_front(server, teller, monkeypatch)
        first = await teller.stub.Submit(message, metadata=teller.metadata)
        assert first.request.state == cpb.REQUEST_STATE_QUEUED
        assert await center.images.verdict(bad) != "OK"
        again = await teller.stub.Submit(message, metadata=teller.metadata)
        # Other content under the same id is still told apart (by its fingerprint).
        message.transaction.memo = "another transaction"
        with pytest.raises(grpc.aio.AioRpcError) as conflict:
            await teller.stub.Submit(message, metadata=teller.metadata)
    assert again.duplicate
    stored, answered = first.request, again.request
    assert (answered.request_id, answered.state, answered.version) == (
        stored.request_id,
        stored.state,
        stored.version,
    )
    assert answered.submitted_at_ms == stored.submitted_at_ms
    assert list(answered.images) == list(stored.images)
    rid = first.request.request_id
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert refusal_of(conflict.value) == Refusal(
        "ALREADY_EXISTS", {"request_id": rid, "exists": "request", "state": "QUEUED"}
    )
    assert await trail(server, rid, "SUBMIT") == [
        OUTCOME_OK,
        OUTCOME_REPEAT,
        str(conflict.value.details()),
    ]


async def test_a_first_submit_of_an_image_that_failed_the_check_is_still_refused(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    center = server.runtime.center
    assert center.images is not None
    async with server.teller() as teller:
        message, bad = await _with_unchecked_bad_front(server, teller, monkeypatch)
        fault = await center.images.verdict(bad)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await teller.stub.Submit(message, metadata=teller.metadata)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    problem = f"image ID_FRONT {bad} failed the full check: {fault}; capture it again"
    assert refused.value.details() == f"images[0]: {problem}"
    assert refusal_of(refused.value) == invalid_field("images[0]", problem)
    assert not await server.runtime.store.exists(message.request_id)
