"""What the center knows about a branch at submit time: its region (which policy
applies), its enrollment in central authorization (R10), and its extended-hours
windows (R9), requested by the branch and decided by a supervisor.

Submits read these facts through a short cache (``cache_ms``, 1 s by default), so a
suspension or a newly approved window takes effect on every server process within that
time (the same bound as revoking an open session stream) without adding a Redis round
trip to every submit."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis

from server.errors import FailedPrecondition, InvalidArgument, NotFound
from server.policy.enrollment import ENROLLED, Enrollment
from server.policy.hours import ExtendedWindow
from server.store.audit_records import StagedAudit
from server.store.keys import Keys
from server.store.queue_reads import as_text, field_reader
from server.store.scripts import load_script
from server.store.staging import audited_transaction, run_audited

DEFAULT_REGION = "default"
# A window is for an evening or a weekend morning, not a second schedule.
MAX_WINDOW_MS = 16 * 3600 * 1000
# Applied for ahead of an event the branch knows of; further out is a mistyped date.
MAX_WINDOW_LEAD_DAYS = 366
MAX_WINDOW_LEAD_MS = MAX_WINDOW_LEAD_DAYS * 86_400_000
REASON_MAX_CHARS = 500


class WindowState(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REFUSED = "REFUSED"


@dataclass(frozen=True, slots=True)
class WindowRecord:
    window_id: str
    branch_id: str
    start_ms: int
    end_ms: int
    reason: str
    requested_by: str
    requested_at_ms: int
    state: WindowState
    decided_by: str = ""
    decided_at_ms: int = 0
    note: str = ""

    def window(self) -> ExtendedWindow:
        return ExtendedWindow(
            branch_id=self.branch_id,
            start=datetime.fromtimestamp(self.start_ms / 1000, UTC),
            end=datetime.fromtimestamp(self.end_ms / 1000, UTC),
            reason=self.reason,
            approved_by=self.decided_by,
        )


@dataclass(frozen=True, slots=True)
class BranchFacts:
    branch_id: str
    region: str
    enrollment: Enrollment
    # Approved windows that have not ended.
    windows: tuple[ExtendedWindow, ...]

    @property
    def policy_region(self) -> str | None:
        """The policy's region name; None for the default rules."""
        return None if self.region in ("", DEFAULT_REGION) else self.region


class BranchDirectory:
    def __init__(self, client: aioredis.Redis, keys: Keys, cache_ms: int = 1000) -> None:
        self.client = client
        self.keys = keys
        self.cache_ms = cache_ms
        self._cache: dict[str, tuple[float, BranchFacts]] = {}
        self._decide = load_script(client, "window_decide")

    # -- facts read at submit ------------------------------------------------------

    async def facts(self, branch_id: str) -> BranchFacts:
        now = time.monotonic()
        cached = self._cache.get(branch_id)
        if cached is not None and now - cached[0] < self.cache_ms / 1000:
            return cached[1]
        facts = await self._read(branch_id)
        if self.cache_ms > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[branch_id] = (now, facts)
        return facts

    async def _read(self, branch_id: str) -> BranchFacts:
        now_ms = int(time.time() * 1000)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.branch(branch_id), ["region", "enr"])
            pipe.zrangebyscore(self.keys.windows_of(branch_id), now_ms, "+inf")
            (region, enrollment), window_ids = await pipe.execute()
        windows = [
            record.window()
            for record in await self._records([as_text(w) for w in window_ids])
            if record.state is WindowState.APPROVED
        ]
        return BranchFacts(
            branch_id=branch_id,
            region=as_text(region) if region else DEFAULT_REGION,
            enrollment=Enrollment.from_dict(json.loads(enrollment)) if enrollment else ENROLLED,
            windows=tuple(windows),
        )

    async def missing(self, branch_ids: Sequence[str]) -> list[str]:
        """Those of ``branch_ids`` that name no branch."""
        async with self.client.pipeline(transaction=False) as pipe:
            for branch_id in branch_ids:
                pipe.exists(self.keys.branch(branch_id))
            found = await pipe.execute()
        return [branch_id for branch_id, n in zip(branch_ids, found, strict=True) if not n]

    def forget(self, branch_id: str) -> None:
        """Drops this process's cached facts (after a change made here)."""
        self._cache.pop(branch_id, None)

    # -- enrollment (R10) ------------------------------------------------------------

    async def enrollment(self, branch_id: str) -> Enrollment:
        raw = await self.client.hget(self.keys.branch(branch_id), "enr")
        return Enrollment.from_dict(json.loads(raw)) if raw else ENROLLED

    async def set_enrollment(
        self, branch_id: str, enrollment: Enrollment, audit: StagedAudit | None = None
    ) -> None:
        """``audit``: the BRANCH_ENROLLMENT record, staged in the same transaction."""
        if not await self.client.exists(self.keys.branch(branch_id)):
            raise NotFound(f"no branch {branch_id}")
        async with audited_transaction(self.client, self.keys.audit_staged, audit) as pipe:
            pipe.hset(self.keys.branch(branch_id), "enr",
                      json.dumps(enrollment.to_dict(), sort_keys=True))  # fmt: skip
        self.forget(branch_id)

    # -- extended-hours windows (R9) -----------------------------------------------------

    async def request_window(
        self, branch_id: str, start_ms: int, end_ms: int, reason: str, requested_by: str,
        audit: StagedAudit | None = None,
    ) -> WindowRecord:  # fmt: skip
        """``audit``: the HOURS_WINDOW_REQUEST record, staged in the same transaction."""
        now_ms = int(time.time() * 1000)
        if end_ms <= start_ms:
            raise InvalidArgument("end_ms", "an extended-hours window must end after it starts")
        if end_ms <= now_ms:
            raise InvalidArgument("end_ms", "the window has already ended")
        if end_ms - start_ms > MAX_WINDOW_MS:
            raise InvalidArgument(
                "end_ms", f"a window lasts at most {MAX_WINDOW_MS // 3_600_000} hours"
            )
        if start_ms - now_ms > MAX_WINDOW_LEAD_MS:
            raise InvalidArgument(
                "start_ms", f"a window starts at most {MAX_WINDOW_LEAD_DAYS} days ahead"
            )
        if not reason.strip():
            raise InvalidArgument("reason", "an extended-hours window needs a reason (R9)")
        if len(reason) > REASON_MAX_CHARS:
            raise InvalidArgument("reason", f"at most {REASON_MAX_CHARS} characters")
        window_id = f"W{await self.client.incr(self.keys.window_counter)}"
        record = WindowRecord(
            window_id, branch_id, start_ms, end_ms, reason.strip(), requested_by, now_ms,
            WindowState.PENDING,
        )  # fmt: skip
        async with audited_transaction(self.client, self.keys.audit_staged, audit) as pipe:
            pipe.hset(self.keys.window(window_id), mapping=_fields(record))
            pipe.zadd(self.keys.windows_pending, {window_id: start_ms})
            pipe.zadd(self.keys.windows_of(branch_id), {window_id: end_ms})
        return record

    async def decide_window(
        self, window_id: str, approve: bool, decided_by: str, note: str,
        audit: StagedAudit | None = None,
    ) -> WindowRecord:  # fmt: skip
        """``audit``: the HOURS_WINDOW_DECIDE record, staged with the decision."""
        state = WindowState.APPROVED if approve else WindowState.REFUSED
        if not approve and not note.strip():
            raise InvalidArgument("note", "refusing a window needs a note for the branch")
        if len(note) > REASON_MAX_CHARS:  # refused, not cut: the branch reads it as written
            raise InvalidArgument("note", f"at most {REASON_MAX_CHARS} characters")
        result = await run_audited(
            self._decide, self.keys.audit_staged, audit,
            keys=[self.keys.window(window_id), self.keys.windows_pending],
            args=[window_id, state.value, decided_by, note],
        )  # fmt: skip
        status = as_text(result[0])
        if status == "NOTFOUND":
            raise NotFound(f"no extended-hours window {window_id}")
        if status == "STATE":
            raise FailedPrecondition(
                f"window {window_id} was already {as_text(result[1])} by {as_text(result[2])}"
            )
        record = await self.window(window_id)
        self.forget(record.branch_id)
        return record

    async def window(self, window_id: str) -> WindowRecord:
        records = await self._records([window_id])
        if not records:
            raise NotFound(f"no extended-hours window {window_id}")
        return records[0]

    async def windows(self, branch_id: str | None, limit: int = 200) -> list[WindowRecord]:
        """A branch's windows that have not ended, or (None) every pending one."""
        if branch_id is None:
            ids = await self.client.zrange(self.keys.windows_pending, 0, limit - 1)
        else:
            now_ms = int(time.time() * 1000)
            ids = await self.client.zrangebyscore(
                self.keys.windows_of(branch_id), now_ms, "+inf", 0, limit
            )
        return await self._records([as_text(i) for i in ids])

    async def _records(self, window_ids: list[str]) -> list[WindowRecord]:
        if not window_ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for window_id in window_ids:
                pipe.hgetall(self.keys.window(window_id))
            replies = await pipe.execute()
        return [
            _record(window_id, fields)
            for window_id, fields in zip(window_ids, replies, strict=True)
            if fields
        ]


def _fields(record: WindowRecord) -> dict[Any, Any]:
    return {
        "br": record.branch_id,
        "s": record.start_ms,
        "e": record.end_ms,
        "rs": record.reason,
        "rq": record.requested_by,
        "ra": record.requested_at_ms,
        "st": record.state.value,
    }


def _record(window_id: str, fields: dict[Any, Any]) -> WindowRecord:
    get = field_reader(fields)

    return WindowRecord(
        window_id=window_id,
        branch_id=get("br"),
        start_ms=int(get("s") or 0),
        end_ms=int(get("e") or 0),
        reason=get("rs"),
        requested_by=get("rq"),
        requested_at_ms=int(get("ra") or 0),
        state=WindowState(get("st")),
        decided_by=get("by"),
        decided_at_ms=int(get("at") or 0),
        note=get("nt"),
    )
