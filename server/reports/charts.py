"""The report's charts, drawn with Pillow (already a dependency, for image probing) as
PNG bytes: rejection rate by branch, and the distribution of handling times."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

WIDTH_MIN = 720
HEIGHT = 380
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 50, 70
BAR = (70, 110, 180)
FLAGGED = (200, 60, 50)
GOOD = (60, 150, 90)
AVERAGE = (230, 140, 20)
AXIS = (60, 60, 60)
GRID = (225, 225, 225)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float
    color: tuple[int, int, int] = BAR


def _font(size: int) -> Font:
    return ImageFont.load_default(size=size)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _canvas(width: int, title: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (width, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    draw.text((LEFT, 15), title, fill=AXIS, font=_font(16))
    return image, draw


def _y_axis(draw: ImageDraw.ImageDraw, width: int, top_value: float, label: str) -> None:
    small = _font(11)
    bottom = HEIGHT - BOTTOM
    for step in range(6):
        value = top_value * step / 5
        y = bottom - (bottom - TOP) * step / 5
        draw.line([(LEFT, y), (width - RIGHT, y)], fill=GRID)
        text = f"{value:.0%}" if label == "%" else f"{value:.3g}"
        draw.text((LEFT - 6, y), text, fill=AXIS, font=small, anchor="rm")
    draw.line([(LEFT, TOP), (LEFT, bottom), (width - RIGHT, bottom)], fill=AXIS, width=2)


def nice_top(largest: float) -> float:
    """The top of the value axis: the smallest of 1, 2, 2.5 or 5 times a power of ten,
    times the 5 grid steps, that leaves some room above the largest value."""
    if largest <= 0:
        return 1.0
    wanted = largest * 1.1 / 5
    power = 10.0 ** math.floor(math.log10(wanted))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= wanted)
    return step * 5


def _y(value: float, top_value: float) -> float:
    bottom = HEIGHT - BOTTOM
    return bottom - (bottom - TOP) * (value / top_value if top_value else 0)


def bar_chart(
    title: str,
    bars: Sequence[Bar],
    lines: Sequence[tuple[str, float, tuple[int, int, int]]] = (),
    percent: bool = True,
) -> bytes:
    """Vertical bars, with horizontal reference lines (label, value, colour)."""
    width = max(WIDTH_MIN, LEFT + RIGHT + 64 * len(bars))
    image, draw = _canvas(width, title)
    top_value = nice_top(max([b.value for b in bars] + [v for _, v, _ in lines] + [0.0]))
    _y_axis(draw, width, top_value, "%" if percent else "")
    small = _font(11)
    if not bars:
        draw.text((width // 2, HEIGHT // 2), "no data in this period", fill=AXIS, anchor="mm")
    slot = (width - LEFT - RIGHT) / max(1, len(bars))
    for i, bar in enumerate(bars):
        x0 = LEFT + slot * i + slot * 0.15
        x1 = LEFT + slot * (i + 1) - slot * 0.15
        draw.rectangle([(x0, _y(bar.value, top_value)), (x1, HEIGHT - BOTTOM)], fill=bar.color)
        shown = f"{bar.value:.0%}" if percent else f"{bar.value:g}"
        draw.text(((x0 + x1) / 2, _y(bar.value, top_value) - 3), shown, fill=AXIS,
                  font=small, anchor="md")  # fmt: skip
        draw.text(((x0 + x1) / 2, HEIGHT - BOTTOM + 8), bar.label[:12], fill=AXIS,
                  font=small, anchor="ma")  # fmt: skip
    for n, (label, value, color) in enumerate(lines):
        y = _y(value, top_value)
        for x in range(LEFT, width - RIGHT, 12):  # dashed
            draw.line([(x, y), (min(x + 7, width - RIGHT), y)], fill=color, width=2)
        draw.text((width - RIGHT, 14 + 14 * n), label, fill=color, font=small, anchor="ra")
    return _png(image)


def histogram_bins(
    values: Sequence[float], bins: int | None = None
) -> list[tuple[float, float, int]]:
    """(low, high, count) per bin; equal widths from the smallest to the largest value,
    about sqrt(n) bins (at most 12); the last bin includes its upper edge."""
    if not values:
        return []
    low, high = min(values), max(values)
    count = bins or min(12, max(1, math.ceil(math.sqrt(len(values)))))
    if high == low:
        return [(low, high, len(values))]
    width = (high - low) / count
    counts = [0] * count
    for value in values:
        counts[min(count - 1, int((value - low) / width))] += 1
    return [(low + i * width, low + (i + 1) * width, n) for i, n in enumerate(counts)]


def histogram(title: str, values_s: Sequence[float]) -> bytes:
    bins = histogram_bins(values_s)
    bars = [Bar(f"{lo:.0f}-{hi:.0f}s", float(n)) for lo, hi, n in bins]
    return bar_chart(title, bars, percent=False)
