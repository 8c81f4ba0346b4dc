"""Emergency periods (R8): declared and ended by supervisors, kept for the record
(who, what, when, why) after they end. While one covers a branch, submit.lua answers
its new submissions with a fallback instead of queueing them.

An emergency's id is what emergency_declare.lua makes it: ``E`` and a counter. An id
from outside (a supervisor ending one, a branch citing one) is checked for that form
before it becomes part of a key name, so that nothing else (spaces, ``:``, control
characters, braces that would change a Redis Cluster hash tag) reaches one."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from server.errors import FailedPrecondition, InvalidArgument, NotFound
from server.store.audit_records import StagedAudit
from server.store.keys import Keys
from server.store.queue_reads import as_text, field_reader
from server.store.scripts import load_script
from server.store.staging import run_audited

# 'E' .. INCR in emergency_declare.lua: a counter up to 2^63 has at most 19 digits.
EMERGENCY_ID_RE = re.compile(r"E[0-9]{1,19}")


def check_emergency_id(value: str, field: str = "emergency_id") -> str:
    """``value`` if it is of the form the center gives an emergency's id."""
    if not EMERGENCY_ID_RE.fullmatch(value):
        raise InvalidArgument(
            field, "must be E and 1-19 digits, as the center names an emergency (e.g. E12)"
        )
    return value


@dataclass(frozen=True, slots=True)
class Emergency:
    emergency_id: str
    reason: str
    branch_ids: tuple[str, ...]
    declared_by: str
    declared_at_ms: int
    ended_by: str = ""
    ended_at_ms: int = 0
    end_note: str = ""


class EmergencyStore:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._declare = load_script(client, "emergency_declare")
        self._end = load_script(client, "emergency_end")

    def _scopes(self, branch_ids: Sequence[str]) -> list[str]:
        return [self.keys.fallback(b) for b in branch_ids] or [self.keys.fallback(None)]

    async def declare(
        self, reason: str, branch_ids: Sequence[str], by: str, audit: StagedAudit | None = None
    ) -> Emergency:
        """``audit``: the EMERGENCY_DECLARE record, staged with the emergency's id."""
        result = await run_audited(
            self._declare, self.keys.audit_staged, audit,
            keys=[self.keys.emergency_counter, self.keys.emergencies,
                  *self._scopes(branch_ids)],
            args=[reason, by, ",".join(branch_ids), self.keys.emergency_prefix],
        )  # fmt: skip
        return Emergency(as_text(result[1]), reason, tuple(branch_ids), by, int(result[2]))

    async def end(
        self, emergency_id: str, by: str, note: str, audit: StagedAudit | None = None
    ) -> Emergency:
        current = await self.get(emergency_id)
        result = await run_audited(
            self._end, self.keys.audit_staged, audit,
            keys=[self.keys.emergency(emergency_id), self.keys.emergencies,
                  *self._scopes(current.branch_ids)],
            args=[emergency_id, by, note],
        )  # fmt: skip
        status = as_text(result[0])
        if status == "NOTFOUND":
            raise NotFound(f"no emergency {emergency_id}")
        if status == "ENDED":
            raise FailedPrecondition(f"emergency {emergency_id} has already ended")
        return await self.get(emergency_id)

    async def get(self, emergency_id: str) -> Emergency:
        if not EMERGENCY_ID_RE.fullmatch(emergency_id):  # no such id: no key built of it
            raise NotFound(f"no emergency {emergency_id[:32]!r}")
        fields = await self.client.hgetall(self.keys.emergency(emergency_id))
        if not fields:
            raise NotFound(f"no emergency {emergency_id}")
        return _emergency(emergency_id, fields)

    async def active(self) -> list[Emergency]:
        ids = await self.client.zrevrange(self.keys.emergencies, 0, -1)
        return [await self.get(as_text(i)) for i in ids]


def _emergency(emergency_id: str, fields: dict[Any, Any]) -> Emergency:
    get = field_reader(fields)

    return Emergency(
        emergency_id=emergency_id,
        reason=get("reason"),
        branch_ids=tuple(b for b in get("branches").split(",") if b),
        declared_by=get("by"),
        declared_at_ms=int(get("at") or 0),
        ended_by=get("ended_by"),
        ended_at_ms=int(get("ended_at") or 0),
        end_note=get("note"),
    )
