"""The workstation's journal of local fallbacks (R8): durable, append-only JSON lines.

When the center cannot be reached, or answers with an emergency fallback, the branch
authorizes on site and the workstation records it here; once the center is back the
records are uploaded (TellerService.ReportFallbacks). Nothing is ever rewritten: a
fallback, its on-site decision and each upload are separate lines, and a record's
state is the fold of its lines. Every line is fsynced before the command goes on, so
a fallback the teller was told is recorded survives a crash or a power cut; a line
torn by one is skipped when reading and never glued to the next.

Lines (``type``):
    fallback   what happened: request id, teller, branch, time, why, the transaction
    onsite     who authorized it on site, the outcome, a note, when
    uploaded   the center holds it (``outcome``: the on-site outcome it held then)
    refused    the center refused it (``reason``); not retried until something changes
    reconciled the branch squared a fallback the center refused, holds otherwise
               (CONFLICT) or had decided too with the center's record: who, what was
               done, when

The journal holds customers' data (R14): it is created readable by its owner only, and
a fallback the center holds in full, or one reconciled, leaves it once it has been
settled for a while (compact): the center keeps it permanently (R15), the workstation
need not. Compaction is the one rewrite: a new file with the lines that stay, renamed
over the old one under the same lock as the appends."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from authq.local_files import fsync_dir, locked, replace_file

JOURNAL_NAME = "fallback-journal.jsonl"
CAUSES = ("CENTER_UNREACHABLE", "EMERGENCY")
OUTCOMES = ("APPROVED", "REJECTED")
# What the center answered for a record it now holds as the workstation sent it
# (CONFLICT: it holds it otherwise, and the branch's copy stays for the reconciling).
HELD = ("STORED", "DUPLICATE", "OUTCOME_ADDED")
# What the center's request of the same id became when it had decided it itself before
# the fallback reached it: authorized twice, so the branch's copy stays for reconciling.
DECIDED = ("APPROVED", "REJECTED")
# How long a settled fallback stays in the journal (``fallback list`` shows it).
DEFAULT_KEEP_DAYS = 7
DAY_MS = 86_400_000


class JournalError(ValueError):
    """A journal operation that cannot be done, with the reason."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class FallbackEvent:
    """Why and when a transaction went to on-site authorization."""

    request_id: str
    teller_id: str
    # Empty when the workstation did not know it (the center takes the teller's own).
    branch_id: str
    occurred_at_ms: int
    cause: str
    # The transaction as keyed (protobuf JSON form of authq.v1.Transaction).
    transaction: dict[str, Any]
    urgent: bool = False
    status_code: str = ""
    status_message: str = ""
    # The refusal's reason (authq.refusals), when the center answered with one.
    status_reason: str = ""
    emergency_id: str = ""


@dataclass(frozen=True, slots=True)
class OnsiteDecision:
    authorizer: str
    outcome: str
    note: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """How the branch squared a fallback the center refused, holds otherwise or decided
    too."""

    by: str
    note: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One fallback as its lines add up."""

    event: FallbackEvent
    onsite: OnsiteDecision | None = None
    # The last upload or refusal: the on-site outcome it carried ("" none), when, what
    # the center said.
    sent_outcome: str | None = None
    sent_at_ms: int = 0
    refused: str = ""
    server_status: str = ""
    server_message: str = ""
    also_submitted: bool = False
    # What the center's request of this id became once the fallback reached it ("" =
    # none or not told): SENT_BACK, withdrawn; APPROVED or REJECTED, decided there too.
    central_state: str = ""
    reconciled: Reconciliation | None = None

    @property
    def outcome(self) -> str:
        return self.onsite.outcome if self.onsite else ""

    @property
    def pending(self) -> bool:
        """Not uploaded yet, or its on-site outcome is newer than the last upload."""
        return self.sent_outcome != self.outcome

    @property
    def needs_reconciling(self) -> bool:
        """Uploaded with its on-site outcome, and refused by the center, held there
        otherwise (CONFLICT) or decided there too (authorized twice): the branch has to
        square the two records."""
        if self.onsite is None or self.pending:
            return False
        # A refusal leaves no server status: it is not among HELD either.
        return self.server_status not in HELD or self.central_state in DECIDED

    @property
    def settled(self) -> bool:
        """The center holds it in full (its on-site outcome uploaded and taken as
        sent), or the branch reconciled it. Nothing about it is left for the
        workstation to send or anyone to act on."""
        if self.onsite is None or self.pending:
            return False
        return self.reconciled is not None or not self.needs_reconciling

    @property
    def settled_at_ms(self) -> int:
        """Since when it is settled (its last upload, or its reconciliation)."""
        return max(self.sent_at_ms, self.reconciled.at_ms if self.reconciled else 0)

    @property
    def state(self) -> str:
        if self.pending:
            return "PENDING"
        if self.reconciled is not None:
            return "RECONCILED"
        return "REFUSED" if self.refused else "UPLOADED"


@dataclass
class _Fold:
    entries: dict[str, JournalEntry] = field(default_factory=dict)
    torn: int = 0


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path

    # -- writing -------------------------------------------------------------------

    def record_fallback(self, event: FallbackEvent) -> JournalEntry:
        """Records a fallback; one already journaled under this request id (a retried
        submit) is kept as it was."""
        if event.cause not in CAUSES:
            raise JournalError(f"unknown fallback cause {event.cause!r}")
        held = self.entries().get(event.request_id)
        if held is not None:
            return held
        self._append({"type": "fallback", **asdict(event)})
        return JournalEntry(event)

    def record_onsite(self, request_id: str, decision: OnsiteDecision) -> JournalEntry:
        """Records who authorized a journaled fallback on site, and how (once)."""
        entry = self._journaled(request_id)
        if entry.onsite is not None:
            raise JournalError(
                f"{request_id} was already recorded as {entry.onsite.outcome} on site by "
                f"{entry.onsite.authorizer}: an on-site decision is recorded once"
            )
        if decision.outcome not in OUTCOMES:
            raise JournalError(f"--outcome: one of {', '.join(OUTCOMES)}")
        _check_person(
            "--onsite-authorizer", decision.authorizer, entry,
            "who authorized it on site", "authorize it on site",
        )  # fmt: skip
        self._append({"type": "onsite", "request_id": request_id, **asdict(decision)})
        return replace(entry, onsite=decision)

    def record_reconciled(self, request_id: str, how: Reconciliation) -> JournalEntry:
        """Records that the branch squared a fallback the center refused or holds
        otherwise with the center's record (once). It then leaves the journal like a
        settled one."""
        entry = self._journaled(request_id)
        if entry.reconciled is not None:
            raise JournalError(
                f"{request_id} was already reconciled by {entry.reconciled.by}: "
                "a reconciliation is recorded once"
            )
        if not entry.needs_reconciling:
            state = "the center holds it as sent" if entry.settled else entry.state.lower()
            raise JournalError(
                f"{request_id} has nothing to reconcile ({state}): only a fallback the "
                "center refused, holds otherwise (CONFLICT) or decided too is reconciled"
            )
        _check_person("--by", how.by, entry, "who reconciled it", "reconcile its fallback")
        if not how.note.strip():
            raise JournalError("--note: what was done to reconcile it is required")
        self._append({"type": "reconciled", "request_id": request_id, **asdict(how)})
        return replace(entry, reconciled=how)

    def _journaled(self, request_id: str) -> JournalEntry:
        entry = self.entries().get(request_id)
        if entry is None:
            raise JournalError(f"no fallback {request_id} in the journal {self.path}")
        return entry

    def mark_uploaded(
        self,
        entry: JournalEntry,
        status: str,
        message: str = "",
        also_submitted: bool = False,
        central_state: str = "",
    ) -> None:
        self._append({"type": "uploaded", "request_id": entry.event.request_id,
                      "outcome": entry.outcome, "at_ms": now_ms(), "status": status,
                      "message": message, "also_submitted": also_submitted,
                      "central_state": central_state})  # fmt: skip

    def mark_refused(self, entry: JournalEntry, reason: str) -> None:
        self._append({"type": "refused", "request_id": entry.event.request_id,
                      "outcome": entry.outcome, "at_ms": now_ms(), "reason": reason})  # fmt: skip

    def _append(self, line: dict[str, Any]) -> None:
        data = (json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n").encode()
        with self._locked() as fd:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # end a line torn by a crash; never extend it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)

    def compact(self, settled_before_ms: int) -> int:
        """Drops every fallback settled (JournalEntry.settled) before
        ``settled_before_ms``, and lines no one can read (torn by a crash);
        returns how many fallbacks left. The lines that stay are kept byte for byte."""
        with self._locked():
            lines = list(self._raw_lines())
            entries = _fold(line for _, line in lines).entries
            gone = {
                rid
                for rid, entry in entries.items()
                if entry.settled and entry.settled_at_ms < settled_before_ms
            }
            kept: list[bytes] = []
            torn = 0
            for raw, line in lines:
                rid = line.get("request_id") if line is not None else None
                if not isinstance(rid, str) or rid not in entries:
                    torn += 1
                elif rid not in gone:
                    kept.append(raw if raw.endswith(b"\n") else raw + b"\n")
            if gone or torn:
                self._replace(b"".join(kept))
        return len(gone)

    def _replace(self, data: bytes) -> None:
        """Writes ``data`` as the journal, whole or not at all."""
        replace_file(self.path, data)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """The journal's file, open for appending and locked: two commands of one
        workstation may write at once. A file compaction replaced while this waited
        for the lock is let go, and the new one taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        with locked(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT) as fd:
            if created:
                fsync_dir(self.path.parent)  # the new file's directory entry is durable too
            yield fd

    # -- reading -------------------------------------------------------------------

    def entries(self) -> dict[str, JournalEntry]:
        """Every journaled fallback by request id, in the order they happened."""
        return _fold(self._lines()).entries

    def torn_lines(self) -> int:
        """Lines that cannot be read (torn by a crash mid-write): skipped."""
        return _fold(self._lines()).torn

    def pending(self, teller_id: str) -> list[JournalEntry]:
        """What this teller still has to upload (each teller uploads its own)."""
        return [
            entry
            for entry in self.entries().values()
            if entry.pending and entry.event.teller_id == teller_id
        ]

    def _lines(self) -> Iterator[dict[str, Any] | None]:
        for _, line in self._raw_lines():
            yield line

    def _raw_lines(self) -> Iterator[tuple[bytes, dict[str, Any] | None]]:
        """Each non-blank line as written, and what it reads as (None: unreadable)."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            for raw in handle:
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    yield raw, None
                    continue
                yield raw, line if isinstance(line, dict) else None


def _check_person(option: str, who: str, entry: JournalEntry, role: str, act: str) -> None:
    """A person named for a fallback: named, and not the teller who keyed it (R11)."""
    if not who.strip():
        raise JournalError(f"{option}: {role} is required")
    if who == entry.event.teller_id:
        raise JournalError(f"{option}: the teller who keyed a transaction cannot {act} (R11)")


def _fold(lines: Iterable[dict[str, Any] | None]) -> _Fold:
    """The journal's state from its lines (None: one that cannot be read)."""
    fold = _Fold()
    for line in lines:
        try:
            known = line is not None and _apply(fold.entries, line)
        except (KeyError, TypeError, ValueError):
            known = False
        if not known:
            fold.torn += 1
    return fold


def _apply(entries: dict[str, JournalEntry], line: dict[str, Any]) -> bool:
    """Adds one line to the fold; False for a line it cannot place."""
    kind = line["type"]
    if kind == "fallback":
        event = FallbackEvent(**{k: v for k, v in line.items() if k != "type"})
        entries.setdefault(event.request_id, JournalEntry(event))
        return True
    entry = entries.get(line["request_id"])
    if entry is None:
        return False
    if kind == "onsite":
        decision = OnsiteDecision(
            line["authorizer"], line["outcome"], line["note"], int(line["at_ms"])
        )
        entries[entry.event.request_id] = replace(entry, onsite=decision)
        return True
    if kind == "reconciled":
        how = Reconciliation(str(line["by"]), str(line["note"]), int(line["at_ms"]))
        entries[entry.event.request_id] = replace(entry, reconciled=how)
        return True
    if kind in ("uploaded", "refused"):
        entries[entry.event.request_id] = replace(
            entry,
            sent_outcome=str(line["outcome"]),
            sent_at_ms=int(line["at_ms"]),
            refused=str(line.get("reason", "")),
            server_status=str(line.get("status", "")),
            server_message=str(line.get("message", "")),
            also_submitted=bool(line.get("also_submitted", entry.also_submitted)),
            central_state=str(line.get("central_state", entry.central_state)),
        )
        return True
    return False


def default_path(state_dir: Path) -> Path:
    return state_dir / JOURNAL_NAME
