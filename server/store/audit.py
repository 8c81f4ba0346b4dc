"""The append-only, hash-chained audit trail (R15).

Every record is ``sha256(domain | seq | prev | body)`` where ``prev`` is the hash of the
record before it (``GENESIS`` for seq 1) and ``body`` the canonical msgpack of the entry
(audit_records.py; the verifier's single pass is audit_chain.py). The hash is computed
here, not in Lua (Redis Lua only has sha1), and the script
server/lua/audit_append.lua stores a batch only if the chain head is still the one the
batch was chained from (compare-and-set); otherwise it returns the new head and we chain
again. Records live in one Redis stream under the id ``<seq>-0`` until the archiver
moves them, a segment at a time, into files (audit_segments.py, audit_trim.lua);
reading and verifying go through the files and then the stream as one trail.

Records come from two places. The server stages every record in the staging stream:
an action's in the same atomic step as the action (the scripts, stage_audit in
server/lua/_lib.lua, and the transactions of server/store/staging.py), so that a kill
right after the action cannot lose it; a refusal's with stage() before the reply. The
admin tools hand theirs to append() here. The writer chains both: each batch is the
oldest staged records plus what was handed over meanwhile, and audit_append.lua takes
the staged ones out of the staging stream in the step that chains them. A writer that
finds records staged by a process that died chains them too; so does the next server
to start.

Appends go through a group commit: whatever is queued while one script call is in
flight goes out as the next batch, so 50 concurrent appends cost a handful of round
trips (and of fsyncs, with ``appendfsync always``) instead of 50 conflicting ones.
Writers in other processes race for the head; one that loses twice takes the turn
(see audit_append.lua), so none of them starves."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from server.store.audit_chain import Anchor, ChainChecker, VerifyReport, id_key
from server.store.audit_records import (
    GENESIS,
    MAX_BODY_BYTES,
    OUTCOME_OK,
    OUTCOME_REPEAT,
    AuditAction,
    AuditConflict,
    AuditEntry,
    AuditError,
    AuditFormatError,
    AuditRecord,
    DetailValue,
    Fields,
    StoredRecord,
    chain_hash,
    parse_record,
    stream_id_for,
    text,
)
from server.store.audit_segments import AuditSegments, Segment
from server.store.audit_witness import WitnessRead
from server.store.keys import Keys
from server.store.scripts import load_script
from server.store.staging import stage_once

__all__ = [
    "DEFAULT_PREFIX",
    "GENESIS",
    "MAX_BODY_BYTES",
    "OUTCOME_OK",
    "OUTCOME_REPEAT",
    "Anchor",
    "AuditAction",
    "AuditConflict",
    "AuditEntry",
    "AuditError",
    "AuditFormatError",
    "AuditLog",
    "AuditRecord",
    "DetailValue",
    "Fields",
    "StoredRecord",
    "VerifyReport",
    "chain_hash",
    "parse_record",
    "stream_id_for",
]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "{authq}"
# How long a writer that lost the race twice may hold back the others (audit_append.lua);
# only reached if it dies holding the turn, as it normally lets go after one round trip.
_TURN_MS = 500
_HOUR_MS = 3_600_000


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
        staged_key: str | None = None,
        segments: AuditSegments | None = None,
        max_batch: int = 256,
        give_up_after_s: float = 10.0,
        linger_s: float = 0.0,
    ) -> None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("AuditLog needs a Redis client without decode_responses")
        self.client = client
        self.stream_key = stream_key or f"{prefix}:audit"
        self.head_key = head_key or f"{prefix}:audit-head"
        self.turn_key = turn_key or f"{prefix}:audit-turn"
        # Where the scripts stage their actions' records.
        self.staged_key = staged_key or Keys(prefix).audit_staged
        # The records moved out of Redis (audit_segments.py), and how far they go.
        self.segments = segments
        self.archived_key = Keys(prefix).audit_archived
        self.hours_key = Keys(prefix).audit_hours
        self.max_batch = max_batch
        self.give_up_after_s = give_up_after_s
        # How long the writer waits for more entries before each script call (unless
        # a full batch is already queued): the server's records are staged in Redis
        # before its replies (Center.record, the transition scripts), so nobody waits
        # on this, and under load each call carries everything of the last few
        # milliseconds instead of the two or three records of one round trip.
        self.linger_s = linger_s
        # Names this writer in the turn key (see audit_append.lua).
        self.writer_id = uuid.uuid4().hex
        self._script = load_script(client, "audit_append")
        self._queue: deque[_Pending] = deque()
        self._writer: asyncio.Task[None] | None = None
        # (seq, hash) of the last record as far as we know; None: read it first.
        self._head: tuple[int, str] | None = None
        # Set by kick(): something was staged since the writer last read the stream.
        self._kicked = False
        # Staged records this writer chained (for the tests).
        self.staged_chained = 0

    # -- writing -------------------------------------------------------------------

    @property
    def append_keys(self) -> list[str]:
        """The keys audit_append.lua takes, in its order."""
        return [self.stream_key, self.head_key, self.turn_key, self.staged_key, self.hours_key]

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
            self._start_writer()
        return pending

    async def stage(self, body: bytes) -> None:
        """Stages one canonical record body (AuditEntry.pack) for the writer to chain,
        as a script stages its action's: durable once this returns, and in the order
        of the staging stream (server/store/staging.py). Staged once, even if redis-py
        sends it again after a lost reply."""
        await stage_once(self.client, self.staged_key, body)
        self.kick()

    def kick(self) -> None:
        """Says that records were staged (a script did an audited action): the writer
        chains them with its next batch."""
        self._kicked = True
        self._start_writer()

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Chains what is queued here and what is staged, as far as Redis lets it.
        After ``timeout_s`` the writer is cancelled (False): what it had staged stays
        staged for the next writer, and the records queued here fail."""
        self.kick()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (writer := self._writer) is not None and not writer.done():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait({writer}, timeout=left)
            if not done:
                writer.cancel()
                await asyncio.wait({writer})
                return False
        return True

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued(), name="audit-writer")

    async def _write_queued(self) -> None:
        while True:
            if self.linger_s > 0 and len(self._queue) < self.max_batch:
                await asyncio.sleep(self.linger_s)
            self._kicked = False
            size = min(len(self._queue), self.max_batch)
            batch = [self._queue.popleft() for _ in range(size)]
            try:
                records, more_staged = await self._commit(batch)
            except asyncio.CancelledError:
                self._fail([*batch, *self._queue], AuditError("audit writer cancelled"))
                self._queue.clear()
                raise
            except Exception as exc:
                # The outcome may be unknown (a lost reply): read the head afresh.
                self._head = None
                self._fail(batch, exc)
                if self._queue:
                    continue
                # Staged records stay staged: the next kick, sweep or start chains them.
                log.warning("audit writer stopped: %s", exc)
                return
            for item, record in zip(batch, records, strict=True):
                if not item.future.done():
                    item.future.set_result(record)
            if not (self._queue or self._kicked or more_staged):
                return

    @staticmethod
    def _fail(items: Iterable[_Pending], exc: BaseException) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(exc)

    async def _commit(self, batch: list[_Pending]) -> tuple[list[AuditRecord], bool]:
        """Writes the oldest staged records and then the batch, growing the batch in
        place while it waits (see below). Returns the batch's records, and whether
        more staged records may be waiting (a full read)."""
        deadline = time.monotonic() + self.give_up_after_s
        keys = self.append_keys
        lost = 0
        while True:
            if self._head is None:
                self._head = await self.head()
            head_seq, head_hash = self._head
            # Read afresh on every try: a writer that won the race took what it read.
            room = self.max_batch - len(batch)
            staged = await self.read_staged(room) if room > 0 else []
            bodies = [body for _, body in staged] + [item.body for item in batch]
            if not bodies:
                return [], False
            links = _chain(head_seq, head_hash, bodies)
            # Lost twice in a row: ask for the turn so the next try cannot lose.
            claim = "1" if lost >= 2 else "0"
            last_staged = staged[-1][0] if staged else ""
            args: list[Any] = [
                head_seq, head_hash, GENESIS, self.writer_id, claim, _TURN_MS, last_staged
            ]  # fmt: skip
            for (seq, prev, digest), body in zip(links, bodies, strict=True):
                args += [seq, prev, digest, body]
            reply = await self._script(keys=keys, args=args)
            status = text(reply[0])
            if status in ("OK", "DONE"):
                self._head = (links[-1][0], links[-1][2])
                if status == "OK":  # DONE: maybe another writer's identical batch
                    self.staged_chained += len(staged)
                own = links[len(staged) :]
                records = [
                    AuditRecord(item.entry, seq, prev, digest, stream_id_for(seq))
                    for item, (seq, prev, digest) in zip(batch, own, strict=True)
                ]
                # A full read, or none for want of room: more may be staged.
                return records, len(staged) == room
            if status not in ("MOVED", "WAIT"):
                raise AuditError(f"audit_append refused the batch: {text(reply[1])}")
            self._head = (int(reply[1]), text(reply[2]))
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

    async def read_staged(self, count: int) -> list[tuple[str, bytes]]:
        """The oldest ``count`` staged records: (staging id, canonical body)."""
        page: Any = await self.client.xrange(self.staged_key, count=count)
        return [(text(sid), _staged_body(text(sid), fields)) for sid, fields in page or ()]

    # -- reading -------------------------------------------------------------------

    async def head(self) -> tuple[int, str]:
        """(seq, hash) of the chain head as stored; (0, GENESIS) for an empty log."""
        seq, head_hash = await self.client.hmget(self.head_key, ["seq", "hash"])
        if seq is None:
            return 0, GENESIS
        return int(seq), text(head_hash)

    async def archived(self) -> tuple[int, str]:
        """(seq, hash) of the last record moved out of Redis into the segment files;
        (0, GENESIS) while every record is in Redis."""
        seq, mark_hash = await self.client.hmget(self.archived_key, ["seq", "hash"])
        if seq is None:
            return 0, GENESIS
        return int(seq), text(mark_hash)

    async def first_seq_since(self, at_ms: int) -> int:
        """A seq from which on the trail holds every record of an action done at
        ``at_ms`` or later; 1 when the trail cannot tell (records chained before it
        kept its hour index). Every chained batch notes its hour in the index
        (audit_append.lua), and a record is chained after its action: the records
        chained from the hour before ``at_ms`` on are enough, the hour being a margin
        for clocks that differ between the server processes and Redis."""
        index = {
            int(hour): int(seq) for hour, seq in (await self.client.hgetall(self.hours_key)).items()
        }
        hour = at_ms // _HOUR_MS - 1
        if not index or hour <= min(index):
            return 1
        # The least seq of any hour since, not the first hour's: should Redis's clock
        # step back, a later seq can sit under an earlier hour.
        since = [seq for noted, seq in index.items() if noted >= hour]
        if since:
            return min(since)
        head, _ = await self.head()
        return head + 1

    async def stored(self, first: int, last: int, *, page_size: int = 500) -> list[StoredRecord]:
        """The records first..last still in Redis, as stored, read a page at a time (a
        long XRANGE would hold Redis up for everyone)."""
        records: list[StoredRecord] = []
        start = stream_id_for(first)
        while True:
            page = await self._xrange(start, stream_id_for(last), page_size)
            records += (StoredRecord.parse(stream_id, fields) for stream_id, fields in page)
            if len(page) < page_size:
                return records
            start = "(" + page[-1][0]

    async def read(
        self, from_seq: int = 0, count: int | None = None, *, page_size: int = 500
    ) -> AsyncIterator[AuditRecord]:
        """Records from ``from_seq`` on (all of them when count is None), from the
        segment files and then from Redis. Raises AuditFormatError at a record that
        cannot be parsed, AuditError if the records asked for were moved to segment
        files this log was not given."""
        if count is not None and count <= 0:
            return
        remaining = count
        if count is not None:
            page_size = min(page_size, count)
        async for stream_id, fields in self._trail(from_seq, page_size=page_size):
            yield parse_record(stream_id, fields)
            if remaining is not None:
                remaining -= 1
                if remaining <= 0:
                    return

    async def _trail(
        self,
        from_seq: int,
        *,
        page_size: int = 500,
        on_segment: Callable[[Segment, StoredRecord], None] | None = None,
        on_unreadable: Callable[[Segment, AuditFormatError], None] | None = None,
    ) -> AsyncIterator[tuple[str, Fields]]:
        """Every stored record from ``from_seq`` on, in seq order, as (stream id,
        fields): those moved to segment files, then the stream's. Records are moved
        while this runs (audit_trim.lua): where the stream starts later than the next
        seq, the records between are read from the files, up to the archived mark."""
        next_seq = max(from_seq, 1)
        start = stream_id_for(next_seq)
        while True:
            page = await self._xrange(start, "+", page_size)
            if not page or id_key(page[0][0])[0] > next_seq:
                mark, _ = await self.archived()
                if next_seq <= mark:
                    async for segment, record in self._cold(next_seq, mark, on_unreadable):
                        if on_segment is not None:
                            on_segment(segment, record)
                        yield stream_id_for(record.seq), record.fields()
                        next_seq = max(next_seq, record.seq + 1)
                    if next_seq <= mark and on_unreadable is None:
                        raise AuditFormatError(
                            f"seqs {next_seq}..{mark} are archived, but no segment file "
                            f"in {self._segments_dir()} holds them"
                        )
                    next_seq = max(next_seq, mark + 1)
                    start = stream_id_for(next_seq)
                    continue
            for stream_id, fields in page:
                yield stream_id, fields
                next_seq = max(next_seq, id_key(stream_id)[0] + 1)
            if len(page) < page_size:
                return
            start = "(" + page[-1][0]

    async def _cold(
        self,
        from_seq: int,
        to_seq: int,
        on_unreadable: Callable[[Segment, AuditFormatError], None] | None,
    ) -> AsyncIterator[tuple[Segment, StoredRecord]]:
        """The records from_seq..to_seq of the segment files, a file at a time."""
        if self.segments is None:
            raise AuditError(
                f"seqs {from_seq}..{to_seq} are archived in segment files: give the "
                "archive directory (authq-admin --archive-dir, default <data-dir>/archive)"
            )
        segments = self.segments
        for segment in await asyncio.to_thread(segments.segments):
            if segment.last < from_seq or segment.first > to_seq:
                continue
            try:
                records = await asyncio.to_thread(segments.read_all, segment)
            except AuditFormatError as exc:
                if on_unreadable is None:
                    raise
                on_unreadable(segment, exc)
                continue
            for record in records:
                if from_seq <= record.seq <= to_seq:
                    yield segment, record

    def _segments_dir(self) -> str:
        return "(none given)" if self.segments is None else str(self.segments.directory)

    async def _xrange(self, start: str, end: str, count: int) -> list[tuple[str, Fields]]:
        page: Any = await self.client.xrange(self.stream_key, min=start, max=end, count=count)
        return [(text(stream_id), fields or {}) for stream_id, fields in page or ()]

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

    async def verify(
        self,
        *,
        after: Anchor | None = None,
        progress: Callable[[int, int], None] | None = None,
        progress_every: int = 10_000,
        max_problems: int = 1000,
        witness: WitnessRead | None = None,
    ) -> VerifyReport:
        """Walks the trail in seq order, the segment files and then the stream,
        recomputing every hash, and checks that seqs run 1, 2, 3... (in Redis under ids
        ``<seq>-0``, in a file within the seqs its name gives), that each record names
        its predecessor's hash, that the archived mark names a record of the chain and
        that the head names the last record. Appends and archiving while it runs are
        fine: the head is compared with the stream's top read atomically.

        ``after``: start there instead of at seq 1 (the next record must name its
        hash). ``progress(checked, seq)`` is called every ``progress_every`` records.
        ``witness``: the chain heads noted outside Redis (audit_witness.py), which
        the records read must still match."""
        checker = ChainChecker(max_problems)
        if witness is not None:
            for problem in witness.problems:
                checker.problem(problem)
            checker.witness((note.anchor, note.noted_at_ms) for note in witness.notes)
        if after is not None and after.seq > 0:
            checker.resume(after)
        from_seq = after.seq + 1 if after is not None else 1
        mark_seq, mark_hash = await self.archived()
        if from_seq <= mark_seq and self.segments is None:
            checker.problem(
                f"seqs {from_seq}..{mark_seq} are archived in segment files, which were not "
                "given: not checked"
            )
            checker.resume(Anchor(mark_seq, mark_hash))
            from_seq = mark_seq + 1

        def in_place(segment: Segment, record: StoredRecord) -> None:
            if not segment.first <= record.seq <= segment.last:
                checker.problem(
                    f"seq {record.seq}: in segment {segment.path.name}, outside its seqs "
                    "(record moved)"
                )

        def unreadable(segment: Segment, exc: AuditFormatError) -> None:
            checker.unreadable(str(exc))

        mark_found = from_seq > mark_seq
        async for stream_id, fields in self._trail(
            from_seq, page_size=1000, on_segment=in_place, on_unreadable=unreadable
        ):
            checker.check(stream_id, fields)
            if progress is not None and checker.checked % progress_every == 0:
                progress(checker.checked, checker.last_seq or 0)
            if checker.last_seq == mark_seq and not mark_found:
                mark_found = True
                if checker.last_hash != mark_hash:
                    checker.problem(
                        f"seq {mark_seq}: not the record archived (the archived mark names "
                        f"hash {mark_hash[:16]}): the segment files were replaced"
                    )
        if not mark_found:
            checker.problem(f"the archived mark names seq {mark_seq}, which no record has")
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hmget(self.head_key, ["seq", "hash"])
            pipe.xrevrange(self.stream_key, "+", "-", count=1)
            head, top = await pipe.execute()
        if top:
            top_id = text(top[0][0])
            if checker.last_id is None or id_key(top_id) > id_key(checker.last_id):
                start = "-" if checker.last_id is None else "(" + checker.last_id
                async for stream_id, fields in self._raw(start, top_id):
                    checker.check(stream_id, fields)
        checker.check_witness_end()
        checker.check_head(head[0], head[1])
        return checker.report()


def _chain(head_seq: int, head_hash: str, bodies: list[bytes]) -> list[tuple[int, str, str]]:
    """(seq, prev, hash) of each body, chained from the head."""
    links: list[tuple[int, str, str]] = []
    prev = head_hash
    for offset, body in enumerate(bodies, start=1):
        seq = head_seq + offset
        digest = chain_hash(seq, prev, body)
        links.append((seq, prev, digest))
        prev = digest
    return links


def _staged_body(stage_id: str, fields: Fields) -> bytes:
    """A staged record's canonical body. Under 'b' it was packed by AuditEntry.pack
    (Python); under 'p' a script filled parts in (stage_audit), so it is re-encoded."""
    plain = fields.get(b"b")
    if plain is not None:
        return bytes(plain)
    try:
        return AuditEntry.unpack(bytes(fields[b"p"])).pack()
    except (KeyError, TypeError, ValueError, AuditFormatError) as exc:
        # Chained as what it is: dropped, it would be lost; left, it would block
        # every batch after it.
        raw = b"".join(bytes(k) + b"=" + bytes(v) for k, v in fields.items())
        return AuditEntry(
            actor="-", role="-", origin="-", action=AuditAction.STAGED_UNREADABLE,
            target=stage_id, outcome=f"unreadable staged record: {exc}"[:500],
            details={"raw": raw[:4096].hex()},
        ).pack()  # fmt: skip
