"""Small charts drawn with Pillow (the Tk layer shows the image): bars for decisions
per minute, lines for queue wait per minute."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

BG = (250, 250, 252)
AXIS = (120, 120, 130)
BAR = (60, 120, 200)
P50 = (40, 150, 90)
MAX = (210, 90, 60)
TEXT = (30, 30, 40)


def _frame(
    size: tuple[int, int], title: str, top_label: str
) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", size, BG)
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), title, fill=TEXT)
    draw.text((size[0] - 6 - draw.textlength(top_label), 4), top_label, fill=AXIS)
    draw.line([(30, size[1] - 18), (size[0] - 6, size[1] - 18)], fill=AXIS)
    draw.text((6, size[1] - 15), "-30 min", fill=AXIS)
    draw.text((size[0] - 6 - draw.textlength("now"), size[1] - 15), "now", fill=AXIS)
    return image, draw


def _plot_box(size: tuple[int, int]) -> tuple[int, int, int, int]:
    return 30, 22, size[0] - 6, size[1] - 20


def bar_chart(values: Sequence[int], size: tuple[int, int], title: str) -> Image.Image:
    peak = max(values, default=0)
    image, draw = _frame(size, title, f"max {peak}/min")
    left, top, right, bottom = _plot_box(size)
    if not values:
        return image
    width = (right - left) / len(values)
    for i, value in enumerate(values):
        if value <= 0:
            continue
        height = (bottom - top) * value / max(1, peak)
        x0 = left + i * width + 1
        draw.rectangle([x0, bottom - height, x0 + max(1.0, width - 2), bottom], fill=BAR)
    return image


def wait_chart(points: Sequence[tuple[int, int]], size: tuple[int, int], title: str) -> Image.Image:
    """``points``: (p50 ms, max ms) per minute, oldest first."""
    peak = max((high for _, high in points), default=0)
    image, draw = _frame(size, title, f"max {peak / 1000:.1f} s")
    left, top, right, bottom = _plot_box(size)
    if len(points) < 2:
        return image
    step = (right - left) / (len(points) - 1)

    def y(value: int) -> float:
        return bottom - (bottom - top) * value / max(1, peak)

    for series, color in ((1, MAX), (0, P50)):
        line = [(left + i * step, y(p[series])) for i, p in enumerate(points)]
        draw.line(line, fill=color, width=2)
    draw.text((left + 4, top + 2), "p50", fill=P50)
    draw.text((left + 34, top + 2), "max", fill=MAX)
    return image
