"""The full check of an uploaded image and the renditions an authorizer looks at.

Runs in worker processes (server/images/checker.py), never on the event loop: a full
decode costs milliseconds per image, a hundred times the structural probe made before
the teller's acknowledgement (server/images/probe.py).

The check decodes every pixel. Pillow does not report libjpeg's recoverable errors
(corrupt or missing scan data after a valid header is silently filled with grey), so
JPEG scan data is decoded by libjpeg-turbo through simplejpeg with ``strict=True``,
which turns those warnings into errors; its DCT scaling decodes every coefficient
while producing only the pixels the preview needs (what Pillow calls draft mode).
A CMYK JPEG's scan data is read the same strict way, then Pillow makes its pixels.
The other formats are loaded by Pillow, whose decoders raise on damage, except where
they do not look: Pillow skips the CRC of PNG image data (IDAT) chunks and stops
inflating once it has the last row, so the zlib stream's Adler-32 need not be read;
here every PNG chunk's CRC is verified and the image data inflated to its end first.
A JPEG-compressed TIFF, which libtiff decodes leniently, is refused as at the upload
(server/images/probe.py) for any that did not come through it.

Renditions are re-encoded from pixels only: no EXIF, XMP, GPS, maker notes, ICC
profile or comment survives, and the EXIF orientation is applied first, so what an
authorizer sees is upright and says nothing about the device or the place. One
exception keeps that promise more cheaply: a JPEG already upright and no larger than
a preview is its own preview, minus its metadata (``bare_preview``, made when it is
viewed: stripping costs a tenth of a millisecond, storing a copy would cost a file
and its fsync per upload and double the blob store), and is decoded only at the
thumbnail's scale (the check still reads every coefficient)."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import Final

import simplejpeg
from PIL import Image

from server.images.jpeg_bare import without_metadata
from server.images.probe import (
    DEFAULT_LIMITS,
    TIFF_JPEG_REFUSED,
    ImageLimits,
    is_jpeg_compressed_tiff,
)

__all__ = [
    "PREVIEW_SIDE",
    "THUMBNAIL_SIDE",
    "CheckResult",
    "bare_preview",
    "check_and_render",
]

PREVIEW_SIDE: Final = 1600
THUMBNAIL_SIDE: Final = 320
_PREVIEW_QUALITY: Final = 85
_THUMBNAIL_QUALITY: Final = 80

_PNG_SIGNATURE_SIZE: Final = 8
# Inflated image data is read and dropped in pieces of this size: memory stays flat.
_INFLATE_PIECE: Final = 1 << 20

_EXIF_ORIENTATION: Final = 0x0112
# EXIF orientation -> what makes the picture upright (as ImageOps.exif_transpose does).
_UPRIGHT: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """``fault`` is empty when the image passed; then the thumbnail is set, and the
    preview too unless the original is its own preview (``bare_preview``)."""

    fault: str
    preview: bytes = b""
    thumbnail: bytes = b""

    @property
    def ok(self) -> bool:
        return not self.fault


class _Damaged(Exception):
    pass


def check_and_render(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> CheckResult:
    """Fully decodes ``data``; returns the fault in plain words, or the renditions."""
    try:
        upright, bare = _decode_upright(data, limits)
        if bare:
            thumbnail = _fit_thumbnail(upright)
            return CheckResult(fault="", thumbnail=_jpeg(thumbnail, _THUMBNAIL_QUALITY))
        preview = _fit_preview(upright)
        thumbnail = _fit_thumbnail(preview)
        return CheckResult(
            fault="",
            preview=_jpeg(preview, _PREVIEW_QUALITY),
            thumbnail=_jpeg(thumbnail, _THUMBNAIL_QUALITY),
        )
    except _Damaged as exc:
        return CheckResult(fault=str(exc))


def bare_preview(data: bytes) -> bytes | None:
    """The preview of an image that passed the check when it is the original itself
    without its metadata (an upright JPEG no larger than a preview); None when the
    preview is a rendition of its own."""
    try:
        with Image.open(io.BytesIO(data)) as header:
            return _bare_if_fit(header, data)
    except Exception:
        return None


def _bare_if_fit(header: Image.Image, data: bytes) -> bytes | None:
    fits = (
        header.format in ("JPEG", "MPO")
        and header.mode in ("RGB", "L")
        and max(header.size) <= PREVIEW_SIDE
        and _orientation(header) == 1
    )
    return _bare(data) if fits else None


def _decode_upright(data: bytes, limits: ImageLimits) -> tuple[Image.Image, bool]:
    """The picture upright, and whether the original is its own preview (then the
    picture is decoded at the thumbnail's scale only)."""
    # Pillow's bomb guard follows our limit; its warning band (half the hard limit)
    # becomes an error too, so nothing between the two slips through.
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    bare = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                fmt = header.format or "?"
                if fmt in ("JPEG", "MPO") and header.mode in ("RGB", "L"):
                    orientation = _orientation(header)
                    bare = _bare_if_fit(header, data) is not None
                    side = THUMBNAIL_SIDE if bare else PREVIEW_SIDE
                    pixels = _jpeg_pixels(data, header.size, header.mode, side)
                else:
                    if fmt in ("JPEG", "MPO") and header.mode == "CMYK":
                        _strict_scan(data)
                    elif fmt == "PNG":
                        _check_png_checksums(data, header.size)
                    elif fmt == "TIFF" and is_jpeg_compressed_tiff(header):
                        raise _Damaged(TIFF_JPEG_REFUSED)
                    header.load()
                    # Only now: Pillow reads a PNG's EXIF by loading the pixels, and a
                    # decode error there would be swallowed (_orientation), leaving
                    # what was decoded for load() to take as done.
                    orientation = _orientation(header)
                    pixels = _rgb(header)
    except _Damaged:
        raise
    except Image.DecompressionBombError as exc:
        raise _Damaged(f"decompression bomb: {exc}") from None
    except Exception as exc:
        # Pillow's decoders raise a zoo of types (OSError, SyntaxError, ValueError, ...).
        raise _Damaged(f"damaged image, full decode failed: {exc or type(exc).__name__}") from None
    transpose = _UPRIGHT.get(orientation)
    return (pixels.transpose(transpose) if transpose is not None else pixels), bare


def _bare(data: bytes) -> bytes | None:
    bare = without_metadata(data)
    if bare is None:
        return None
    # The strict decode that follows vouches for the original's scan data; this
    # vouches that the bare copy still describes the same picture.
    try:
        same = simplejpeg.decode_jpeg_header(bare) == simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return bare if same else None


def _orientation(header: Image.Image) -> int:
    try:
        return int(header.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:
        return 1  # unreadable EXIF is no reason to refuse the picture itself


def _jpeg_pixels(data: bytes, size: tuple[int, int], mode: str, side: int) -> Image.Image:
    width, height = size
    # The smallest DCT scale whose result still covers the long side wanted.
    wanted_w, wanted_h = (min(width, side), 0) if width >= height else (0, min(height, side))
    colorspace = "GRAY" if mode == "L" else "RGB"
    try:
        array = simplejpeg.decode_jpeg(
            data, colorspace=colorspace, min_width=wanted_w, min_height=wanted_h, strict=True
        )
    except ValueError as exc:
        raise _Damaged(f"damaged JPEG: {exc}") from None
    if mode == "L":
        array = array[:, :, 0]
    image = Image.fromarray(array)
    return image if image.mode == "RGB" else image.convert("RGB")


def _strict_scan(data: bytes) -> None:
    """Reads every coefficient of a CMYK JPEG strictly, at the smallest DCT scale, and
    throws the pixels away: Pillow decodes these (libjpeg's colour conversion of Adobe
    CMYK is its), but fills damaged scan data with grey without a word."""
    try:
        simplejpeg.decode_jpeg(data, colorspace="CMYK", min_width=1, min_height=1, strict=True)
    except ValueError as exc:
        raise _Damaged(f"damaged JPEG: {exc}") from None


def _check_png_checksums(data: bytes, size: tuple[int, int]) -> None:
    """Verifies the CRC of every chunk up to IEND, and inflates the image data (the
    IDAT chunks joined) to the end of its zlib stream, whose Adler-32 zlib checks
    there. Both cost about what Pillow's own inflate does (zlib.crc32 runs at
    gigabytes a second)."""
    view = memoryview(data)
    at = _PNG_SIGNATURE_SIZE
    idat: list[memoryview] = []
    while True:
        if at + 12 > len(data):
            raise _Damaged("damaged PNG: a chunk runs past the end of the file")
        (length,) = struct.unpack_from(">I", data, at)
        kind = bytes(view[at + 4 : at + 8])
        end = at + 8 + length
        if end + 4 > len(data):
            raise _Damaged(f"damaged PNG: chunk {kind!r} runs past the end of the file")
        (crc,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(view[at + 4 : end]) != crc:
            raise _Damaged(f"damaged PNG: CRC mismatch in chunk {kind!r} at byte {at}")
        if kind == b"IDAT":
            idat.append(view[at + 8 : end])
        if kind == b"IEND":
            break
        at = end + 4
    _inflate_to_the_end(idat, size)


def _inflate_to_the_end(pieces: list[memoryview], size: tuple[int, int]) -> None:
    width, height = size
    # 8 bytes a pixel (16-bit RGBA, the most PNG stores) and a filter byte per row of
    # each interlace pass: a stream inflating to more is damaged, or a bomb.
    bound = (8 * width + 4) * height + 64
    inflater = zlib.decompressobj()
    total = 0
    try:
        for piece in pieces:
            pending: bytes | memoryview = piece
            while pending and not inflater.eof:
                total += len(inflater.decompress(pending, _INFLATE_PIECE))
                if total > bound:
                    raise _Damaged("damaged PNG: image data inflates to more than it declares")
                pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise _Damaged(f"damaged PNG: image data does not inflate: {exc}") from None
    if not inflater.eof:
        raise _Damaged("damaged PNG: image data ends before its zlib stream does")


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas of a scan are paper: show them white, not black.
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _fit_preview(image: Image.Image) -> Image.Image:
    """The preview: Lanczos, after a box reduction by the whole factor (half the CPU of
    a gap of 2.0, and within 51 dB PSNR of a plain Lanczos resize on the bench's
    captures: no visible difference)."""
    return _scaled(image, PREVIEW_SIDE, Image.Resampling.LANCZOS)


def _fit_thumbnail(image: Image.Image) -> Image.Image:
    """The thumbnail: its source is already low-passed (decoded at a DCT scale, or a
    preview box-reduced here first), so what is left is a step of less than 2x, for
    which bicubic is as faithful as Lanczos at three quarters of its CPU. Against a
    Lanczos resize of the full-size picture: 43.3-46.6 dB PSNR bicubic, 43.3-46.7
    Lanczos on the bench's captures; 23.8 and 25.2 dB bicubic, 23.4 and 25.3 Lanczos
    on pages of dense small print (tests/test_image_pipeline.py). The resize took
    1.4-1.6 ms of the check instead of 2.0-2.2."""
    return _scaled(image, THUMBNAIL_SIDE, Image.Resampling.BICUBIC)


def _scaled(image: Image.Image, side: int, resample: Image.Resampling) -> Image.Image:
    if max(image.size) <= side:
        return image
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, resample, reducing_gap=1.0)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    # Nothing of the original's metadata is kept: the images here are this module's
    # own (decoded, turned, scaled), their info is dropped and none is passed to the
    # encoder. No Huffman optimization: a few per cent smaller is not worth a second
    # pass over every preview.
    image.info.clear()
    image.save(out, "JPEG", quality=quality, exif=b"")
    return out.getvalue()
