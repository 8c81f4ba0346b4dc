"""Damage the decoders do not report, and renditions after the blob GC.

A PNG whose image data fails its own checksums (the IDAT chunk's CRC, which Pillow
skips, or the zlib stream's Adler-32) fails the full check; a JPEG-compressed TIFF
(libtiff decodes its scan data leniently) is refused at the upload, and by the full
check should one be stored without it. An image the blob GC collected (bytes,
renditions, Redis hash) and that is uploaded again to the same server process is
checked and rendered again: the process's cached verdict does not stand in for it."""

from __future__ import annotations

import io
import struct
import zlib

import grpc
import pytest
from authq.refusals import FieldViolation, Refusal, refusal_of
from authq.v1 import common_pb2 as cpb
from PIL import Image

from server.images.checker import OK
from server.images.probe import TIFF_JPEG_REFUSED, probe_image
from server.images.renditions import THUMBNAIL_SIDE, check_and_render
from teller_client.client import kind_value
from tests.conftest import RunningServer
from tests.helpers import images, request, request_with_front, store_unchecked


def _png(size: tuple[int, int] = (400, 300), mode: str = "RGB") -> bytes:
    """A picture with detail in it: its image data spans several IDAT chunks."""
    picture = Image.effect_noise(size, 60).convert(mode)
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def _idat(data: bytes) -> tuple[int, int]:
    """Where the first IDAT chunk's data starts, and its length."""
    at = data.find(b"IDAT")
    return at + 4, struct.unpack(">I", data[at - 4 : at])[0]


def _with_damaged_idat(data: bytes) -> bytes:
    """One bit of the image data flipped, the chunk's CRC left as it was."""
    start, length = _idat(data)
    damaged = bytearray(data)
    damaged[start + length // 2] ^= 0x01
    return bytes(damaged)


def _with_wrong_adler() -> bytes:
    """The zlib stream's Adler-32 (the last 4 bytes of the image data) changed, and the
    chunk's CRC made to match again: only the inflate to the end can tell."""
    damaged = bytearray(_png((100, 80)))  # one IDAT chunk holds all of it
    assert damaged.count(b"IDAT") == 1
    start, length = _idat(bytes(damaged))
    damaged[start + length - 1] ^= 0x01
    crc = zlib.crc32(bytes(damaged[start - 4 : start + length]))
    damaged[start + length : start + length + 4] = struct.pack(">I", crc)
    return bytes(damaged)


def _with_unknown_row_filter() -> bytes:
    """Every checksum right, but one row names a filter PNG does not have: Pillow's
    decoder raises, and only the order of the check's steps decides whether it counts
    (Pillow reads a PNG's EXIF by loading the pixels)."""
    data = _png((120, 100))  # one IDAT chunk holds all of it
    assert data.count(b"IDAT") == 1
    start, length = _idat(data)
    raw = bytearray(zlib.decompress(data[start : start + length]))
    raw[(1 + 120 * 3) * 50] = 9  # the filter byte of row 50: filters are 0 to 4
    body = b"IDAT" + zlib.compress(bytes(raw))
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return data[: start - 8] + chunk + data[start + length + 4 :]


def _jpeg_tiff() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((300, 300), 60).convert("RGB").save(out, "TIFF", compression="jpeg")
    return out.getvalue()


# -- PNG ---------------------------------------------------------------------------


def test_a_png_with_damaged_image_data_fails_the_full_check() -> None:
    bad = _with_damaged_idat(_png())
    probe_image(bad)  # the cheap check before the ack sees nothing wrong
    result = check_and_render(bad)
    assert result.fault == "damaged PNG: CRC mismatch in chunk b'IDAT' at byte 33"
    assert not result.thumbnail


def test_a_png_whose_zlib_checksum_is_wrong_fails_the_full_check() -> None:
    bad = _with_wrong_adler()
    result = check_and_render(bad)
    assert result.fault == (
        "damaged PNG: image data does not inflate: Error -3 while decompressing data: "
        "incorrect data check"
    )


def test_a_png_whose_decode_fails_fails_the_full_check() -> None:
    result = check_and_render(_with_unknown_row_filter())
    assert result.fault == (
        "damaged image, full decode failed: unrecognized data stream contents when "
        "reading image file"
    )


@pytest.mark.parametrize(
    ("size", "mode"), [((1200, 900), "RGB"), ((640, 480), "L"), ((300, 200), "RGBA")]
)
def test_intact_pngs_pass_the_full_check(size: tuple[int, int], mode: str) -> None:
    data = _png(size, mode)
    result = check_and_render(data)
    assert result.ok, result.fault
    assert Image.open(io.BytesIO(result.thumbnail)).size[0] == min(size[0], THUMBNAIL_SIDE)


async def test_a_damaged_png_is_acknowledged_then_refused_at_submit(
    server: RunningServer,
) -> None:
    bad = _with_damaged_idat(_png())
    async with server.teller() as teller:
        ref = await teller.upload_image("ID_FRONT", bad)  # acknowledged: the probe passes
        checker = server.runtime.center.images
        assert checker is not None
        verdict = await checker.verdict(ref.sha256)
        assert verdict == "damaged PNG: CRC mismatch in chunk b'IDAT' at byte 33"
        message = request_with_front(ref.sha256)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await teller.submit(message)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    refusal = refusal_of(refused.value)
    assert refusal is not None
    assert refusal.reason == "INVALID_FIELD"
    assert refusal.metadata == {"field": "images[2]"}
    assert ref.sha256 in (refused.value.details() or "")
    assert verdict in (refused.value.details() or "")


async def test_a_damaged_png_stored_unchecked_goes_back_to_the_teller(
    server: RunningServer,
) -> None:
    sha = await store_unchecked(server, _with_damaged_idat(_png()), "image/png")
    async with server.teller() as teller, server.authorizer() as authorizer:
        bad_id = (await teller.submit(request_with_front(sha))).request.request_id
        good_id = (await teller.submit(request())).request.request_id
        assert (await authorizer.next(timeout=10)).request.request_id == good_id
        view = await teller.get(bad_id)
    assert view.state == cpb.REQUEST_STATE_NEEDS_SUPPLEMENT
    last = view.history[-1]
    assert (last.event, last.actor) == ("SUPPLEMENT_REQUESTED", "system")
    assert list(last.requested_kinds) == [kind_value("ID_FRONT")]
    assert "damaged PNG: CRC mismatch in chunk b'IDAT'" in last.note


# -- JPEG-compressed TIFF ----------------------------------------------------------


async def test_a_jpeg_compressed_tiff_is_refused_at_the_upload(server: RunningServer) -> None:
    async with server.teller() as teller:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await teller.upload_image("ID_FRONT", _jpeg_tiff())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    field = "image (ID_FRONT)"
    assert refusal_of(refused.value) == Refusal(
        "INVALID_FIELD", {"field": field}, (FieldViolation(field, TIFF_JPEG_REFUSED),)
    )
    assert refused.value.details() == f"{field}: {TIFF_JPEG_REFUSED}"


def test_a_jpeg_compressed_tiff_fails_the_full_check_too() -> None:
    """One stored without the probe (before it refused them) is not vouched for."""
    result = check_and_render(_jpeg_tiff())
    assert result.fault == TIFF_JPEG_REFUSED
    assert not result.thumbnail


# -- renditions after the blob GC --------------------------------------------------


async def test_an_image_uploaded_again_after_the_blob_gc_is_rendered_again(
    server: RunningServer,
) -> None:
    runtime = server.runtime
    blobs = runtime.center.blobs
    checker = runtime.center.images
    assert checker is not None
    capture = images("OTHER", seed=32)
    ((_kind, data),) = capture
    async with server.teller() as teller:
        (first,) = await teller.upload_images(capture)
    assert await checker.verdict(first.sha256) == OK
    assert await blobs.get_rendition(first.sha256, "thumbnail")
    # What the blob GC does (server/archive/blob_gc.py, in the archive's process): the
    # hash first, then the bytes and their renditions.
    await runtime.client.delete(runtime.store.keys.blob(first.sha256))
    await blobs.delete(first.sha256)
    async with server.teller() as teller, server.authorizer() as authorizer:
        reply = await teller.submit(request(), capture)  # the same bytes, sent again
        rid = reply.request.request_id
        assert first.sha256 in [i.sha256 for i in reply.request.images]
        offer = await authorizer.next(timeout=10)
        assert offer.request.request_id == rid
        thumbnail = await authorizer.image(rid, first.sha256, "thumbnail")
    assert max(Image.open(io.BytesIO(thumbnail)).size) == THUMBNAIL_SIDE
    assert await blobs.get_rendition(first.sha256, "thumbnail")
    assert await runtime.client.hget(runtime.store.keys.blob(first.sha256), "ck") == b"OK"
    assert await blobs.get(first.sha256) == data
