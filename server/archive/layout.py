"""Where the archive keeps things: ``<root>/YYYY/MM/DD/`` per day a request ended (UTC,
so every server process files a request under the same day), holding
``<request_id>.json``, its images as ``<sha256>.<ext>`` (content-addressed: an image
shared by two requests of a day is kept once) and the day's ``MANIFEST``."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

MANIFEST_NAME = "MANIFEST"

_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/tiff": "tif",
    "image/webp": "webp",
}
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")


def day_of(at_ms: int) -> date:
    return datetime.fromtimestamp(at_ms / 1000, UTC).date()


def parse_day(text: str) -> date:
    """A YYYY-MM-DD day; ValueError naming the expected form otherwise."""
    if not _DAY_RE.match(text):
        raise ValueError(f"day must be YYYY-MM-DD, got {text!r}")
    return date.fromisoformat(text)


def day_dir(root: Path, day: date) -> Path:
    return root / f"{day.year:04d}" / f"{day.month:02d}" / f"{day.day:02d}"


def record_name(request_id: str) -> str:
    # Request ids are checked at the API ([A-Za-z0-9._:-], 8-64): no path separators.
    return f"{request_id}.json"


def image_name(sha256: str, content_type: str) -> str:
    return f"{sha256}.{_EXTENSIONS.get(content_type, 'bin')}"


def all_days(root: Path) -> list[date]:
    """Every day directory under the root (with or without its manifest), oldest first."""
    days = []
    for directory in root.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]"):
        year, month, day = directory.relative_to(root).parts
        try:
            days.append(date(int(year), int(month), int(day)))
        except ValueError:
            continue
    return sorted(days)
