"""The records of the hash-chained audit trail (R15): what an entry holds, its canonical
body, and the chain hash that links each record to the one before it.

Every record is ``sha256(domain | seq | prev | body)`` where ``prev`` is the hash of the
record before it (``GENESIS`` for seq 1) and ``body`` the canonical msgpack of the entry."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack

GENESIS = "0" * 64
# Names the hash scheme, so a later scheme can never produce a colliding hash input.
_DOMAIN = b"authq-audit-v1\n"
# A record is kept forever: the details are a small map, not a place for documents.
MAX_BODY_BYTES = 16 * 1024
OUTCOME_OK = "OK"
# A retried call (same request id, same content) that found its action already done:
# recorded, so the trail shows every call, but not as a second action done.
OUTCOME_REPEAT = "REPEAT: already done by an earlier call; nothing changed"

DetailValue = str | int | float | bool | None
# A stream entry's fields as redis-py returns them (bytes keys and values).
Fields = Mapping[Any, Any]


class AuditAction(StrEnum):
    """The actions known so far; AuditEntry.action takes any non-empty string."""

    SUBMIT = "SUBMIT"
    ONSITE_REVIEW = "ONSITE_REVIEW"
    CANCEL = "CANCEL"
    CLAIM = "CLAIM"
    REQUEUE = "REQUEUE"
    DECIDE = "DECIDE"
    SUPPLY = "SUPPLY"
    REPRIORITIZE_REQUEST = "REPRIORITIZE_REQUEST"
    REPRIORITIZE_CONFIRM = "REPRIORITIZE_CONFIRM"
    ACCOUNT_CREATE = "ACCOUNT_CREATE"
    ACCOUNT_DISABLE = "ACCOUNT_DISABLE"
    ACCOUNT_REMOVE = "ACCOUNT_REMOVE"
    POLICY_RELOAD = "POLICY_RELOAD"
    EMERGENCY_DECLARE = "EMERGENCY_DECLARE"
    EMERGENCY_END = "EMERGENCY_END"
    RECORD_ACCESS = "RECORD_ACCESS"
    # A staged record the writer could not read back (server/store/audit.py).
    STAGED_UNREADABLE = "STAGED_UNREADABLE"


class AuditError(Exception):
    pass


class AuditFormatError(AuditError):
    """A stored record that cannot be read back (run ``authq-admin audit verify``)."""


class AuditConflict(AuditError):
    """The chain head kept moving under us (other writers) until we gave up."""


_TEXT_FIELDS = ("actor", "role", "origin", "action", "target", "outcome")
_DETAIL_TYPES = frozenset({str, int, float, bool})


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What happened: who (actor, role, origin), what (action, target), when and how it
    ended (outcome: ``OK`` or the refusal message / rule)."""

    actor: str
    role: str
    origin: str
    action: str
    target: str
    outcome: str = OUTCOME_OK
    details: Mapping[str, DetailValue] = field(default_factory=dict)
    at_ms: int = field(default_factory=_now_ms)

    def __post_init__(self) -> None:
        # Built for every action (and every record verify reads): exact types take the
        # quick path; subclasses such as enum members become their plain value, so that
        # a body unpacks to fields equal to the ones packed.
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if type(value) is not str:
                if not isinstance(value, str):
                    raise TypeError(f"AuditEntry.{name} must be a str, got {type(value).__name__}")
                object.__setattr__(self, name, str(value))
        if not self.action:
            raise ValueError("AuditEntry.action must not be empty")
        if type(self.at_ms) is not int or self.at_ms < 0:
            raise TypeError(f"AuditEntry.at_ms must be a non-negative int, got {self.at_ms!r}")
        # A private copy: the caller's dict changing later must not change the entry.
        details = dict(self.details)
        for key, value in details.items():
            if type(key) is not str:
                raise TypeError(f"AuditEntry.details keys must be str, got {key!r}")
            if value is None or type(value) in _DETAIL_TYPES:
                continue
            if isinstance(value, str):
                details[key] = str(value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                details[key] = float(value) if isinstance(value, float) else int(value)
            else:
                raise TypeError(
                    f"AuditEntry.details[{key!r}] must be str, int, float, bool or None, "
                    f"got {type(value).__name__}"
                )
        object.__setattr__(self, "details", details)

    def pack(self) -> bytes:
        """The canonical body: msgpack, map keys sorted at every level, so that anyone
        can re-encode a decoded entry to the very bytes that were hashed."""
        body = {
            "action": self.action,
            "actor": self.actor,
            "at_ms": self.at_ms,
            "details": dict(sorted(self.details.items())),
            "origin": self.origin,
            "outcome": self.outcome,
            "role": self.role,
            "target": self.target,
        }
        packed: bytes = msgpack.packb(body, use_bin_type=True)
        return packed

    @classmethod
    def unpack(cls, body: bytes) -> AuditEntry:
        try:
            raw = msgpack.unpackb(body, raw=False)
            return cls(
                actor=raw["actor"],
                role=raw["role"],
                origin=raw["origin"],
                action=raw["action"],
                target=raw["target"],
                outcome=raw["outcome"],
                details=raw["details"],
                at_ms=raw["at_ms"],
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise AuditFormatError(f"not an audit entry body: {exc}") from None


@dataclass(slots=True)
class StagedAudit:
    """An action's audit record, handed to the script that does the action so that it
    stages the record in the same step (stage_audit in server/lua/_lib.lua): a kill
    right after the action cannot lose it. ``staged``: the script did the action and
    staged the record; if it stays False, the caller records the outcome itself.
    ``repeat``: the script found the action already done by an earlier call (a retry
    after a lost reply) and changed nothing."""

    body: bytes
    staged: bool = False
    repeat: bool = False


@dataclass(frozen=True, slots=True)
class AuditRecord:
    entry: AuditEntry
    seq: int
    prev: str
    hash: str
    stream_id: str


def chain_hash(seq: int, prev: str, body: bytes) -> str:
    """Hex sha256 over the scheme name, seq, previous hash and body bytes. Neither seq
    nor prev can contain the newline separator, and the body comes last, so distinct
    records never share a hash input."""
    digest = hashlib.sha256(_DOMAIN)
    digest.update(b"%d\n%s\n" % (seq, prev.encode("ascii")))
    digest.update(body)
    return digest.hexdigest()


def stream_id_for(seq: int) -> str:
    return f"{seq}-0"


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One record exactly as the chain stores it (audit_append.lua's stream fields)."""

    seq: int
    prev: str
    hash: str
    body: bytes

    @classmethod
    def parse(cls, stream_id: str, fields: Fields) -> StoredRecord:
        """A stream entry as audit_append.lua stored it; AuditFormatError if it is not."""
        try:
            return cls(
                int(fields[b"seq"]), text(fields[b"prev"]), text(fields[b"hash"]),
                bytes(fields[b"body"]),
            )  # fmt: skip
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise AuditFormatError(
                f"stream entry {stream_id}: malformed record ({exc!r})"
            ) from None

    def fields(self) -> Fields:
        """As a Redis stream entry's fields, for the chain checker."""
        return {
            b"seq": str(self.seq).encode(),
            b"prev": self.prev.encode(),
            b"hash": self.hash.encode(),
            b"body": self.body,
        }


def parse_record(stream_id: Any, fields: Fields) -> AuditRecord:
    """One stream entry as stored by audit_append.lua; AuditFormatError if it is not."""
    sid = text(stream_id)
    stored = StoredRecord.parse(sid, fields)
    return AuditRecord(AuditEntry.unpack(stored.body), stored.seq, stored.prev, stored.hash, sid)
