"""The whole life of a request over real gRPC and Redis (R1, R5)."""

from __future__ import annotations

import asyncio
import io

import pytest
from authq import wire
from authq.v1 import common_pb2 as cpb
from PIL import Image

from server.accounts.model import Role
from server.domain.records import HistoryEntry
from server.domain.records import Image as DomainImage
from server.errors import IllegalTransition
from tests.conftest import RunningServer
from tests.helpers import STANDARD_KINDS, images, request


async def test_submit_review_supplement_and_decision_reach_the_teller(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer("auth-7") as authorizer:
        captured = images("ID_FRONT", "ID_BACK", "VOUCHER", seed=5)
        reply = await teller.submit(request(with_images=False), captured)
        rid = reply.request.request_id
        assert reply.request.state == cpb.REQUEST_STATE_QUEUED
        assert not reply.duplicate
        assert [i.content_type for i in reply.request.images] == ["image/jpeg"] * 3

        updates: list[cpb.RequestUpdate] = []

        async def watch() -> None:
            async for update in teller.watch(rid):
                updates.append(update)

        watcher = asyncio.create_task(watch())
        while not updates:  # the watch starts from the state it finds: let it see QUEUED
            await asyncio.sleep(0.01)

        offer = await authorizer.next(timeout=5)
        assert offer.request.request_id == rid
        assert offer.request.transaction.amount.minor_units == 1_200_050
        for image, (_, data) in zip(offer.request.images, captured, strict=True):
            # The authorizer sees the watermarked preview; the branch keeps the capture.
            preview = Image.open(io.BytesIO(await authorizer.image(rid, image.sha256)))
            assert preview.format == "JPEG"
            assert preview.size == Image.open(io.BytesIO(data)).size
            assert await teller.image(rid, image.sha256, "original") == data
        await authorizer.decide(
            rid, offer.lease.fencing_token, "ask", kinds=["CUSTOMER_PHOTO"], note="the customer"
        )
        await teller.supply(rid, images("CUSTOMER_PHOTO"))

        second = await authorizer.next(timeout=5)
        assert second.request.request_id == rid
        assert second.lease.fencing_token > offer.lease.fencing_token
        events = [entry.event for entry in second.request.history]
        assert events == ["SUBMITTED", "CLAIMED", "SUPPLEMENT_REQUESTED", "SUPPLIED", "CLAIMED"]
        assert len(second.request.images) == 4
        final = await authorizer.decide(rid, second.lease.fencing_token, "approve")
        assert final.state == cpb.REQUEST_STATE_APPROVED

        await asyncio.wait_for(watcher, 5)
        assert [u.event for u in updates] == [
            "SUBMITTED",
            "CLAIMED",
            "SUPPLEMENT_REQUESTED",
            "SUPPLIED",
            "CLAIMED",
            "APPROVED",
        ]
        assert updates[2].requested_kinds == [cpb.IMAGE_KIND_CUSTOMER_PHOTO]
        assert updates[2].note == "the customer"
        assert updates[-1].actor == "auth-7"
        assert [u.version for u in updates] == [1, 2, 3, 4, 5, 6]


async def test_a_second_supply_from_the_same_read_is_refused_not_merged(
    server: RunningServer,
) -> None:
    """Two tellers of the branch answer the same supplement request at once: the
    first one's images are stored; the second is told, not answered as if stored.
    The first one's call made again (a lost reply) is answered as it was."""
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=5)
        await authorizer.decide(rid, offer.lease.fencing_token, "ask", kinds=["VOUCHER"])
    store = server.runtime.store
    asked = await store.get(rid)
    first = [DomainImage("VOUCHER", "a" * 64, 10, "image/jpeg")]
    other = [DomainImage("VOUCHER", "b" * 64, 10, "image/jpeg")]
    stored = await store.supply(rid, asked.version, first, "teller-1", "")
    with pytest.raises(IllegalTransition, match="it is QUEUED"):
        await store.supply(rid, asked.version, other, "teller-2", "")
    again = await store.supply(rid, asked.version, first, "teller-1", "sent again")

    # Answered as the supply was made: its time, actor and note, not the repeat's.
    def made(entry: HistoryEntry) -> tuple[object, ...]:
        return (entry.version, entry.at_ms, entry.event, entry.actor, entry.note)

    assert made(again) == made(stored)
    assert again.note == ""
    record = await store.get(rid)
    assert [image.sha256 for image in record.supplements] == ["a" * 64]
    assert [entry.event for entry in record.history].count("SUPPLIED") == 1


async def test_a_teller_reconnecting_after_the_decision_sees_the_final_state(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=5)
        await authorizer.decide(
            rid,
            offer.lease.fencing_token,
            "reject",
            reason_code="SIGNATURE_MISMATCH",
            note="differs",
        )
        seen = [update async for update in teller.watch(rid)]
        assert len(seen) == 1
        assert seen[0].state == cpb.REQUEST_STATE_REJECTED
        assert seen[0].reason_code == "SIGNATURE_MISMATCH"
        assert seen[0].actor == "authorizer-1"


async def test_an_authorizer_waiting_gets_work_as_soon_as_it_is_submitted(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        waiting = asyncio.create_task(authorizer.next(timeout=10))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        rid = (await teller.submit(request())).request.request_id
        offer = await asyncio.wait_for(waiting, 5)
        assert offer.request.request_id == rid


async def test_identical_images_are_stored_once(server: RunningServer) -> None:
    async with server.teller() as teller:
        blob_dir = server.runtime.settings.data_dir / "blobs"

        def stored() -> int:
            """Originals only: renditions ("<sha256>.preview.jpg") appear as the
            background check finishes, whenever that is."""
            return len(
                [p for p in blob_dir.rglob("*") if p.is_file() and p.parent.name != "tmp"
                 and "." not in p.name]
            )  # fmt: skip

        before = stored()
        data = images("ID_FRONT", seed=7)[0][1]
        first = await teller.upload_image("ID_FRONT", data)
        again = await teller.upload_image("ID_FRONT", data)
        assert first.sha256 == again.sha256 == wire.sha256_hex(data)
        assert stored() == before + 1


async def test_teller_session_pushes_every_change_of_its_requests(server: RunningServer) -> None:
    async with (
        server.teller() as teller,
        server.authorizer() as authorizer,
        teller.session() as session,
    ):
        replies = await asyncio.gather(
            *(
                session.submit(request(with_images=False), images(*STANDARD_KINDS, seed=i))
                for i in range(3)
            )
        )
        ids = {reply.request.request_id for reply in replies}
        for _ in range(3):
            offer = await authorizer.next(timeout=5)
            await authorizer.decide(offer.request.request_id, offer.lease.fencing_token, "approve")
        seen: dict[str, list[str]] = {rid: [] for rid in ids}
        while any(not events or events[-1] != "APPROVED" for events in seen.values()):
            update = await asyncio.wait_for(session.updates.get(), 5)
            seen[update.request_id].append(update.event)
        assert all(events == ["CLAIMED", "APPROVED"] for events in seen.values())


async def test_authorizer_session_offers_items_per_credit(server: RunningServer) -> None:
    async with (
        server.teller() as teller,
        server.authorizer() as authorizer,
        authorizer.session() as session,
    ):
        session.credit(1)
        rid = (await teller.submit(request())).request.request_id
        offer = await asyncio.wait_for(session.offers.get(), 5)
        assert offer.request.request_id == rid
        await teller.submit(request())
        await asyncio.sleep(0.2)
        assert session.offers.empty()  # no credit, no offer
        update = await session.decide(rid, offer.lease.fencing_token, "approve")
        assert update.state == cpb.REQUEST_STATE_APPROVED
        session.credit(1)
        assert (await asyncio.wait_for(session.offers.get(), 5)).request.request_id != rid


async def test_a_colleague_at_the_branch_may_take_over_a_request_and_acts_in_their_own_name(
    server: RunningServer,
) -> None:
    """A counter changes hands (a break, the end of a shift) while the customer waits:
    another teller of the branch supplies the images asked for, or withdraws the
    request, and the trail names the one who did (R4, R11)."""
    await server.account("teller-2", [Role.TELLER], "branch-1")
    async with (
        server.teller() as teller,
        server.teller("teller-2") as colleague,
        server.authorizer() as authorizer,
    ):
        asked = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=5)
        await authorizer.decide(asked, offer.lease.fencing_token, "ask", kinds=["VOUCHER"])
        supplied = await colleague.supply(asked, images("VOUCHER", seed=9))
        withdrawn = (await teller.submit(request())).request.request_id
        cancelled = await colleague.cancel(withdrawn, note="customer left")

        history = (await teller.get(asked)).history
    assert (supplied.event, supplied.actor) == ("SUPPLIED", "teller-2")
    assert [entry.actor for entry in history] == ["teller-1", "authorizer-1", "authorizer-1",
                                                  "teller-2"]  # fmt: skip
    assert (cancelled.event, cancelled.actor) == ("CANCELLED", "teller-2")
