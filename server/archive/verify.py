"""Checks archive days against their manifests: every line chained to the one before,
every listed file present with its size and sha256, no file left unlisted, and (when
the head the archive recorded in Redis is given) no line missing at the end."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from server.archive.layout import MANIFEST_NAME, day_dir
from server.archive.manifest import GENESIS, ManifestLine, chain_hash, parse_line


@dataclass(slots=True)
class DayReport:
    day: date
    files: int = 0
    problems: list[str] = field(default_factory=list)


def verify_day(root: Path, day: date, head: tuple[int, str] | None = None) -> DayReport:
    """``head``: (line count, last chain) as recorded when the last line was written."""
    report = DayReport(day)
    directory = day_dir(root, day)
    manifest = directory / MANIFEST_NAME
    if not manifest.exists():
        report.problems.append(f"{manifest}: missing")
        return report
    listed: set[str] = set()
    prev, count = GENESIS, 0
    for number, raw in enumerate(manifest.read_text("utf-8").splitlines(keepends=True), 1):
        where = f"{manifest} line {number}"
        try:
            line = parse_line(raw)
        except ValueError as exc:
            report.problems.append(f"{where}: unreadable ({exc})")
            prev = raw.rstrip("\n").rsplit(" ", 1)[-1]
            continue
        if not raw.endswith("\n"):
            report.problems.append(f"{where}: torn (no line end)")
        if line.seq != number:
            report.problems.append(f"{where}: numbered {line.seq} (lines removed or reordered)")
        if chain_hash(day, number, prev, line.entry) != line.chain:
            report.problems.append(
                f"{where}: chain broken ({line.entry.name}: the line was edited, or a line "
                "before it was removed or reordered)"
            )
        prev, count = line.chain, number
        listed.add(line.entry.name)
        report.problems.extend(_check_file(directory, line, where))
        report.files += 1
    if head is not None and (count, prev) != head:
        report.problems.append(
            f"{manifest}: ends at line {count} but the archive recorded {head[0]} lines "
            f"ending in chain {head[1][:16]} (lines removed or rewritten at the end)"
        )
    for path in sorted(directory.iterdir()):
        if path.name != MANIFEST_NAME and path.name not in listed and not path.name.startswith("."):
            report.problems.append(f"{path}: not listed in the manifest")
    return report


def _check_file(directory: Path, line: ManifestLine, where: str) -> list[str]:
    path = directory / line.entry.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [f"{where}: {path} is missing"]
    if len(data) != line.entry.size or hashlib.sha256(data).hexdigest() != line.entry.sha256:
        return [f"{where}: {path} changed (sha256 or size differs from the manifest)"]
    return []


def verify_days(
    root: Path, days: list[date], heads: Mapping[str, tuple[int, str]]
) -> list[DayReport]:
    reports = [verify_day(root, day, heads.get(day.isoformat())) for day in days]
    listed = {day.isoformat() for day in days}
    for missing in sorted(set(heads) - listed):
        report = DayReport(date.fromisoformat(missing))
        report.problems.append(
            f"{day_dir(root, report.day)}: the archive recorded {heads[missing][0]} files "
            "for this day but the directory is gone"
        )
        reports.append(report)
    return reports
