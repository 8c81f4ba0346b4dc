"""The append-only, hash-chained audit trail (R15).

Every record is ``sha256(domain | seq | prev | body)`` where ``prev`` is the hash of the
record before it (``GENESIS`` for seq 1) and ``body`` the canonical msgpack of the entry.
The hash is computed here, not in Lua (Redis Lua only has sha1), and the script
server/lua/audit_append.lua stores a batch only if the chain head is still the one the
batch was chained from (compare-and-set); otherwise it returns the new head and we chain
again. Records live in one Redis stream under the id ``<seq>-0`` and are never trimmed.

Appends go through a group commit: whatever is queued while one script call is in
flight goes out as the next batch, so 50 concurrent appends cost a handful of round
trips (and of fsyncs, with ``appendfsync always``) instead of 50 conflicting ones.
Writers in other processes race for the head; one that loses twice takes the turn
(see audit_append.lua), so none of them starves."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from typing import Any

import msgpack
import redis.asyncio as aioredis

DEFAULT_PREFIX = "{authq}"
GENESIS = "0" * 64
# Names the hash scheme, so a later scheme can never produce a colliding hash input.
_DOMAIN = b"authq-audit-v1\n"
# A record is kept forever: the details are a small map, not a place for documents.
MAX_BODY_BYTES = 16 * 1024
OUTCOME_OK = "OK"
# How long a writer that lost the race twice may hold back the others (audit_append.lua);
# only reached if it dies holding the turn, as it normally lets go after one round trip.
_TURN_MS = 500

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


@dataclass(frozen=True, slots=True)
class AuditRecord:
    entry: AuditEntry
    seq: int
    prev: str
    hash: str
    stream_id: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    checked: int
    problems: list[str]


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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, sub = stream_id.partition("-")
    return int(ms), int(sub or 0)


def _script_source() -> str:
    # The shared prelude first, like every script of server/store/scripts.py.
    lua = resources.files("server").joinpath("lua")
    return (
        lua.joinpath("_lib.lua").read_text("utf-8")
        + "\n"
        + lua.joinpath("audit_append.lua").read_text("utf-8")
    )


def parse_record(stream_id: Any, fields: Fields) -> AuditRecord:
    """One stream entry as stored by audit_append.lua; AuditFormatError if it is not."""
    sid = _text(stream_id)
    try:
        seq = int(fields[b"seq"])
        prev = _text(fields[b"prev"])
        stored_hash = _text(fields[b"hash"])
        body = bytes(fields[b"body"])
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise AuditFormatError(f"stream entry {sid}: malformed record ({exc!r})") from None
    return AuditRecord(AuditEntry.unpack(body), seq, prev, stored_hash, sid)


@dataclass(slots=True)
class _Pending:
    entry: AuditEntry
    body: bytes
    future: asyncio.Future[AuditRecord]


class AuditLog:
    """The audit trail in one Redis stream plus a chain head ``{seq, hash}``.

    Needs a client without ``decode_responses`` (bodies are binary). One instance per
    process and event loop: its group commit keeps the chain head it last wrote."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        stream_key: str | None = None,
        head_key: str | None = None,
        turn_key: str | None = None,
        max_batch: int = 256,
        give_up_after_s: float = 10.0,
    ) -> None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("AuditLog needs a Redis client without decode_responses")
        self.client = client
        self.stream_key = stream_key or f"{prefix}:audit"
        self.head_key = head_key or f"{prefix}:audit-head"
        self.turn_key = turn_key or f"{prefix}:audit-turn"
        self.max_batch = max_batch
        self.give_up_after_s = give_up_after_s
        # Names this writer in the turn key (see audit_append.lua).
        self.writer_id = uuid.uuid4().hex
        self._script = client.register_script(_script_source())
        self._queue: deque[_Pending] = deque()
        self._writer: asyncio.Task[None] | None = None
        # (seq, hash) of the last record as far as we know; None: read it first.
        self._head: tuple[int, str] | None = None

    # -- writing -------------------------------------------------------------------

    async def append(self, entry: AuditEntry) -> AuditRecord:
        """Appends one record: one script call, shared with whatever else is queued.
        A caller cancelled while waiting does not withdraw its entry: the action it
        records has already happened."""
        (item,) = self._enqueue([entry])
        return await item.future

    async def append_many(self, entries: Iterable[AuditEntry]) -> list[AuditRecord]:
        """Appends the entries in order as consecutive records (nothing interleaves),
        up to max_batch per script call."""
        pending = self._enqueue(entries)
        return list(await asyncio.gather(*(item.future for item in pending)))

    def _enqueue(self, entries: Iterable[AuditEntry]) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        pending: list[_Pending] = []
        for entry in entries:
            body = entry.pack()
            if len(body) > MAX_BODY_BYTES:
                raise ValueError(
                    f"audit entry body is {len(body)} bytes, over {MAX_BODY_BYTES}: "
                    "keep details small"
                )
            pending.append(_Pending(entry, body, loop.create_future()))
        if pending:
            self._queue.extend(pending)
            if self._writer is None or self._writer.done():
                self._writer = asyncio.create_task(self._write_queued(), name="audit-writer")
        return pending

    async def _write_queued(self) -> None:
        while self._queue:
            size = min(len(self._queue), self.max_batch)
            batch = [self._queue.popleft() for _ in range(size)]
            try:
                records = await self._commit(batch)
            except asyncio.CancelledError:
                self._fail([*batch, *self._queue], AuditError("audit writer cancelled"))
                self._queue.clear()
                raise
            except Exception as exc:
                # The outcome may be unknown (a lost reply): read the head afresh.
                self._head = None
                self._fail(batch, exc)
                continue
            for item, record in zip(batch, records, strict=True):
                if not item.future.done():
                    item.future.set_result(record)

    @staticmethod
    def _fail(items: Iterable[_Pending], exc: BaseException) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(exc)

    async def _commit(self, batch: list[_Pending]) -> list[AuditRecord]:
        """Writes the batch, growing it in place while it waits (see below)."""
        deadline = time.monotonic() + self.give_up_after_s
        keys = [self.stream_key, self.head_key, self.turn_key]
        lost = 0
        while True:
            if self._head is None:
                self._head = await self.head()
            head_seq, head_hash = self._head
            records = _chain(head_seq, head_hash, batch)
            # Lost twice in a row: ask for the turn so the next try cannot lose.
            claim = "1" if lost >= 2 else "0"
            args: list[Any] = [head_seq, head_hash, GENESIS, self.writer_id, claim, _TURN_MS]
            for record, item in zip(records, batch, strict=True):
                args += [record.seq, record.prev, record.hash, item.body]
            reply = await self._script(keys=keys, args=args)
            status = _text(reply[0])
            if status in ("OK", "DONE"):
                self._head = (records[-1].seq, records[-1].hash)
                return records
            if status not in ("MOVED", "WAIT"):
                raise AuditError(f"audit_append refused the batch: {_text(reply[1])}")
            self._head = (int(reply[1]), _text(reply[2]))
            if time.monotonic() > deadline:
                raise AuditConflict(f"the audit chain head kept moving for {self.give_up_after_s}s")
            if status == "WAIT":
                # Another writer holds the turn for about one round trip.
                await asyncio.sleep(0.0005)
            else:
                lost += 1
            # Whatever queued meanwhile rides along: a win under contention then
            # commits more, instead of each entry paying for its own lost races.
            while self._queue and len(batch) < self.max_batch:
                batch.append(self._queue.popleft())

    # -- reading -------------------------------------------------------------------

    async def head(self) -> tuple[int, str]:
        """(seq, hash) of the chain head as stored; (0, GENESIS) for an empty log."""
        seq, head_hash = await self.client.hmget(self.head_key, ["seq", "hash"])
        if seq is None:
            return 0, GENESIS
        return int(seq), _text(head_hash)

    async def read(
        self, from_seq: int = 0, count: int | None = None, *, page_size: int = 500
    ) -> AsyncIterator[AuditRecord]:
        """Records from ``from_seq`` on (all of them when count is None), fetched in
        pages. Raises AuditFormatError at a record that cannot be parsed."""
        start = stream_id_for(max(from_seq, 1))
        remaining = count
        while remaining is None or remaining > 0:
            want = page_size if remaining is None else min(page_size, remaining)
            page = await self._xrange(start, "+", want)
            for stream_id, fields in page:
                yield parse_record(stream_id, fields)
            if len(page) < want:
                return
            if remaining is not None:
                remaining -= len(page)
            start = "(" + page[-1][0]

    async def _xrange(self, start: str, end: str, count: int) -> list[tuple[str, Fields]]:
        page: Any = await self.client.xrange(self.stream_key, min=start, max=end, count=count)
        return [(_text(stream_id), fields or {}) for stream_id, fields in page or ()]

    async def _raw(
        self, start: str = "-", end: str = "+", *, page_size: int = 1000
    ) -> AsyncIterator[tuple[str, Fields]]:
        while True:
            page = await self._xrange(start, end, page_size)
            for item in page:
                yield item
            if len(page) < page_size:
                return
            start = "(" + page[-1][0]

    async def verify(self, *, max_problems: int = 1000) -> VerifyReport:
        """Walks the whole stream in stream order, recomputing every hash, and checks
        that seqs run 1, 2, 3... under ids ``<seq>-0``, that each record names its
        predecessor's hash, and that the head names the last record. Appends made while
        it runs are fine: the head is compared with the stream's top read atomically."""
        checker = _ChainChecker(max_problems)
        async for stream_id, fields in self._raw():
            checker.check(stream_id, fields)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hmget(self.head_key, ["seq", "hash"])
            pipe.xrevrange(self.stream_key, "+", "-", count=1)
            head, top = await pipe.execute()
        if top:
            top_id = _text(top[0][0])
            if checker.last_id is None or _id_key(top_id) > _id_key(checker.last_id):
                start = "-" if checker.last_id is None else "(" + checker.last_id
                async for stream_id, fields in self._raw(start, top_id):
                    checker.check(stream_id, fields)
        checker.check_head(head[0], head[1])
        return checker.report()


def _chain(head_seq: int, head_hash: str, batch: list[_Pending]) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev = head_hash
    for offset, item in enumerate(batch, start=1):
        seq = head_seq + offset
        digest = chain_hash(seq, prev, item.body)
        records.append(AuditRecord(item.entry, seq, prev, digest, stream_id_for(seq)))
        prev = digest
    return records


class _ChainChecker:
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

    def problem(self, text: str) -> None:
        if len(self.problems) < self.max_problems:
            self.problems.append(text)
        else:
            self.dropped += 1

    def check(self, stream_id: str, fields: Fields) -> None:
        self.checked += 1
        self.last_id = stream_id
        try:
            seq = int(fields[b"seq"])
            prev = _text(fields[b"prev"])
            stored = _text(fields[b"hash"])
            body = bytes(fields[b"body"])
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
            self.problem(f"stream entry {stream_id}: malformed record ({exc!r})")
            self.expected = self.prev_hash = self.last_seq = self.last_hash = None
            return
        self.last_seq, self.last_hash = seq, stored
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

    def check_head(self, raw_seq: bytes | None, raw_hash: bytes | None) -> None:
        if raw_seq is None:
            if self.checked:
                self.problem("the chain head is missing but the log has records")
            return
        head_seq, head_hash = _text(raw_seq), _text(raw_hash or b"")
        if not self.checked:
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
        return VerifyReport(ok=not problems, checked=self.checked, problems=problems)
