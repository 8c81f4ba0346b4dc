"""The archive's state in Redis: which ended requests await archiving, who is archiving
one right now, which are archived (and where), when their hot keys go, and the head of
each day's manifest. Each change is one script of server/lua/archive_*.lua.

Per request, the marker hash ``arch:<id>`` moves ``pending`` (claimed by one process,
for a while) → ``done`` (with the day, final state and branch); it is kept after the
hot keys are removed, so the request is still known to be archived and where."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis

from server.domain.states import State
from server.store.keys import Keys
from server.store.queue_reads import as_text
from server.store.scripts import load_script, run_all

_SCAN_BATCH = 500


class ClaimStatus(StrEnum):
    CLAIMED = "CLAIMED"
    DONE = "DONE"
    BUSY = "BUSY"
    GONE = "GONE"


@dataclass(frozen=True, slots=True)
class DoneMark:
    """A request whose files are durable, where they are, and the day's manifest head
    after them."""

    request_id: str
    day: str
    state: State
    branch_id: str
    head: tuple[int, str]


@dataclass(frozen=True, slots=True)
class ArchivedMarker:
    day: str
    state: str
    branch_id: str
    archived_ms: int


class ArchiveIndex:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._claim = load_script(client, "archive_claim")
        self._done = load_script(client, "archive_done")
        self._purge = load_script(client, "archive_purge")

    # -- what awaits archiving ------------------------------------------------------

    async def note_ended(self, request_ids: Sequence[str], at_ms: int) -> None:
        if request_ids:
            await self.client.zadd(
                self.keys.archive_ended, dict.fromkeys(request_ids, at_ms), nx=True
            )

    async def ended(self, limit: int = 200) -> list[str]:
        return [
            as_text(rid) for rid in await self.client.zrange(self.keys.archive_ended, 0, limit - 1)
        ]

    async def backlog(self) -> int:
        """Ended requests not archived yet."""
        return int(await self.client.zcard(self.keys.archive_ended))

    async def forget_ended(self, request_ids: Sequence[str]) -> None:
        if request_ids:
            await self.client.zrem(self.keys.archive_ended, *request_ids)

    async def scan_requests(self, fields: Sequence[str]) -> AsyncIterator[tuple[str, list[Any]]]:
        """Every hot request with the given fields of its hash, in batches."""
        prefix = self.keys.request_prefix
        batch: list[bytes] = []
        async for key in self.client.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
            batch.append(key)
            if len(batch) >= _SCAN_BATCH:
                async for item in self._read(batch, prefix, fields):
                    yield item
                batch = []
        async for item in self._read(batch, prefix, fields):
            yield item

    async def _read(
        self, batch: list[bytes], prefix: str, fields: Sequence[str]
    ) -> AsyncIterator[tuple[str, list[Any]]]:
        if not batch:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.hmget(key, list(fields))
            replies = await pipe.execute()
        for key, values in zip(batch, replies, strict=True):
            if values[0] is not None:
                yield as_text(key)[len(prefix) :], values

    async def unarchived_final(self) -> list[str]:
        """Hot requests in a final state with no archive marker saying done."""
        final = {state.value for state in State if state.is_final}
        found = [
            rid async for rid, (state,) in self.scan_requests(["st"]) if as_text(state) in final
        ]
        if not found:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for rid in found:
                pipe.hget(self.keys.archive_marker(rid), "st")
            marks = await pipe.execute()
        return [rid for rid, mark in zip(found, marks, strict=True) if mark != b"done"]

    # -- archiving a batch of requests -----------------------------------------------

    async def claim_many(
        self, request_ids: Sequence[str], claimant: str, claim_ms: int
    ) -> list[ClaimStatus]:
        """Claims each request for this claimant, in one pipeline (one script each)."""
        replies = await run_all(
            self._claim,
            [
                ([self.keys.archive_marker(rid), self.keys.request(rid)], [claimant, claim_ms])
                for rid in request_ids
            ],
        )
        return [ClaimStatus(as_text(_raise_error(reply)[0])) for reply in replies]

    async def done_many(self, marks: Sequence[DoneMark]) -> None:
        """Marks each request archived, in one pipeline (one script each)."""
        keys = [self.keys.archive_ended, self.keys.archive_hot, self.keys.archive_heads]
        calls = [
            (
                [self.keys.archive_marker(m.request_id), *keys],
                [m.request_id, m.day, m.state.value, m.branch_id, m.head[0], m.head[1]],
            )
            for m in marks
        ]
        for reply in await run_all(self._done, calls):
            _raise_error(reply)

    # -- hot keys --------------------------------------------------------------------

    async def due_for_removal(self, keep_hot_ms: int, limit: int = 500) -> list[str]:
        seconds, micros = await self.client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        ids = await self.client.zrangebyscore(
            self.keys.archive_hot, "-inf", now_ms - keep_hot_ms, 0, limit
        )
        return [as_text(rid) for rid in ids]

    async def remove_hot(self, request_id: str, keep_hot_ms: int) -> bool:
        result = await self._purge(
            keys=[
                self.keys.archive_marker(request_id),
                self.keys.request(request_id),
                self.keys.history(request_id),
                self.keys.archive_hot,
            ],
            args=[request_id, keep_hot_ms],
        )
        return as_text(result[0]) == "OK"

    # -- reading ---------------------------------------------------------------------

    async def marker(self, request_id: str) -> ArchivedMarker | None:
        st, day, state, branch, at = await self.client.hmget(
            self.keys.archive_marker(request_id), ["st", "day", "fs", "br", "at"]
        )
        if st != b"done":
            return None
        return ArchivedMarker(as_text(day), as_text(state), as_text(branch), int(at or 0))

    async def heads(self) -> dict[str, tuple[int, str]]:
        raw = await self.client.hgetall(self.keys.archive_heads)
        heads = {}
        for day, value in raw.items():
            count, chain = as_text(value).split(" ", 1)
            heads[as_text(day)] = (int(count), chain)
        return heads


def _raise_error(reply: Any) -> Any:
    if isinstance(reply, Exception):
        raise reply
    return reply


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
