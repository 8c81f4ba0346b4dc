"""A JPEG's own compressed picture without its metadata, for a preview that needs
no re-encoding.

A capture already small enough to preview and already upright is shown as taken:
the same quantization tables, Huffman tables and scan data, so the same pixels, minus
every segment that can describe the device, the place or the person (EXIF, XMP, ICC,
maker notes, comments, JFIF thumbnails) and anything after the end of the image (an
MPO's second picture, appended files). Re-encoding it instead would cost two thirds
of the full check's CPU and lose quality for nothing.

Only what every viewer decodes is passed through: baseline, extended or progressive
Huffman coding with 8-bit samples. Anything else (arithmetic coding, lossless,
hierarchical, 12-bit, an unknown marker, a structure this parser does not follow)
gets ``None`` and is re-encoded from pixels as before."""

from __future__ import annotations

import re
from typing import Final

_SOI: Final = b"\xff\xd8"
_EOI: Final = b"\xff\xd9"
_SOS: Final = 0xDA
# Start-of-frame markers of the Huffman-coded modes every decoder supports.
_PLAIN_FRAMES: Final = frozenset({0xC0, 0xC1, 0xC2})
# Tables and restart intervals, needed to decode the scans, carry no metadata.
_TABLES: Final = frozenset({0xC4, 0xDB, 0xDD})
_APP0: Final = 0xE0
_APP14: Final = 0xEE
_APPS: Final = frozenset(range(0xE0, 0xF0))
_COM: Final = 0xFE
# The end of a scan's entropy-coded data: 0xFF not followed by a stuffed zero or a
# restart marker (fill bytes 0xFF before a marker end it too).
_SCAN_END: Final = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def without_metadata(data: bytes) -> bytes | None:
    """``data`` with only the segments needed to decode it, or None (see above)."""
    if not data.startswith(_SOI):
        return None
    kept = [_SOI]
    pos = 2
    frame = False
    jfif = False
    while True:
        # A marker, after any number of fill bytes.
        if pos >= len(data) or data[pos] != 0xFF:
            return None
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1
        if pos >= len(data):
            return None
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            kept.append(_EOI)
            return b"".join(kept) if frame else None
        if pos + 2 > len(data):
            return None
        length = int.from_bytes(data[pos : pos + 2], "big")
        end = pos + length
        if length < 2 or end > len(data):
            return None
        payload = data[pos + 2 : end]
        if marker in _PLAIN_FRAMES:
            if not payload or payload[0] != 8:
                return None  # 12-bit samples
            frame = True
            kept.append(data[pos - 2 : end])
        elif marker in _TABLES:
            kept.append(data[pos - 2 : end])
        elif marker == _SOS:
            if not frame:
                return None
            scan = _SCAN_END.search(data, end)
            if scan is None:
                return None
            kept.append(data[pos - 2 : scan.start()])
            end = scan.start()
        elif marker == _APP0 and payload.startswith(b"JFIF\x00") and len(payload) >= 14:
            if not jfif:
                # Version, density unit and densities; never its thumbnail.
                kept.append(b"\xff\xe0\x00\x10" + payload[:12] + b"\x00\x00")
                jfif = True
        elif marker == _APP14 and payload.startswith(b"Adobe") and len(payload) >= 12:
            # Its colour transform flag says how to turn the samples into RGB.
            kept.append(b"\xff\xee\x00\x0e" + payload[:12])
        elif marker in _APPS or marker == _COM:
            pass  # metadata: dropped
        else:
            return None  # other frame types, hierarchical, DNL, markers out of place
        pos = end
