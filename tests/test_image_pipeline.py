"""The full image check off the request path: renditions upright and without device
or location metadata; a file that passes the probe but not the full decode never
reaches an authorizer and goes back to its teller with the reason."""

from __future__ import annotations

import asyncio
import io
import math
import random

import grpc
import pytest
from authq.v1 import common_pb2 as cpb
from PIL import Image, ImageDraw

from server.images.checker import OK
from server.images.probe import probe_image
from server.images.renditions import PREVIEW_SIDE, THUMBNAIL_SIDE, check_and_render
from teller_client.client import kind_value
from tests.conftest import RunningServer
from tests.helpers import (
    corrupt_scan,
    images,
    request,
    request_with_front,
    standard_images,
    store_unchecked,
)

_GPS_IFD = 0x8825
_MAKE, _MODEL, _ORIENTATION = 0x010F, 0x0110, 0x0112


def phone_capture(size: tuple[int, int] = (2400, 1800)) -> bytes:
    """A JPEG as a phone stores it: sideways with EXIF orientation 6, GPS position
    and device tags. Stored left half red, right half blue."""
    img = Image.new("RGB", size, (220, 30, 30))
    img.paste((30, 30, 220), (size[0] // 2, 0, size[0], size[1]))
    exif = Image.Exif()
    exif[_ORIENTATION] = 6
    exif[_MAKE] = "PhoneMaker"
    exif[_MODEL] = "Model X-1 serial 0042"
    exif[_GPS_IFD] = {1: "N", 2: (39.0, 54.0, 27.0), 3: "E", 4: (116.0, 23.0, 5.0)}
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def test_renditions_are_upright_small_and_bare() -> None:
    result = check_and_render(phone_capture())
    assert result.ok, result.fault
    preview = Image.open(io.BytesIO(result.preview))
    thumbnail = Image.open(io.BytesIO(result.thumbnail))
    # Orientation 6 means "turn clockwise to view": 2400x1800 stored is 1800x2400 upright.
    assert preview.size == (1200, PREVIEW_SIDE)
    assert thumbnail.size == (240, THUMBNAIL_SIDE)
    red, blue = preview.getpixel((600, 400)), preview.getpixel((600, 1200))
    assert isinstance(red, tuple)
    assert isinstance(blue, tuple)
    # The stored left half (red) is now on top, the right half (blue) below.
    assert red[0] > 150, red
    assert red[2] < 100, red
    assert blue[2] > 150, blue
    assert blue[0] < 100, blue
    for rendition in (preview, thumbnail):
        assert not rendition.getexif(), dict(rendition.getexif())
        assert "exif" not in rendition.info
        assert "xmp" not in rendition.info
    for raw in (result.preview, result.thumbnail):
        assert b"PhoneMaker" not in raw
        assert b"Exif" not in raw


def _psnr_db(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio of two pictures of one size, in dB."""
    assert a.size == b.size
    pairs = zip(a.convert("RGB").tobytes(), b.convert("RGB").tobytes(), strict=True)
    mse = sum((x - y) ** 2 for x, y in pairs) / (a.width * a.height * 3)
    return 10 * math.log10(255**2 / mse)


def text_page(size: tuple[int, int]) -> bytes:
    """A voucher's worst case for a thumbnail: a page of dense small print."""
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    rng = random.Random(1)
    for y in range(0, size[1], 14):
        line = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ") for _ in range(200))
        draw.text((4, y), line, fill=(20, 20, 20))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=92)
    return out.getvalue()


@pytest.mark.parametrize("size", [(1497, 1122), (1200, 900)])
def test_a_thumbnail_is_as_faithful_as_a_lanczos_resize_of_the_whole_page(
    size: tuple[int, int],
) -> None:
    """Its source is decoded at a DCT scale (1/4 and 1/2 here) and then resized by less
    than 2x: that last step's filter must still keep small print apart. Bicubic (23.8
    and 25.2 dB) scores within 0.1 dB of Lanczos on these pages, or above it (Lanczos
    rings); a nearest-neighbour or box step (19.1-21.5 dB) fails."""
    data = text_page(size)
    result = check_and_render(data)
    assert result.ok, result.fault
    thumbnail = Image.open(io.BytesIO(result.thumbnail))
    reference = Image.open(io.BytesIO(data)).resize(thumbnail.size, Image.Resampling.LANCZOS)
    assert max(thumbnail.size) == THUMBNAIL_SIDE
    assert _psnr_db(thumbnail, reference) > 23.0


def test_corrupt_scan_data_passes_the_probe_but_not_the_full_check() -> None:
    bad = corrupt_scan(standard_images()[0][1])
    probe_image(bad)  # the cheap check before the ack sees nothing wrong
    result = check_and_render(bad)
    assert not result.ok
    assert "damaged JPEG" in result.fault
    assert "Corrupt JPEG data" in result.fault
    assert not result.preview
    assert not result.thumbnail


async def test_upload_is_checked_after_the_ack_and_renditions_stored(
    server: RunningServer,
) -> None:
    data = phone_capture()
    async with server.teller() as teller:
        ref = await teller.upload_image("CUSTOMER_PHOTO", data)
    center = server.runtime.center
    assert center.images is not None
    assert await center.images.verdict(ref.sha256) == OK
    preview = await center.blobs.get_rendition(ref.sha256, "preview")
    assert Image.open(io.BytesIO(preview)).size == (1200, PREVIEW_SIDE)
    stored = await server.runtime.client.hget(server.runtime.store.keys.blob(ref.sha256), "ck")
    assert stored == b"OK"
    # The original stays exactly as uploaded: it is the evidence (R15).
    assert await center.blobs.get(ref.sha256) == data


async def test_submit_refuses_an_image_whose_check_failed(server: RunningServer) -> None:
    bad = corrupt_scan(standard_images()[0][1])
    async with server.teller() as teller:
        ref = await teller.upload_image("ID_FRONT", bad)  # acknowledged: the probe passes
        center = server.runtime.center
        assert center.images is not None
        assert (await center.images.verdict(ref.sha256)).startswith("damaged JPEG")
        message = request_with_front(ref.sha256)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await teller.submit(message)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert "images[2]" in details
    assert ref.sha256 in details
    assert "Corrupt JPEG data" in details


@pytest.mark.parametrize("via_session", [False, True])
async def test_a_bad_image_goes_back_to_the_teller_and_is_never_offered(
    server: RunningServer, via_session: bool
) -> None:
    bad_sha = await store_unchecked(server, corrupt_scan(standard_images()[0][1]))
    async with server.teller() as teller, server.authorizer() as authorizer:
        bad = request_with_front(bad_sha)
        bad_id = (await teller.submit(bad)).request.request_id
        good_id = (await teller.submit(request())).request.request_id
        # The bad one waits first; the authorizer is offered the good one.
        if via_session:
            async with authorizer.session() as session:
                session.credit(1)
                offer = await session.offers.get()
                assert session.offers.empty()
        else:
            offer = await authorizer.next(timeout=10)
        assert offer.request.request_id == good_id
        view = await teller.get(bad_id)
    assert view.state == cpb.REQUEST_STATE_NEEDS_SUPPLEMENT
    last = view.history[-1]
    assert last.event == "SUPPLEMENT_REQUESTED"
    assert last.actor == "system"
    assert list(last.requested_kinds) == [kind_value("ID_FRONT")]
    assert "ID_FRONT" in last.note
    assert "Corrupt JPEG data" in last.note
    await server.runtime.center.flush_audit()
    actions = [(r.entry.action, r.entry.actor) async for r in server.runtime.audit.read()]
    assert ("IMAGE_CHECK_SEND_BACK", "system") in actions


async def test_a_supplied_image_replaces_the_bad_one(server: RunningServer) -> None:
    bad_sha = await store_unchecked(server, corrupt_scan(standard_images()[0][1]))
    async with server.teller() as teller, server.authorizer() as authorizer:
        bad = request_with_front(bad_sha)
        rid = (await teller.submit(bad)).request.request_id
        good_id = (await teller.submit(request())).request.request_id
        assert (await authorizer.next(timeout=10)).request.request_id == good_id
        await teller.supply(rid, [("ID_FRONT", phone_capture((1600, 1200)))])
        offer = await authorizer.next(timeout=10)
    assert offer.request.request_id == rid


async def test_a_check_still_running_holds_up_only_its_own_offer(server: RunningServer) -> None:
    checker = server.runtime.center.images
    assert checker is not None
    ((_kind, data),) = images("ID_FRONT", seed=5)
    slow_sha = await store_unchecked(server, data)
    release = asyncio.Event()
    verdict = checker.verdict

    async def slow_verdict(sha256: str) -> str:
        if sha256 == slow_sha:
            await release.wait()  # a check stuck behind a busy machine
        return await verdict(sha256)

    checker.verdict = slow_verdict  # type: ignore[method-assign]
    async with server.teller() as teller:
        slow = request_with_front(slow_sha)
        slow_id = (await teller.submit(slow)).request.request_id
        quick_id = (await teller.submit(request())).request.request_id
    dispatcher = server.runtime.dispatcher
    first = asyncio.create_task(dispatcher.next_item("authorizer-1"))
    await asyncio.sleep(0.2)  # it holds the slow item, waiting for its check
    second = await asyncio.wait_for(dispatcher.next_item("authorizer-2"), 5)
    assert second.record.request_id == quick_id
    assert not first.done()
    release.set()
    assert (await asyncio.wait_for(first, 10)).record.request_id == slow_id


def test_a_cmyk_jpeg_is_checked_as_strictly_as_an_rgb_one() -> None:
    out = io.BytesIO()
    Image.new("CMYK", (400, 300), (10, 200, 30, 5)).save(out, "JPEG", quality=90)
    good = out.getvalue()
    assert check_and_render(good).ok
    bad = corrupt_scan(good)
    Image.open(io.BytesIO(bad)).load()  # Pillow alone fills the lost half with grey
    result = check_and_render(bad)
    assert not result.ok
    assert "Corrupt JPEG data" in result.fault
