"""A capture small enough and upright is its own preview, minus its metadata: the same
pixels, nothing that names the device, the place or the person, nothing after the
picture. What the parser does not follow is re-encoded instead (None)."""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Callable

import pytest
from PIL import Image

from server.images.jpeg_bare import without_metadata
from server.images.renditions import (
    PREVIEW_SIDE,
    THUMBNAIL_SIDE,
    bare_preview,
    check_and_render,
)

_GPS_IFD, _MAKE, _ORIENTATION = 0x8825, 0x010F, 0x0112
_XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description creator="Jane Teller"/></x:xmpmeta>'
_SCAN_HEADER = b"\x01\x01\x00\x00\x3f\x00"  # one component, tables 0/0, all coefficients
_ICC = b"\x00\x00\x02\x0cICC-profile-of-CameraCorp-unit-77" + bytes(64)


def scene(size: tuple[int, int] = (640, 480), mode: str = "RGB") -> Image.Image:
    """Something with edges and colour in every block, so equal pixels mean something."""
    img = Image.radial_gradient("L").resize(size).convert(mode)
    if mode == "RGB":
        r, g, b = img.split()
        img = Image.merge("RGB", (r, g.transpose(Image.Transpose.FLIP_LEFT_RIGHT), b.rotate(90)))
    return img


def capture(img: Image.Image | None = None, /, **save: object) -> bytes:
    """A JPEG carrying every kind of metadata a camera or an app leaves in one."""
    img = img if img is not None else scene()
    exif = Image.Exif()
    exif[_MAKE] = "CameraCorp"
    exif[_ORIENTATION] = 1
    exif[_GPS_IFD] = {1: "N", 2: (39.0, 54.0, 27.0), 3: "E", 4: (116.0, 23.0, 5.0)}
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, exif=exif, icc_profile=_ICC, comment=b"shot at branch 0042",
             xmp=_XMP, **save)  # fmt: skip
    return out.getvalue()


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", 2 + len(payload)) + payload


def after_soi(data: bytes, *segments: bytes) -> bytes:
    return data[:2] + b"".join(segments) + data[2:]


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        return img.tobytes()


def markers(data: bytes) -> list[int]:
    """The markers before the first scan."""
    found, pos = [], 2
    while data[pos + 1] != 0xDA:
        found.append(data[pos + 1])
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return found


@pytest.mark.parametrize(
    "save",
    [{}, {"progressive": True}, {"restart_marker_blocks": 4}, {"subsampling": 0}],
    ids=["baseline", "progressive", "restart intervals", "4:4:4"],
)
def test_the_bare_copy_has_the_same_pixels_and_none_of_the_metadata(
    save: dict[str, object],
) -> None:
    original = capture(**save)
    for leak in (b"CameraCorp", b"Jane Teller", b"CameraCorp-unit-77", b"branch 0042"):
        assert leak in original  # the test's capture does carry them
    bare = without_metadata(original)
    assert bare is not None
    assert pixels(bare) == pixels(original)
    for leak in (b"CameraCorp", b"Jane Teller", b"CameraCorp-unit-77", b"branch 0042", b"Exif"):
        assert leak not in bare
    assert not set(markers(bare)) & ({*range(0xE1, 0xF0)} - {0xEE} | {0xFE})
    assert len(bare) < len(original)


def test_grayscale_is_passed_through() -> None:
    original = capture(scene(mode="L"))
    bare = without_metadata(original)
    assert bare is not None
    assert pixels(bare) == pixels(original)


def test_a_jfif_thumbnail_and_a_jfxx_extension_are_dropped() -> None:
    original = capture()
    app0 = original.find(b"\xff\xe0")
    assert original[app0 + 4 : app0 + 9] == b"JFIF\x00"
    # A 2x1 RGB thumbnail inside the JFIF header, and a JFXX extension holding another.
    jfif = b"JFIF\x00\x01\x02\x01\x00\x48\x00\x48\x02\x01" + b"\x11\x22\x33\x44\x55\x66"
    jfxx = b"JFXX\x00\x13" + bytes([2, 1]) + b"\x77\x88\x99\xaa\xbb\xcc"
    rest = original[app0 + 2 + int.from_bytes(original[app0 + 2 : app0 + 4], "big") :]
    crafted = original[:2] + segment(0xE0, jfif) + segment(0xE0, jfxx) + rest
    bare = without_metadata(crafted)
    assert bare is not None
    assert bare.count(b"\xff\xe0") == 1
    # Version, unit and densities kept; the thumbnail's size zeroed, its bytes gone.
    assert bare[2:20] == b"\xff\xe0\x00\x10JFIF\x00\x01\x02\x01\x00\x48\x00\x48\x00\x00"
    assert b"\x11\x22\x33" not in bare
    assert b"JFXX" not in bare
    assert pixels(bare) == pixels(original)


def test_the_adobe_colour_transform_segment_is_kept() -> None:
    adobe = segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01")
    bare = without_metadata(after_soi(capture(), adobe))
    assert bare is not None
    assert adobe in bare


def test_nothing_after_the_end_of_the_picture_survives() -> None:
    original = capture()
    second = capture(scene((64, 48)))  # as an MPO's second picture, or an appended file
    bare = without_metadata(original + second + b"PK\x03\x04 appended archive")
    assert bare is not None
    assert bare.endswith(b"\xff\xd9")
    assert b"PK\x03\x04" not in bare
    assert bare == without_metadata(original)


def _patched_frame(data: bytes, marker: int | None = None, precision: int | None = None) -> bytes:
    sof = data.find(b"\xff\xc0")
    out = bytearray(data)
    if marker is not None:
        out[sof + 1] = marker
    if precision is not None:
        out[sof + 4] = precision
    return bytes(out)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("arithmetic coding", lambda d: _patched_frame(d, marker=0xC9)),
        ("lossless", lambda d: _patched_frame(d, marker=0xC3)),
        ("12-bit samples", lambda d: _patched_frame(d, precision=12)),
        ("not a JPEG", lambda d: b"\x89PNG\r\n\x1a\n" + d[2:]),
        ("cut inside a header", lambda d: d[: d.find(b"\xff\xc4") + 10]),
        ("no end of image", lambda d: d[:-2]),
        ("a segment longer than the file", lambda d: after_soi(d, b"\xff\xe1\xff\xff")),
        ("a scan before any frame", lambda d: after_soi(d, segment(0xDA, _SCAN_HEADER))),
        ("a restart marker out of place", lambda d: after_soi(d, b"\xff\xd0")),
        ("a number-of-lines marker", lambda d: after_soi(d, segment(0xDC, b"\x01\xe0"))),
    ],
)
def test_what_it_does_not_follow_is_left_to_the_re_encoding(
    name: str, make: Callable[[bytes], bytes]
) -> None:
    assert without_metadata(make(capture())) is None, name


def test_an_upright_capture_within_the_preview_size_is_its_own_preview() -> None:
    original = capture(scene((1500, 1100)))
    result = check_and_render(original)
    assert result.ok, result.fault
    assert result.preview == b""  # nothing to store: made when viewed
    preview = bare_preview(original)
    assert preview is not None
    assert preview == without_metadata(original)
    assert pixels(preview) == pixels(original)
    with Image.open(io.BytesIO(result.thumbnail)) as thumbnail:
        assert thumbnail.size == (THUMBNAIL_SIDE, 235)
        assert not thumbnail.getexif()


@pytest.mark.parametrize(
    ("size", "orientation"),
    [((PREVIEW_SIDE + 100, 1000), 1), ((1200, 900), 6), ((1200, 900), 3)],
    ids=["larger than a preview", "sideways", "upside down"],
)
def test_a_capture_that_must_be_scaled_or_turned_is_re_encoded(
    size: tuple[int, int], orientation: int
) -> None:
    img = scene(size)
    exif = Image.Exif()
    exif[_ORIENTATION] = orientation
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, exif=exif)
    result = check_and_render(out.getvalue())
    assert result.ok, result.fault
    assert bare_preview(out.getvalue()) is None
    with Image.open(io.BytesIO(result.preview)) as preview:
        upright = size if orientation in (1, 3) else size[::-1]
        assert max(preview.size) == min(max(upright), PREVIEW_SIDE)
        assert (preview.width > preview.height) == (upright[0] > upright[1])
        assert not preview.getexif()


def test_damaged_bytes_never_raise() -> None:
    original = capture(progressive=True)
    rng = random.Random(7)
    for _ in range(300):
        damaged = bytearray(original[: rng.randrange(len(original) + 1)])
        for _ in range(rng.randrange(4)):
            if damaged:
                damaged[rng.randrange(len(damaged))] = rng.choice((0xFF, 0x00, 0xD9, 0xDA, 0xC0))
        result = without_metadata(bytes(damaged))
        assert result is None or result.startswith(b"\xff\xd8\xff")
