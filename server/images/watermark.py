"""Stamps a rendition with who is looking and when (R14), per fetch: a copy that
leaks names its viewer. The stamp is repeated across the picture in translucent
rows, so cropping one corner does not remove it."""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Final

from PIL import Image, ImageDraw, ImageFont

_QUALITY: Final = 85


@lru_cache(maxsize=16)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1: the fixed-size bitmap font only
        return ImageFont.load_default()


def watermark(jpeg: bytes, text: str) -> bytes:
    """The JPEG ``jpeg`` with ``text`` drawn over it, re-encoded (no metadata)."""
    with Image.open(io.BytesIO(jpeg)) as source:
        base = source.convert("RGBA")
    px = max(10, base.width // 40)
    font = _font(px)
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    pen = ImageDraw.Draw(overlay)
    step_y = px * 5
    text_w = int(pen.textlength(text, font=font)) + px * 3
    for row, y in enumerate(range(px, base.height, step_y)):
        # Alternate rows are offset so the stamp covers the gaps of the row above.
        start = -((row % 2) * text_w // 2)
        for x in range(start, base.width, text_w):
            pen.text((x, y), text, font=font, fill=(255, 255, 255, 110),
                     stroke_width=max(1, px // 12), stroke_fill=(0, 0, 0, 110))  # fmt: skip
    stamped = Image.alpha_composite(base, overlay).convert("RGB")
    out = io.BytesIO()
    stamped.save(out, "JPEG", quality=_QUALITY)
    return out.getvalue()
