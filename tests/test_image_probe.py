"""Tests for the cheap structural image probe run before a request is acknowledged."""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from server.images.probe import ImageInfo, ImageLimits, ImageRejected, probe_image


def _encode(fmt: str, size: tuple[int, int] = (200, 150), mode: str = "RGB", **opts: Any) -> bytes:
    rnd = random.Random(f"{fmt}{size}{mode}")
    img = Image.new(mode, size)
    if mode in ("RGB", "RGBA"):
        # Some texture, so encoders produce realistic multi-block streams.
        raw = rnd.randbytes(size[0] * size[1] * len(mode))
        img = Image.frombytes(mode, size, raw)
    out = io.BytesIO()
    img.save(out, fmt, **opts)
    return out.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width: int, height: int) -> bytes:
    """A structurally complete PNG whose header declares any size, at almost no cost."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _webp_vp8x_claiming(width: int, height: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4
    body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _reject(data: bytes, limits: ImageLimits | None = None) -> str:
    with pytest.raises(ImageRejected) as info:
        probe_image(data) if limits is None else probe_image(data, limits)
    return str(info.value)


@pytest.mark.parametrize(
    ("fmt", "mode", "opts", "content_type"),
    [
        ("JPEG", "RGB", {"quality": 85}, "image/jpeg"),
        ("JPEG", "L", {}, "image/jpeg"),
        ("PNG", "RGB", {}, "image/png"),
        ("PNG", "RGBA", {}, "image/png"),
        ("TIFF", "RGB", {}, "image/tiff"),
        ("TIFF", "RGB", {"compression": "tiff_lzw"}, "image/tiff"),
        ("WEBP", "RGB", {"quality": 80}, "image/webp"),  # VP8 (lossy)
        ("WEBP", "RGB", {"lossless": True}, "image/webp"),  # VP8L
        ("WEBP", "RGBA", {"quality": 80}, "image/webp"),  # VP8X with alpha
    ],
)
def test_accepted_formats_report_type_and_size(
    fmt: str, mode: str, opts: dict[str, Any], content_type: str
) -> None:
    info = probe_image(_encode(fmt, (200, 150), mode, **opts))
    assert info == ImageInfo(content_type=content_type, width=200, height=150)


@pytest.mark.parametrize("padding", [b"\x00" * 7, b"\n", b"\r\n", b"  \x00"])
def test_jpeg_with_a_little_trailing_padding_is_accepted(padding: bytes) -> None:
    assert probe_image(_encode("JPEG") + padding).content_type == "image/jpeg"


def test_empty_upload() -> None:
    assert "empty" in _reject(b"")


def test_over_byte_limit() -> None:
    data = _encode("PNG")
    message = _reject(data, ImageLimits(max_bytes=len(data) - 1))
    assert "too large" in message
    assert str(len(data)) in message


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "PDF", "ICO"])
def test_other_image_formats_are_not_accepted(fmt: str) -> None:
    assert "accepted format" in _reject(_encode(fmt, (64, 64)))


@pytest.mark.parametrize(
    "data",
    [
        random.Random(1).randbytes(5000),
        b"hello world",
        b"%PDF-1.7\n",
        b"RIFF\x04\x00\x00\x00WAVE",
        b"\x89PN",
    ],
)
def test_random_bytes_are_not_an_image(data: bytes) -> None:
    assert "accepted format" in _reject(data)


def test_truncated_jpeg() -> None:
    assert "truncated JPEG" in _reject(_encode("JPEG")[:-100])


def test_jpeg_with_long_trailing_garbage_counts_as_truncated() -> None:
    assert "truncated JPEG" in _reject(_encode("JPEG") + b"\x00" * 500)


def test_truncated_png() -> None:
    message = _reject(_encode("PNG")[:-100])
    assert "truncated PNG" in message
    assert "IEND" in message


def test_webp_with_wrong_riff_size() -> None:
    data = bytearray(_encode("WEBP"))
    (size,) = struct.unpack_from("<I", data, 4)
    struct.pack_into("<I", data, 4, size + 10)
    assert "RIFF size" in _reject(bytes(data))


def test_truncated_webp() -> None:
    message = _reject(_encode("WEBP")[:-50])
    assert "truncated WebP" in message


def test_truncated_tiff_strip_data() -> None:
    assert "truncated TIFF" in _reject(_encode("TIFF")[:-1000])


def test_tiff_with_first_ifd_outside_the_file() -> None:
    data = bytearray(_encode("TIFF"))
    struct.pack_into("<I", data, 4, len(data) + 100)
    message = _reject(bytes(data))
    assert "truncated TIFF" in message
    assert "outside" in message


def test_tiff_header_only() -> None:
    assert "TIFF" in _reject(b"II*\x00\x08\x00")


def test_side_below_minimum() -> None:
    assert "too small" in _reject(_encode("PNG", (50, 40)))


def test_side_above_maximum() -> None:
    # One bit per pixel of a single colour keeps a 13000-pixel-wide PNG tiny.
    wide = _encode("PNG", (13_000, 64), mode="1")
    assert "too large" in _reject(wide)
    assert "too large" in _reject(_encode("PNG", (200, 150)), ImageLimits(max_side=180))


@pytest.mark.parametrize(
    "make",
    [
        lambda: _png_claiming(50_000, 50_000),  # beyond Pillow's own hard limit: it raises
        lambda: _png_claiming(10_000, 10_000),  # between Pillow's warning and error limits
        lambda: _png_claiming(7_000, 7_000),  # only our stricter limit catches this one
        lambda: _encode("PNG", (9_000, 5_000), mode="1"),  # a real file, small on disk
        lambda: _webp_vp8x_claiming(16_000, 16_000),  # judged before libwebp allocates
    ],
    ids=["png-huge", "png-pillow-warns", "png-over-our-limit", "png-real", "webp-vp8x"],
)
def test_decompression_bomb(make: Callable[[], bytes]) -> None:
    data = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        message = _reject(data)
    assert "decompression bomb" in message


def test_bomb_check_honours_custom_pixel_limit() -> None:
    assert "decompression bomb" in _reject(_encode("PNG"), ImageLimits(max_pixels=200 * 149))


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff" + random.Random(2).randbytes(3000) + b"\xff\xd9",
        b"\x89PNG\r\n\x1a\n" + random.Random(3).randbytes(300) + b"\x00\x00\x00\x00IEND\xaeB`\x82",
        b"II*\x00\x08\x00\x00\x00\x01\x00" + random.Random(4).randbytes(300),
        b"MM\x00*\x00\x00\x00\x08\x00\x01" + random.Random(5).randbytes(300),
        b"RIFF\x0c\x00\x00\x00WEBPVP8 \x00\x00\x00\x00",
    ],
)
def test_garbage_behind_valid_magic_is_rejected(data: bytes) -> None:
    _reject(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP"])
def test_mutated_files_never_raise_anything_but_rejection(fmt: str) -> None:
    original = _encode(fmt, (96, 80))
    rnd = random.Random(fmt)
    for _ in range(300):
        data = bytearray(original)
        # Headers hold the structure a probe reads, so damage concentrates there.
        for _ in range(rnd.randint(1, 6)):
            data[rnd.randrange(min(len(data), 200))] = rnd.randrange(256)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                info = probe_image(bytes(data))
            except ImageRejected:
                continue
        assert info.content_type.startswith("image/")
