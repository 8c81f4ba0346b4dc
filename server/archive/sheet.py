"""A one-page printable sheet of an archived request (A4 portrait at 150 dpi): its
data, its history and thumbnails of its images. Pillow draws it; the same page is
saved as PNG or PDF."""

from __future__ import annotations

import io
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

DPI = 150
PAGE_SIZE = (1240, 1754)  # A4 at 150 dpi
_MARGIN = 60
_THUMB = 260
_HISTORY_LINES = 28


def _when(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _money(minor: int, currency: str) -> str:
    return f"{minor / 100:,.2f} {currency}"


def data_lines(document: Mapping[str, Any]) -> list[str]:
    decision = document["decision"]
    reason = f" ({decision['reason_code']})" if decision["reason_code"] else ""
    lines = [
        f"Branch {document['branch_id']}   teller {document['teller_id']}",
        f"Business {document['business_type']}   amount "
        f"{_money(document['amount_minor'], document['currency'])}",
        f"Account {document['account']}   customer {document['customer_name']}",
        f"Submitted {_when(document['submitted_ms'])}   ended {_when(document['ended_ms'])}",
        f"Outcome {document['state']}{reason} by {decision['actor']}",
    ]
    if document["memo"]:
        lines.append(f"Memo {document['memo']}")
    lines.extend(f"{key}: {value}" for key, value in sorted(document["fields"].items()))
    return lines


def history_lines(document: Mapping[str, Any]) -> list[str]:
    lines = []
    for entry in document["history"]:
        extra = " ".join(
            part
            for part in (
                entry["reason_code"],
                ",".join(entry["kinds"]),
                f'"{entry["note"]}"' if entry["note"] else "",
            )
            if part
        )
        lines.append(
            f"v{entry['version']:<3} {_when(entry['at_ms'])}  {entry['event']:<22} "
            f"{entry['actor']:<16} {extra}".rstrip()
        )
    return lines


def render_sheet(document: Mapping[str, Any], image_dir: Path) -> Image.Image:
    page = Image.new("RGB", PAGE_SIZE, "white")
    draw = ImageDraw.Draw(page)
    title = ImageFont.load_default(size=34)
    heading = ImageFont.load_default(size=24)
    body = ImageFont.load_default(size=18)
    y = _MARGIN
    draw.text(
        (_MARGIN, y), f"Authorization record {document['request_id']}", font=title, fill="black"
    )
    y += 56
    for line in data_lines(document):
        draw.text((_MARGIN, y), line, font=body, fill="black")
        y += 26
    y += 14
    draw.text((_MARGIN, y), "History", font=heading, fill="black")
    y += 36
    history = history_lines(document)
    if len(history) > _HISTORY_LINES:
        history = [*history[: _HISTORY_LINES - 1], f"... {len(history) - _HISTORY_LINES + 1} more"]
    for line in history:
        draw.text((_MARGIN, y), line, font=body, fill="black")
        y += 24
    y += 14
    draw.text((_MARGIN, y), "Images", font=heading, fill="black")
    y += 36
    x = _MARGIN
    for image in document["images"]:
        if x + _THUMB > PAGE_SIZE[0] - _MARGIN:
            x, y = _MARGIN, y + _THUMB + 40
        if y + _THUMB + 30 > PAGE_SIZE[1] - _MARGIN:
            break
        _paste_thumbnail(page, image_dir / image["file"], (x, y))
        draw.rectangle((x, y, x + _THUMB, y + _THUMB), outline="gray")
        label = image["kind"] + (" (supplied)" if image["supplement"] else "")
        draw.text((x, y + _THUMB + 6), label, font=body, fill="black")
        x += _THUMB + 24
    footer = (
        f"Printed from the permanent archive {_when(int(datetime.now(UTC).timestamp() * 1000))}"
    )
    draw.text((_MARGIN, PAGE_SIZE[1] - _MARGIN), footer, font=body, fill="gray")
    return page


def _paste_thumbnail(page: Image.Image, path: Path, at: tuple[int, int]) -> None:
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as picture:
            picture.draft("RGB", (_THUMB, _THUMB))
            thumb = picture.convert("RGB")
            thumb.thumbnail((_THUMB, _THUMB))
    except (OSError, ValueError):
        return  # a missing or unreadable file shows as an empty frame
    offset = ((_THUMB - thumb.width) // 2, (_THUMB - thumb.height) // 2)
    page.paste(thumb, (at[0] + offset[0], at[1] + offset[1]))


def save_sheet(page: Image.Image, path: Path, kind: str) -> None:
    if kind == "PDF":
        page.save(path, "PDF", resolution=float(DPI))
    else:
        page.save(path, "PNG", dpi=(DPI, DPI))
