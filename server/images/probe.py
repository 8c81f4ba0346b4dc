"""Cheap structural check of an uploaded image.

The probe runs before a teller's request is acknowledged, so it must stay far below a
millisecond for a typical capture: it never decodes pixel data. It sniffs the magic bytes,
checks the container for signs of truncation at byte level, and lets Pillow parse only the
header (``Image.open`` is lazy) to learn the format and the declared dimensions. A
JPEG-compressed TIFF is refused here, by its header: libtiff decodes its scan data
leniently, so the full check (server/images/renditions.py) could not vouch for it.

Dimensions are reported as stored; EXIF orientation is not applied, which does not matter
for the limits checked here because they treat both sides alike.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import Final

from PIL import Image, UnidentifiedImageError

__all__ = [
    "DEFAULT_LIMITS",
    "TIFF_JPEG_REFUSED",
    "ImageInfo",
    "ImageLimits",
    "ImageRejected",
    "is_jpeg_compressed_tiff",
    "probe_image",
]


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 40_000_000  # decompression-bomb guard
    min_side: int = 64
    max_side: int = 12_000


@dataclass(frozen=True, slots=True)
class ImageInfo:
    content_type: str  # "image/jpeg" | "image/png" | "image/tiff" | "image/webp"
    width: int
    height: int


class ImageRejected(ValueError):
    """The upload is not an acceptable image; the message names the fault in plain words,
    e.g. 'truncated JPEG: no end-of-image marker'."""


DEFAULT_LIMITS: Final = ImageLimits()

_NOT_ACCEPTED: Final = "not an image of an accepted format (JPEG, PNG, TIFF, WebP)"
TIFF_JPEG_REFUSED: Final = (
    "JPEG-compressed TIFF is not accepted: its scan data cannot be checked for damage; "
    "send the scan as JPEG, PNG or an uncompressed, LZW or Deflate TIFF"
)

# Some scanners and upload paths pad files with a few zeros or a newline; that is harmless.
_MAX_PADDING: Final = 32
_PADDING_BYTES: Final = b"\x00\t\n\r "

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_PNG_IEND: Final = b"\x00\x00\x00\x00IEND\xaeB`\x82"

# content type -> (name in messages, formats Pillow may report). Pillow reports
# multi-picture JPEGs (common from phone cameras) as MPO.
_FORMATS: Final = {
    "image/jpeg": ("JPEG", ("JPEG", "MPO")),
    "image/png": ("PNG", ("PNG",)),
    "image/tiff": ("TIFF", ("TIFF",)),
    "image/webp": ("WebP", ("WEBP",)),
}

_TIFF_STRIP_OFFSETS: Final = 273
_TIFF_STRIP_BYTE_COUNTS: Final = 279
_TIFF_TILE_OFFSETS: Final = 324
_TIFF_TILE_BYTE_COUNTS: Final = 325
_TIFF_COMPRESSION: Final = 259
# Old-style (6) and new-style (7) JPEG compression: libtiff decodes their scan data
# leniently (damage becomes grey or garbage without an error), and the strict decode
# of plain JPEGs (server/images/renditions.py) cannot read them.
_TIFF_JPEG_COMPRESSIONS: Final = (6, 7)


def probe_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> ImageInfo:
    """Return format and dimensions of ``data`` or raise :class:`ImageRejected`."""
    if not data:
        raise ImageRejected("empty upload: zero bytes")
    if len(data) > limits.max_bytes:
        raise ImageRejected(
            f"file too large: {len(data)} bytes exceeds the limit of {limits.max_bytes} bytes"
        )
    content_type = _sniff(data)
    if content_type == "image/jpeg":
        _check_jpeg(data)
    elif content_type == "image/png":
        _check_png(data)
    elif content_type == "image/tiff":
        _check_tiff_header(data)
    else:
        # libwebp allocates the whole canvas while Pillow merely opens the file, so the
        # declared size must be judged before Pillow ever sees it.
        _check_webp(data, limits)
    width, height = _open_header(data, content_type, limits)
    _check_dimensions(width, height, limits)
    return ImageInfo(content_type=content_type, width=width, height=height)


def _sniff(data: bytes) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(_PNG_SIGNATURE):
        return "image/png"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "image/tiff"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ImageRejected(_NOT_ACCEPTED)


def _strip_padding(data: bytes) -> bytes:
    tail = data[-(_MAX_PADDING + 16) :]
    stripped = tail.rstrip(_PADDING_BYTES)
    if len(tail) - len(stripped) > _MAX_PADDING:
        return tail  # too much slack to be padding: judge the raw end instead
    return stripped


def _check_jpeg(data: bytes) -> None:
    if not _strip_padding(data).endswith(b"\xff\xd9"):
        raise ImageRejected("truncated JPEG: no end-of-image marker")


def _check_png(data: bytes) -> None:
    if not _strip_padding(data).endswith(_PNG_IEND):
        raise ImageRejected("truncated PNG: no IEND chunk at the end")


def _check_webp(data: bytes, limits: ImageLimits) -> None:
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size + 8 != len(data):
        fault = "truncated WebP" if riff_size + 8 > len(data) else "damaged WebP"
        raise ImageRejected(
            f"{fault}: RIFF size field says {riff_size + 8} bytes but the file has {len(data)}"
        )
    size = _webp_declared_size(data)
    if size is None:
        raise ImageRejected("damaged WebP: no readable VP8/VP8L/VP8X header")
    _check_dimensions(*size, limits)


def _webp_declared_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    try:
        if chunk == b"VP8X" and len(data) >= 30:
            w = int.from_bytes(data[24:27], "little") + 1
            h = int.from_bytes(data[27:30], "little") + 1
            return w, h
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack_from("<HH", data, 26)
            return w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L" and data[20:21] == b"\x2f":
            (bits,) = struct.unpack_from("<I", data, 21)
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    except struct.error:
        return None
    return None


def _check_tiff_header(data: bytes) -> None:
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    # Classic TIFF: 8-byte header, 2-byte entry count, 12-byte entries, 4-byte next-IFD link.
    # BigTIFF widens these to 16, 8, 20 and 8.
    header, count_fmt, entry, link = (16, "Q", 20, 8) if big else (8, "H", 12, 4)
    if len(data) < header:
        raise ImageRejected("truncated TIFF: header is incomplete")
    if big:
        offset_size, _zero, ifd = struct.unpack_from(order + "HHQ", data, 4)
        if offset_size != 8:
            raise ImageRejected("damaged TIFF: unsupported BigTIFF offset size")
    else:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
    if ifd < header:
        raise ImageRejected(f"damaged TIFF: first IFD offset {ifd} points into the header")
    count_size = struct.calcsize(count_fmt)
    if ifd + count_size > len(data):
        raise ImageRejected(
            f"truncated TIFF: first IFD offset {ifd} lies outside the file ({len(data)} bytes)"
        )
    (entries,) = struct.unpack_from(order + count_fmt, data, ifd)
    if entries == 0:
        raise ImageRejected("damaged TIFF: first IFD has no entries")
    if ifd + count_size + entries * entry + link > len(data):
        raise ImageRejected("truncated TIFF: first IFD runs past the end of the file")


def _open_header(data: bytes, content_type: str, limits: ImageLimits) -> tuple[int, int]:
    label, accepted = _FORMATS[content_type]
    try:
        # Warnings are silenced because a probe answers yes or no: Pillow's warnings
        # (decompression bomb, odd metadata) would otherwise leak to callers, or become
        # exceptions under a warnings-as-errors policy. Our own limits judge the size.
        # catch_warnings touches process-wide state; the probe is synchronous and short.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=[accepted[0]]) as im:
                size = im.size
                fmt = im.format
                extents = _tiff_data_extents(im) if label == "TIFF" else None
                jpeg_tiff = label == "TIFF" and is_jpeg_compressed_tiff(im)
    except Image.DecompressionBombError as exc:
        # Pillow's own hard limit (2 * MAX_IMAGE_PIXELS) fired before we saw the size.
        raise ImageRejected(
            f"decompression bomb: declared dimensions exceed the limit of {limits.max_pixels} "
            "pixels"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected(f"damaged {label}: the header cannot be parsed") from exc
    except Exception as exc:
        # Pillow raises a zoo of types on garbage (SyntaxError, OSError, struct.error,
        # IndexError, ...); callers need exactly one.
        raise ImageRejected(f"damaged {label}: {exc or type(exc).__name__}") from exc
    if fmt not in accepted:
        raise ImageRejected(_NOT_ACCEPTED)
    if jpeg_tiff:
        raise ImageRejected(TIFF_JPEG_REFUSED)
    if extents is not None and extents > len(data):
        raise ImageRejected("truncated TIFF: image data runs past the end of the file")
    return size


def is_jpeg_compressed_tiff(im: Image.Image) -> bool:
    """Whether a TIFF's first image is JPEG-compressed (a header tag: no decoding)."""
    tags = getattr(im, "tag_v2", None)
    return tags is not None and tags.get(_TIFF_COMPRESSION) in _TIFF_JPEG_COMPRESSIONS


def _tiff_data_extents(im: Image.Image) -> int | None:
    """End of the last strip or tile, as declared in the first IFD (cheap: no decoding)."""
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return None
    for offsets_tag, counts_tag in (
        (_TIFF_STRIP_OFFSETS, _TIFF_STRIP_BYTE_COUNTS),
        (_TIFF_TILE_OFFSETS, _TIFF_TILE_BYTE_COUNTS),
    ):
        offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
        if offsets is None or counts is None:
            continue
        offsets = offsets if isinstance(offsets, tuple) else (offsets,)
        counts = counts if isinstance(counts, tuple) else (counts,)
        return max((int(o) + int(c) for o, c in zip(offsets, counts, strict=False)), default=0)
    return None


def _check_dimensions(width: int, height: int, limits: ImageLimits) -> None:
    # The pixel count goes first: a bomb is the more telling diagnosis than a long side.
    if width * height > limits.max_pixels:
        raise ImageRejected(
            f"decompression bomb: {width}x{height} = {width * height} pixels exceeds "
            f"the limit of {limits.max_pixels} pixels"
        )
    if min(width, height) < limits.min_side:
        raise ImageRejected(
            f"image too small: {width}x{height} pixels, each side must be at least "
            f"{limits.min_side}"
        )
    if max(width, height) > limits.max_side:
        raise ImageRejected(
            f"image too large: {width}x{height} pixels, no side may exceed {limits.max_side}"
        )
