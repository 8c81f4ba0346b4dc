"""``archive verify`` and ``archive show``: check the permanent archive against its
manifests, and read one archived request (R15).

Reading a record needs a stated reason (``--reason``), refused without one; every
read and every verification is written to the audit trail with who, why and what.
Mounted into authq-admin by add_archive_commands(); runners take (AuditLog,
namespace, output stream) like the audit commands and return the exit code: 0 all
well, 1 a problem found (a changed, missing or reordered file or line; no such
record; a refused read)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any, TextIO, TypeAlias

from server.archive.index import ArchiveIndex
from server.archive.layout import all_days, day_dir, parse_day, record_name
from server.archive.sheet import data_lines, history_lines, render_sheet, save_sheet
from server.archive.verify import DayReport, verify_days
from server.store.audit import AuditEntry, AuditLog
from server.store.keys import Keys

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_archive_commands(subparsers: Subparsers) -> None:
    archive = subparsers.add_parser("archive", help="verify or read the permanent archive (R15)")
    add_archive_dir_option(archive)
    commands = archive.add_subparsers(dest="archive_command", required=True, metavar="COMMAND")
    verify = commands.add_parser(
        "verify",
        help="check every file and manifest line; exit 1 naming each file or line that "
        "changed, is missing or is out of order",
    )
    verify.add_argument("--day", default=None, metavar="YYYY-MM-DD", help="one day only")
    verify.set_defaults(run=_verify)
    show = commands.add_parser(
        "show", help="print an archived request (needs --reason; the read is audited)"
    )
    show.add_argument("request_id")
    show.add_argument("--reason", required=True, help="why the record is read (audited)")
    show.add_argument("--json", action="store_true", help="the archived JSON document")
    show.add_argument("--png", type=Path, default=None, metavar="FILE", help="one-page sheet")
    show.add_argument("--pdf", type=Path, default=None, metavar="FILE", help="one-page sheet")
    show.set_defaults(run=_show)


def add_archive_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--archive-dir",
        type=Path,
        default=None,
        help="the archive, which also holds the older audit records (default: "
        "<data-dir>/archive, as the server keeps it)",
    )


def archive_root(args: argparse.Namespace) -> Path:
    """The archive a command reads: --archive-dir, else the one under --data-dir."""
    root: Path | None = getattr(args, "archive_dir", None)
    return root if root is not None else Path(args.data_dir) / "archive"


def _actor() -> str:
    return f"authq-admin:{os.environ.get('USER', 'operator')}"


async def _audit(
    log: AuditLog, action: str, target: str, outcome: str, **details: str | int
) -> None:
    await log.append(
        AuditEntry(actor=_actor(), role="ADMIN", origin="cli", action=action, target=target,
                   outcome=outcome[:500], details=dict(details))
    )  # fmt: skip


async def _verify(log: AuditLog, args: argparse.Namespace, out: TextIO) -> int:
    root = archive_root(args)
    heads = await ArchiveIndex(log.client, Keys(args.key_prefix)).heads()
    if args.day is not None:
        try:
            day = parse_day(args.day)
        except ValueError as exc:
            print(f"authq-admin: --day: {exc}", file=out)
            return 2
        days = [day]
        heads = {k: v for k, v in heads.items() if k == day.isoformat()}
    else:
        days = await asyncio.to_thread(all_days, root)
    reports: list[DayReport] = await asyncio.to_thread(verify_days, root, days, heads)
    problems = [problem for report in reports for problem in report.problems]
    files = sum(report.files for report in reports)
    for problem in problems:
        print(problem, file=out)
    outcome = "OK" if not problems else f"{len(problems)} problems"
    await _audit(log, "ARCHIVE_VERIFY", args.day or "*", outcome, days=len(reports), files=files)
    if problems:
        print(f"archive BROKEN: {len(problems)} problems in {len(reports)} days", file=out)
        return 1
    print(f"archive OK: {files} files in {len(reports)} days verified", file=out)
    return 0


def _find(root: Path, request_id: str, day: str | None) -> Path | None:
    if day is not None:
        path = day_dir(root, parse_day(day)) / record_name(request_id)
        if path.exists():
            return path
    # The marker may be gone with a lost Redis: the files alone still say it.
    for candidate in sorted(root.glob(f"*/*/*/{record_name(request_id)}")):
        return candidate
    return None


async def _show(log: AuditLog, args: argparse.Namespace, out: TextIO) -> int:
    rid, reason = args.request_id, args.reason.strip()
    renders = ",".join(kind for kind, path in (("png", args.png), ("pdf", args.pdf)) if path)
    if not reason:
        await _audit(log, "ARCHIVE_SHOW", rid, "refused: no reason given")
        print("authq-admin: --reason: reading an archived record needs a reason (R15)", file=out)
        return 1
    root = archive_root(args)
    marker = await ArchiveIndex(log.client, Keys(args.key_prefix)).marker(rid)
    path = await asyncio.to_thread(_find, root, rid, marker.day if marker else None)
    if path is None:
        await _audit(log, "ARCHIVE_SHOW", rid, "not found", reason=reason)
        print(f"authq-admin: request {rid} is not in the archive under {root}", file=out)
        return 1
    # Recorded before anything is shown: the access is what the trail must prove.
    await _audit(log, "ARCHIVE_SHOW", rid, "OK", reason=reason, file=str(path), render=renders)
    document: dict[str, Any] = json.loads(path.read_text("utf-8"))
    if args.json:
        print(json.dumps(document, ensure_ascii=False, sort_keys=True, indent=1), file=out)
    else:
        _print_text(document, out)
    for kind, target in (("PNG", args.png), ("PDF", args.pdf)):
        if target is not None:
            page = await asyncio.to_thread(render_sheet, document, path.parent)
            await asyncio.to_thread(save_sheet, page, target, kind)
            print(f"{kind} sheet written to {target}", file=out)
    return 0


def _print_text(document: dict[str, Any], out: TextIO) -> None:
    print(f"request {document['request_id']}", file=out)
    for line in data_lines(document):
        print(f"  {line}", file=out)
    print("images:", file=out)
    for image in document["images"]:
        supplied = " (supplied)" if image["supplement"] else ""
        print(f"  {image['kind']:<16} {image['file']} {image['size_bytes']} B{supplied}", file=out)
    print("history:", file=out)
    for line in history_lines(document):
        print(f"  {line}", file=out)
