"""Moves the audit trail's older records out of Redis into segment files
(server/store/audit_segments.py): a whole segment at a time, once its newest record is
older than the keep-hot window, so Redis holds days of the trail, not all of it.

Each segment is written and fsynced first, then taken out of Redis by audit_trim.lua,
which also moves the archived mark. A mover that dies in between leaves the records
in both places; the next round (its own or another process's) writes the same file
again, finds it already there with the same bytes, and trims. Readers find every
record either way (AuditLog._trail)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from server.store.audit import Anchor, AuditLog
from server.store.audit_records import AuditEntry, AuditError, AuditFormatError, text
from server.store.audit_segments import SEGMENT_RECORDS, AuditSegments
from server.store.audit_witness import AuditWitness
from server.store.scripts import load_script

# How often the archiver notes the chain's head outside Redis: a rewrite of the
# trail is caught for every record chained before the last note.
WITNESS_EVERY_S = 300.0

log = logging.getLogger(__name__)


class AuditMover:
    def __init__(
        self, audit: AuditLog, *, segment_records: int = SEGMENT_RECORDS,
        witness_every_s: float = WITNESS_EVERY_S,
    ) -> None:  # fmt: skip
        if audit.segments is None:
            raise ValueError("the audit log has no segment files to move records to")
        if segment_records < 1:
            raise ValueError("a segment holds at least one record")
        self.audit = audit
        self.segments: AuditSegments = audit.segments
        self.segment_records = segment_records
        self._trim = load_script(audit.client, "audit_trim")
        self.moved_total = 0
        self.witness = AuditWitness.beside(self.segments.directory)
        self.witness_every_s = witness_every_s
        self._next_note = 0.0

    async def note_head(self) -> bool:
        """Notes the chain's head in the witness file, at most every
        ``witness_every_s`` and only if the chain grew (audit_witness.py)."""
        if time.monotonic() < self._next_note:
            return False
        self._next_note = time.monotonic() + self.witness_every_s
        seq, digest = await self.audit.head()
        if seq == 0:
            return False
        at_ms = int(time.time() * 1000)
        return await asyncio.to_thread(self.witness.note, Anchor(seq, digest), at_ms)

    async def move_due(self, older_than_ms: int, stop: Callable[[], bool] = lambda: False) -> int:
        """Moves every whole segment whose newest record is older than
        ``older_than_ms`` (epoch ms), oldest first, until none is due or ``stop()``
        says so. Returns how many records it moved."""
        moved = 0
        while not stop():
            done = await self.move_one(older_than_ms)
            if not done:
                break
            moved += done
        return moved

    async def move_one(self, older_than_ms: int) -> int:
        """Moves the next segment if it is whole and due; returns its record count, or
        0 when there is nothing to move yet."""
        mark, _ = await self.audit.archived()
        first, last = mark + 1, mark + self.segment_records
        try:
            # The segment's newest record alone first: most rounds find it missing
            # (not a whole segment yet) or too young, and read nothing more.
            newest = await self.audit.stored(last, last)
            if not newest or AuditEntry.unpack(newest[0].body).at_ms >= older_than_ms:
                return 0
            records = await self.audit.stored(first, last)
        except AuditFormatError as exc:
            # Moving it would hide the damage in a file: it stays for verify to name.
            log.error("the audit trail cannot be moved past seq %d: %s", mark, exc)
            return 0
        if [r.seq for r in records] != list(range(first, last + 1)):
            log.error("the audit trail has a gap after seq %d: run `audit verify`", mark)
            return 0
        await asyncio.to_thread(self.segments.write, records)
        reply = await self._trim(
            keys=[self.audit.stream_key, self.audit.archived_key],
            args=[first, last, records[-1].hash],
        )
        status = text(reply[0])
        if status == "BAD":
            raise AuditError(f"audit_trim refused seqs {first}..{last}: {text(reply[1])}")
        if status == "OK":
            self.moved_total += len(records)
            log.info("audit seqs %d..%d moved to %s", first, last, self.segments.directory)
        return len(records)
