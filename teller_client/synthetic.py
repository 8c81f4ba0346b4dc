"""Synthetic capture images for demos, tests and benchmarks.

Everything here is drawn from scratch with Pillow: names and numbers are made of random
syllables and digits, so no image ever carries real personal data. Output is a JPEG
(quality 85) that depends only on the arguments, so tests can compare bytes. Sensor-like
noise and soft shading are added on purpose: clean vector drawings compress to a few tens
of KB, which would make payload sizes and benchmarks unrealistically flattering.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable
from functools import lru_cache

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

Size = tuple[int, int]
RGB = tuple[int, int, int]

_QUALITY = 85
_INK: RGB = (25, 25, 35)
_PEN: RGB = (20, 40, 140)  # ballpoint blue, for the "handwritten" entries
_GREY: RGB = (110, 110, 120)
_RED: RGB = (200, 40, 40)
_SYLLABLES = ("ka", "lo", "mi", "ren", "do", "sa", "vi", "tel", "nor", "bu", "ze", "ha", "qin")
_PALETTES: tuple[tuple[RGB, RGB], ...] = (
    ((214, 232, 246), (246, 226, 214)),
    ((225, 240, 220), (240, 232, 205)),
    ((236, 222, 240), (214, 236, 240)),
)


@lru_cache(maxsize=32)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1 has only the fixed-size bitmap font
        return ImageFont.load_default()


class _Sheet:
    """A canvas addressed in units of 1/100 of its width, so layouts scale with ``size``."""

    def __init__(self, img: Image.Image, rng: random.Random) -> None:
        self.img, self.rng, self.pen = img, rng, ImageDraw.Draw(img)
        self.u = max(1.0, img.width / 100)
        self.h = img.height / self.u  # height in units

    def box(self, *xy: float) -> tuple[float, ...]:
        return tuple(v * self.u for v in xy)

    def text(self, x: float, y: float, s: str, fill: RGB = _INK, em: float = 2) -> None:
        """Write ``s`` with its top-left corner at (x, y); ``em`` is the font size in units."""
        x_px, y_px = self.box(x, y)
        self.pen.text((x_px, y_px), s, fill, _font(max(6, round(em * self.u))))

    def name(self) -> str:
        def word() -> str:
            syl = (self.rng.choice(_SYLLABLES) for _ in range(self.rng.randint(2, 3)))
            return "".join(syl).capitalize()

        return f"{word()} {word()}"

    def word(self) -> str:
        return self.name().split()[0]

    def words(self, n: int) -> str:
        return " ".join(self.word().lower() for _ in range(n))

    def digits(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789") for _ in range(n))

    def date(self, first_year: int, last_year: int) -> str:
        r = self.rng
        return f"{r.randint(first_year, last_year)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"

    def amount(self) -> str:
        return f"{self.rng.randint(100, 499_999):,}.{self.rng.randint(0, 99):02d}"

    def signature(self, x0: float, y0: float, x1: float, y1: float) -> None:
        r, mid, amp = self.rng, (y0 + y1) / 2, (y1 - y0) / 2
        waves = [(r.uniform(0.3, 1), r.uniform(2, 9), r.uniform(0, math.tau)) for _ in range(3)]
        pts = []
        for i in range(240):
            t = i / 239
            dy = sum(a * math.sin(f * t * math.tau + ph) for a, f, ph in waves) / 2.3
            x = x0 + t * (x1 - x0) + amp * 0.4 * math.sin(t * 40)
            pts.append((x * self.u, (mid + amp * dy) * self.u))
        self.pen.line(pts, fill=_PEN, width=max(2, round(self.u / 4)), joint="curve")


def _shade(color: RGB, by: int) -> RGB:
    r, g, b = (max(0, c - by) for c in color)
    return r, g, b


def _gradient(size: Size, top: RGB, bottom: RGB, horizontal: bool = False) -> Image.Image:
    mask = Image.linear_gradient("L")
    if horizontal:
        mask = mask.transpose(Image.Transpose.ROTATE_90)
    mask = mask.resize(size, Image.Resampling.BILINEAR)
    return Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), mask)


def _finish(img: Image.Image, rng: random.Random, noise: int, blur: float) -> bytes:
    """Make a clean drawing look captured: optics blur, uneven light, sensor noise."""
    if blur:
        img = img.filter(ImageFilter.BoxBlur(blur))  # Gaussian looks alike here, costs 3x
    shade = Image.radial_gradient("L").resize(img.size, Image.Resampling.BILINEAR)
    shade = shade.point(lambda v: 255 - v * 50 // 255)  # up to ~20% darker at the corners
    img = ImageChops.multiply(img, Image.merge("RGB", (shade, shade, shade)))
    raw = Image.frombytes("RGB", img.size, rng.randbytes(img.width * img.height * 3))
    img = ImageChops.add(img, raw.point(lambda v: v * noise // 255), offset=-(noise // 2))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=_QUALITY)
    return out.getvalue()


def _card(size: Size, rng: random.Random) -> _Sheet:
    """A card with a guilloche background, lying on a dark desk."""
    w, h = size
    img = _gradient(size, (72, 64, 58), (48, 44, 40))
    top, bottom = rng.choice(_PALETTES)
    card = _gradient(size, top, bottom, horizontal=True)
    pen, phase = ImageDraw.Draw(card), rng.uniform(0, math.tau)
    for k in range(0, h, max(4, h // 60)):
        amp, period = h / 40, w / rng.uniform(3, 6)
        pts = [(x, k + amp * math.sin(phase + x / period * math.tau)) for x in range(0, w, 8)]
        pen.line(pts, fill=(180, 195, 210) if k % 2 else (215, 190, 185), width=1)
    sheet = _Sheet(img, rng)
    mask = Image.new("L", size, 0)
    inner = sheet.box(2, 2, 98, sheet.h - 2)
    ImageDraw.Draw(mask).rounded_rectangle(inner, radius=4 * sheet.u, fill=255)
    img.paste(card, (0, 0), mask)
    return sheet


def _paper(size: Size, rng: random.Random) -> _Sheet:
    tint: RGB = rng.choice([(250, 246, 236), (246, 236, 238), (236, 244, 248), (240, 248, 236)])
    return _Sheet(_gradient(size, tint, _shade(tint, 14)), rng)


def _draw_id_front(s: _Sheet) -> None:
    s.pen.rectangle(s.box(2, 2, 98, s.h * 0.15), fill=(40, 70, 120))
    s.text(5, 3, "SAMPLELAND  IDENTITY CARD  (SPECIMEN)", (255, 255, 255), em=3.2)
    x0, y0, x1, y1 = (round(v) for v in s.box(5, s.h * 0.22, 32, s.h * 0.88))
    portrait = _gradient((x1 - x0, y1 - y0), (200, 210, 225), (150, 165, 190))
    pw, ph = portrait.size
    skin: RGB = s.rng.choice([(224, 190, 160), (198, 150, 115), (150, 105, 80)])
    p = ImageDraw.Draw(portrait)
    p.ellipse((-pw * 0.1, ph * 0.68, pw * 1.1, ph * 1.4), fill=s.rng.choice([(40, 40, 60), _PEN]))
    p.ellipse((pw * 0.27, ph * 0.18, pw * 0.73, ph * 0.72), fill=skin)
    p.chord((pw * 0.25, ph * 0.1, pw * 0.75, ph * 0.5), 180, 360, fill=(45, 35, 30))
    s.img.paste(portrait.filter(ImageFilter.GaussianBlur(s.u / 2)), (x0, y0))
    r = s.rng
    fields = [
        ("Name", s.name()),
        ("Sex / Born", f"{r.choice('FM')}    {s.date(1950, 2004)}"),
        ("Address", f"{r.randint(1, 999)} {s.name()} Road, {s.word()} City"),
        ("", f"Block {r.randint(1, 40)}, Unit {r.randint(1, 9)}0{r.randint(1, 9)}"),
    ]
    for i, (label, value) in enumerate(fields):
        y = s.h * (0.22 + 0.12 * i)
        s.text(37, y, label, _GREY)
        s.text(53, y - 0.5, value, em=2.6)
    s.text(37, s.h * 0.8, "ID No.", _GREY)
    s.text(53, s.h * 0.79, "99" + s.digits(16), em=3.2)


def _draw_id_back(s: _Sheet) -> None:
    s.pen.ellipse(s.box(6, 6, 26, 26), outline=(170, 40, 40), width=round(s.u))
    s.pen.regular_polygon((16 * s.u, 16 * s.u, 6 * s.u), 5, fill=(190, 150, 40))
    s.text(32, 9, "SAMPLELAND REPUBLIC  (SPECIMEN)", em=3.2)
    s.text(32, 17, "RESIDENT IDENTITY CARD", em=2.6)
    start = s.rng.randint(2015, 2024)
    s.text(8, s.h * 0.45, "Issuing authority", _GREY)
    s.text(36, s.h * 0.45, f"{s.word()} District Registry Office", em=2.6)
    s.text(8, s.h * 0.55, "Valid", _GREY)
    s.text(36, s.h * 0.55, f"{s.date(start, start)} - {start + 10}-12-31", em=2.6)
    x = 8.0
    while x < 90:  # barcode: random widths, so each seed yields its own pattern
        bar = s.rng.choice((0.3, 0.3, 0.6, 0.9))
        s.pen.rectangle(s.box(x, s.h * 0.64, x + bar, s.h * 0.75), fill=_INK)
        x += bar + s.rng.choice((0.3, 0.6, 0.9))
    mrz = ("IDSPL" + s.digits(9), s.digits(7), s.name().upper().replace(" ", "<<"))
    for i, line in enumerate(mrz):
        s.text(8, s.h * (0.79 + 0.06 * i), line.ljust(30, "<"), em=2.6)


def _draw_voucher(s: _Sheet) -> None:
    s.text(5, 4, "SAMPLE BANK  -  CASH DEPOSIT SLIP (SPECIMEN)", em=2.6)
    s.text(5, 11, f"Date {s.date(2023, 2025)}", _PEN)
    s.text(40, 11, f"Account 62{s.digits(14)}", _PEN)
    s.text(5, 16, f"Account holder  {s.name()}", _PEN)
    top, row, cols = 21, 4.5, (5, 45, 65, 95)
    s.pen.rectangle(s.box(5, top, 95, top + 7 * row), outline=_INK, width=round(s.u / 4))
    for r in range(1, 7):
        s.pen.line(s.box(5, top + r * row, 95, top + r * row), fill=_INK, width=1)
    for c in cols[1:-1]:
        s.pen.line(s.box(c, top, c, top + 7 * row), fill=_INK, width=1)
    for c, title in zip(cols, ("Description", "Count", "Amount (CNY)"), strict=False):
        s.text(c + 1, top + 1, title)
    for r in range(1, s.rng.randint(3, 6)):
        y = top + r * row + 1
        s.text(6, y, s.rng.choice(["Notes 100", "Notes 50", "Cheque", "Transfer"]), _PEN)
        s.text(46, y, str(s.rng.randint(1, 200)), _PEN)
        s.text(66, y, s.amount(), _PEN)
    s.text(6, top + 6 * row + 1, f"TOTAL   {s.amount()}")
    s.text(5, top + 7 * row + 3, f"Amount in words: {s.words(6)}", _PEN)
    s.pen.line(s.box(55, s.h - 7, 92, s.h - 7), fill=_GREY, width=1)
    s.text(55, s.h - 6, "Customer signature", _GREY, em=1.5)
    s.signature(57, s.h - 16, 90, s.h - 8)
    s.pen.ellipse(s.box(28, s.h - 19, 44, s.h - 3), outline=_RED, width=round(s.u / 3))
    s.text(30.5, s.h - 12, "RECEIVED", _RED)


def _draw_form(s: _Sheet) -> None:
    s.text(6, 5, "AUTHORIZATION APPLICATION FORM", em=3.2)
    s.text(6, 12, "Sample Bank - specimen, not a real document", _GREY)
    entries = [
        ("Branch", f"{s.word()} Sub-branch"),
        ("Teller", f"T{s.digits(5)}"),
        ("Customer", s.name()),
        ("Account", f"62{s.digits(14)}"),
        ("Amount", s.amount()),
    ]
    y = 20.0
    for label, value in entries:
        s.pen.rectangle(s.box(6, y, 94, y + 8), outline=_INK, width=1)
        s.text(8, y + 2, label)
        s.text(30, y + 2, value, _PEN, em=2.6)
        y += 10
    for i, option in enumerate(("Withdrawal", "Transfer", "Account change", "Other")):
        x = 6 + i * 22
        s.pen.rectangle(s.box(x, y + 1, x + 3, y + 4), outline=_INK, width=1)
        if s.rng.random() < 0.4:
            s.pen.line(s.box(x, y + 1, x + 3, y + 4), fill=_PEN, width=round(s.u / 3))
        s.text(x + 4, y + 1, option)
    y += 8
    s.text(6, y, "Reason for the request:")
    for _ in range(s.rng.randint(4, 8)):
        y += 5
        s.text(8, y, s.words(s.rng.randint(5, 9)), _PEN)
    s.signature(50, s.h - 24, 90, s.h - 12)
    s.text(50, s.h - 10, "Applicant signature", _GREY, em=1.5)


def _draw_other(s: _Sheet) -> None:
    s.text(6, 5, f"{s.word().upper()} SERVICES - STATEMENT (SPECIMEN)", em=2.6)
    y = 14.0
    for _ in range(s.rng.randint(9, 12)):
        s.text(6, y, s.words(s.rng.randint(6, 11)))
        y += 5
    s.signature(60, y, 92, y + 8)


def _photo(size: Size, rng: random.Random) -> _Sheet:
    wall: RGB = rng.choice([(200, 196, 184), (176, 190, 204), (210, 200, 210)])
    return _Sheet(_gradient(size, wall, _shade(wall, 90)), rng)


def _draw_photo(s: _Sheet) -> None:
    cx, h, p = s.rng.uniform(40, 60), s.h, s.pen
    coat: RGB = s.rng.choice([(50, 60, 90), (120, 40, 40), (60, 80, 60)])
    p.ellipse(s.box(cx - 30, h * 0.62, cx + 30, h * 1.3), fill=coat)
    p.rectangle(s.box(cx - 5, h * 0.5, cx + 5, h * 0.7), fill=(200, 160, 130))
    p.ellipse(s.box(cx - 12, h * 0.18, cx + 12, h * 0.6), fill=(215, 175, 145))
    p.chord(s.box(cx - 13, h * 0.13, cx + 13, h * 0.45), 180, 360, fill=(40, 30, 25))
    p.rectangle(s.box(0, h * 0.9, 100, h), fill=(90, 70, 50))  # the counter's edge
    # Defocus: a photo has no hard edges, and the noise added later supplies the detail.
    # Shrinking and re-enlarging is a wide blur at a fraction of GaussianBlur's cost.
    s.img = s.img.reduce(8).resize(s.img.size, Image.Resampling.BICUBIC)


_Base = Callable[[Size, random.Random], _Sheet]
# kind -> (background, drawer, noise amplitude, optics blur radius, default size)
_KINDS: dict[str, tuple[_Base, Callable[[_Sheet], None], int, float, Size]] = {
    "ID_FRONT": (_card, _draw_id_front, 12, 0.6, (1600, 1010)),
    "ID_BACK": (_card, _draw_id_back, 12, 0.6, (1600, 1010)),
    "VOUCHER": (_paper, _draw_voucher, 10, 0.6, (1600, 1200)),
    "APPLICATION_FORM": (_paper, _draw_form, 10, 0.6, (1240, 1754)),
    "CUSTOMER_PHOTO": (_photo, _draw_photo, 18, 0.0, (1600, 1200)),
    "OTHER": (_paper, _draw_other, 10, 0.6, (1600, 1200)),
}
KINDS: tuple[str, ...] = tuple(_KINDS)


def _make(kind: str, seed: int, size: Size) -> bytes:
    base, draw, noise, blur, _ = _KINDS[kind]
    # String seeds hash with SHA-512: stable across runs, independent of PYTHONHASHSEED.
    rng = random.Random(f"{kind}:{seed}")
    sheet = base(size, rng)
    draw(sheet)
    return _finish(sheet.img, rng, noise, blur)


# Bytes are immutable, so cached results can be shared freely between callers.
_cached = lru_cache(maxsize=64)(_make)


def id_card_front(seed: int = 0, size: Size = (1600, 1010)) -> bytes:
    return _cached("ID_FRONT", seed, size)


def id_card_back(seed: int = 0, size: Size = (1600, 1010)) -> bytes:
    return _cached("ID_BACK", seed, size)


def voucher(seed: int = 0, size: Size = (1600, 1200)) -> bytes:
    return _cached("VOUCHER", seed, size)


def application_form(seed: int = 0, size: Size = (1240, 1754)) -> bytes:
    return _cached("APPLICATION_FORM", seed, size)


def customer_photo(seed: int = 0, size: Size = (1600, 1200)) -> bytes:
    return _cached("CUSTOMER_PHOTO", seed, size)


def other_document(seed: int = 0, size: Size = (1600, 1200)) -> bytes:
    return _cached("OTHER", seed, size)


def image_for_kind(kind: str, seed: int = 0) -> bytes:
    """A plausible capture for an image kind name such as ``"ID_FRONT"`` (see KINDS)."""
    if kind not in _KINDS:
        raise ValueError(f"unknown image kind {kind!r}; expected one of {', '.join(KINDS)}")
    return _cached(kind, seed, _KINDS[kind][4])


def jpeg_of_size(target_bytes: int, seed: int = 0) -> bytes:
    """A photo-like JPEG within ~10% of ``target_bytes`` (reliable from ~20 KB to ~5 MB)."""
    if target_bytes <= 0:
        raise ValueError("target_bytes must be positive")
    return _jpeg_of_size(target_bytes, seed)


@lru_cache(maxsize=16)
def _jpeg_of_size(target_bytes: int, seed: int) -> bytes:
    # JPEG size of noisy content grows almost linearly with pixel count, so scaling the side
    # by sqrt(target/actual) converges in two or three renders.
    width, best = 1600, b""
    for _ in range(6):
        # Uncached on purpose: the intermediate renders are throwaway and can be large.
        data = _make("CUSTOMER_PHOTO", seed, (width, width * 3 // 4))
        if not best or abs(len(data) - target_bytes) < abs(len(best) - target_bytes):
            best = data
        if abs(len(data) - target_bytes) <= target_bytes * 0.03:
            break
        width = min(12_000, max(86, round(width * math.sqrt(target_bytes / len(data)))))
    return best
