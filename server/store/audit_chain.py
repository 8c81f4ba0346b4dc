"""Checks an audit trail in one pass (``AuditLog.verify``, ``authq-admin audit
verify``): every hash recomputed, seqs consecutive under ids ``<seq>-0``, each record
naming its predecessor's hash, and the chain head naming the last record. The pass
starts at seq 1, or after an anchor: a seq and the hash a previous verify ended on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from server.store.audit_records import (
    GENESIS,
    AuditEntry,
    AuditFormatError,
    Fields,
    StoredRecord,
    chain_hash,
    stream_id_for,
    text,
)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A record's seq and hash, taken as verified: a verify from there checks what
    comes after it (``audit verify --after SEQ:HASH``)."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    checked: int
    problems: list[str]
    # The last record checked, to verify from next time; None when none was.
    last: Anchor | None = None
    # How many of the witness's notes (audit_witness.py) the trail was checked against.
    witnessed: int = 0


def id_key(stream_id: str) -> tuple[int, int]:
    ms, _, sub = stream_id.partition("-")
    return int(ms), int(sub or 0)


class ChainChecker:
    """The state of verify()'s single pass over the stream."""

    def __init__(self, max_problems: int) -> None:
        self.max_problems = max_problems
        self.problems: list[str] = []
        self.dropped = 0
        self.checked = 0
        # The next seq in order, and the stored hash of the record before it; None
        # after a record too broken to read, whose successor then restarts the count.
        self.expected: int | None = 1
        self.prev_hash: str | None = GENESIS
        self.last_id: str | None = None
        self.last_seq: int | None = None
        self.last_hash: str | None = None
        # Set by resume(): what came before was not read here.
        self.resumed = False
        # seq -> (hash, when noted) that the trail must still hold (witness()).
        self.witnessed: dict[int, tuple[str, int]] = {}
        self.witness_checked = 0

    def witness(self, notes: Iterable[tuple[Anchor, int]]) -> None:
        """Hashes noted outside Redis (audit_witness.py), with when they were noted:
        the record of each seq read must still have its hash."""
        for anchor, noted_at_ms in notes:
            self.witnessed[anchor.seq] = (anchor.hash, noted_at_ms)

    def _check_witnessed(self, seq: int, stored: str) -> None:
        noted = self.witnessed.pop(seq, None)
        if noted is None:
            return
        self.witness_checked += 1
        if stored != noted[0]:
            self.problem(
                f"seq {seq}: not the record the witness noted at {_when(noted[1])} (hash "
                f"{noted[0][:16]}): the trail was rewritten at or before it"
            )

    def check_witness_end(self) -> None:
        """Notes past the last record read: records the witness saw are gone."""
        last = self.last_seq or 0
        for seq, (_, noted_at_ms) in sorted(self.witnessed.items()):
            if seq > last:
                self.problem(
                    f"the witness noted seq {seq} at {_when(noted_at_ms)}, but the trail "
                    f"ends at seq {last} (records removed)"
                )
                break

    def resume(self, after: Anchor) -> None:
        """Goes on from ``after`` as if it had just been checked."""
        self.expected, self.prev_hash = after.seq + 1, after.hash
        self.last_seq, self.last_hash = after.seq, after.hash
        self.last_id = stream_id_for(after.seq)
        self.resumed = True

    def problem(self, text: str) -> None:
        if len(self.problems) < self.max_problems:
            self.problems.append(text)
        else:
            self.dropped += 1

    def check(self, stream_id: str, fields: Fields) -> None:
        self.checked += 1
        self.last_id = stream_id
        try:
            record = StoredRecord.parse(stream_id, fields)
        except AuditFormatError as exc:
            self.unreadable(str(exc))
            return
        seq, prev, stored, body = record.seq, record.prev, record.hash, record.body
        self.last_seq, self.last_hash = seq, stored
        self._check_witnessed(seq, stored)
        if chain_hash(seq, prev, body) != stored:
            self.problem(f"seq {seq}: stored hash does not match its content (record changed)")
        try:
            AuditEntry.unpack(body)
        except AuditFormatError as exc:
            self.problem(f"seq {seq}: {exc}")
        if stream_id != stream_id_for(seq):
            self.problem(
                f"seq {seq}: stored under stream id {stream_id}, not {stream_id_for(seq)} "
                "(record moved or re-added)"
            )
        if self.expected is None or seq == self.expected:
            if self.prev_hash is not None and prev != self.prev_hash:
                self.problem(
                    f"seq {seq}: prev does not match the hash of seq {seq - 1} "
                    "(a record before it was changed or replaced)"
                )
        elif seq > self.expected:
            missing = (
                f"seq {self.expected}"
                if seq == self.expected + 1
                else f"seqs {self.expected}..{seq - 1}"
            )
            self.problem(f"{missing} missing before seq {seq} (records removed or moved)")
        else:
            self.problem(
                f"seq {seq} found after seq {self.expected - 1} (records reordered or duplicated)"
            )
            return  # out of place: the chain continues from the record before it
        self.expected = seq + 1
        self.prev_hash = stored

    def unreadable(self, text: str) -> None:
        """A part of the trail that cannot be read at all (a damaged segment file): the
        record after it restarts the count."""
        self.problem(text)
        self.expected = self.prev_hash = self.last_seq = self.last_hash = None

    def check_head(self, raw_seq: bytes | None, raw_hash: bytes | None) -> None:
        if raw_seq is None:
            if self.checked:
                self.problem("the chain head is missing but the log has records")
            return
        head_seq, head_hash = text(raw_seq), text(raw_hash or b"")
        if not self.checked and not self.resumed:
            self.problem(f"the chain head points at seq {head_seq} but the log is empty")
        elif head_seq != str(self.last_seq) or head_hash != self.last_hash:
            self.problem(
                f"the chain head points at seq {head_seq} ({head_hash[:16]}) but the last "
                f"record is seq {self.last_seq} ({(self.last_hash or '?')[:16]}) "
                "(records removed at the end, or the head moved)"
            )

    def report(self) -> VerifyReport:
        problems = list(self.problems)
        if self.dropped:
            problems.append(f"... and {self.dropped} more problems")
        last = None
        if self.checked and self.last_seq is not None and self.last_hash is not None:
            last = Anchor(self.last_seq, self.last_hash)
        return VerifyReport(ok=not problems, checked=self.checked, problems=problems, last=last,
                            witnessed=self.witness_checked)  # fmt: skip


def _when(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
