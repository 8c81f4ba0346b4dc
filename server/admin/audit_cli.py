"""``audit verify`` and ``audit show``: check and read the hash-chained audit trail.

Mounted into authq-admin by add_audit_commands(); each subcommand sets ``run`` on the
parsed namespace to an async runner taking (AuditLog, namespace, output stream) and
returning the exit code: 0 when all is well, 1 when the chain does not verify (or a
record cannot be read)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from server.admin.archive_cli import add_archive_dir_option
from server.store.audit import Anchor, AuditError, AuditLog, AuditRecord
from server.store.audit_witness import AuditWitness

Runner = Callable[[AuditLog, argparse.Namespace, TextIO], Awaitable[int]]


def add_audit_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = subparsers.add_parser("audit", help="verify or read the audit trail (R15)")
    add_archive_dir_option(audit)
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify = commands.add_parser(
        "verify",
        help="recompute the hash chain; exit 1 and list the problems if it is broken",
        description="Recomputes the hash chain from seq 1, or from after the seq and hash "
        "a previous verify ended on (it prints them), so that a long trail is checked "
        "once and then only what was added since. Shows its progress on a terminal.",
    )
    verify.add_argument(
        "--after",
        type=_anchor,
        metavar="SEQ:HASH",
        help="check only the records after this one, which must have this hash",
    )
    verify.set_defaults(run=_verify)
    show = commands.add_parser("show", help="print audit records in order")
    show.add_argument(
        "--from", dest="from_seq", type=int, default=1, metavar="SEQ", help="first seq"
    )
    show.add_argument("--count", type=int, default=None, metavar="N", help="at most N records")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    show.set_defaults(run=_show)


def _anchor(text: str) -> Anchor:
    found = re.fullmatch(r"(\d+):([0-9a-f]{64})", text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(
            f"expected SEQ:HASH (a seq, a colon, 64 hex digits) as verify prints, got {text!r}"
        )
    return Anchor(int(found[1]), found[2])


class Progress:
    """One line on a terminal, rewritten at most every ``every_s``: how far the
    verify is. Writes nothing to a stream that is not a terminal."""

    def __init__(
        self,
        stream: TextIO,
        total: int,
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.total = total
        self.every_s = every_s
        self.clock = clock
        self.shown = False
        self._next = clock() + every_s

    def __call__(self, checked: int, seq: int) -> None:
        if not self.stream.isatty() or self.clock() < self._next:
            return
        self._next = self.clock() + self.every_s
        share = f" ({100 * checked / self.total:.1f}%)" if self.total else ""
        print(f"\rverifying: {checked:,} of {self.total:,} records{share}, at seq {seq:,}",
              end="", file=self.stream, flush=True)  # fmt: skip
        self.shown = True

    def done(self) -> None:
        if self.shown:
            print(file=self.stream)


async def run_verify(
    log: AuditLog, out: TextIO = sys.stdout, after: Anchor | None = None,
    progress_to: TextIO = sys.stderr,
) -> int:  # fmt: skip
    head, _ = await log.head()
    progress = Progress(progress_to, max(0, head - (after.seq if after else 0)))
    witness = None if log.segments is None else AuditWitness.beside(log.segments.directory)
    try:
        report = await log.verify(
            after=after, progress=progress, witness=None if witness is None else witness.read()
        )
    finally:
        progress.done()
    for problem in report.problems:
        print(problem, file=out)
    if not report.ok:
        print(
            f"audit chain BROKEN: {len(report.problems)} problems in {report.checked} records",
            file=out,
        )
        return 1
    since = f" after seq {after.seq}" if after else ""
    print(f"audit chain OK: {report.checked} records verified{since}", file=out)
    if report.last is not None:
        print(f"next time, to check only what comes after: --after {report.last}", file=out)
    if witness is not None:
        print(f"witness: the trail matches the {report.witnessed} notes of {witness.path} "
              "it reached", file=out)  # fmt: skip
    return 0


async def run_show(
    log: AuditLog,
    from_seq: int = 1,
    count: int | None = None,
    as_json: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    try:
        async for record in log.read(from_seq, count):
            print(_json_line(record) if as_json else _text_line(record), file=out)
    except AuditError as exc:
        # Shown on stderr so that --json output stays parseable line by line.
        print(f"{exc}: run `authq-admin audit verify`", file=sys.stderr)
        return 1
    return 0


async def _verify(log: AuditLog, args: argparse.Namespace, out: TextIO) -> int:
    return await run_verify(log, out, args.after)


async def _show(log: AuditLog, args: argparse.Namespace, out: TextIO) -> int:
    return await run_show(log, args.from_seq, args.count, args.json, out)


def record_dict(record: AuditRecord) -> dict[str, Any]:
    entry = record.entry
    return {
        "seq": record.seq,
        "at_ms": entry.at_ms,
        "actor": entry.actor,
        "role": entry.role,
        "origin": entry.origin,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "details": dict(entry.details),
        "prev": record.prev,
        "hash": record.hash,
    }


def _json_line(record: AuditRecord) -> str:
    return json.dumps(record_dict(record), ensure_ascii=False, sort_keys=False)


def _text_line(record: AuditRecord) -> str:
    entry = record.entry
    at = datetime.fromtimestamp(entry.at_ms / 1000, UTC).isoformat(timespec="milliseconds")
    details = f" {json.dumps(dict(entry.details), ensure_ascii=False)}" if entry.details else ""
    return (
        f"{record.seq:>8} {at} {entry.actor}/{entry.role}@{entry.origin} "
        f"{entry.action} {entry.target} -> {entry.outcome}{details} [{record.hash[:12]}]"
    )
