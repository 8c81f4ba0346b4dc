"""The queue's read-only queries: a request with its history, the overview a
supervisor watches, a request's position, what awaits on-site review, who is away.
Plain reads (pipelined), no scripts: QueueStore inherits them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from server.domain.priority import PriorityClass, all_classes
from server.domain.records import RequestRecord
from server.domain.routing import LaneName
from server.domain.states import State
from server.errors import NotFound
from server.store.keys import Keys


@dataclass(frozen=True, slots=True)
class LaneDepth:
    priority: PriorityClass
    waiting: int
    # When the class's longest-waiting item joined the queue (field enq, set by submit,
    # review and supply; a claim handed back or lapsed keeps it, as the item waited
    # already), or for a record from before enq its submission: time awaiting an on-site
    # reviewer or a supplement is not the queue's, so it must not count toward the
    # backlog (R8), the overview's oldest wait or the oldest-wait metric. Read from the
    # class's waiting-since set (Keys.waiting_since), not the lane heads: the head is
    # the next offered, which a supplied or moved item can be while older ones wait.
    oldest_submitted_ms: int | None
    oldest_request_id: str | None


@dataclass(frozen=True, slots=True)
class Overview:
    lanes: list[LaneDepth]
    counts: dict[str, int]
    waiting_by_branch: dict[str, int]
    at_ms: int

    @property
    def waiting(self) -> int:
        return sum(lane.waiting for lane in self.lanes)


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def field_reader(fields: Mapping[Any, Any]) -> Callable[[str], str]:
    """Reads a field of a Redis hash (bytes or str keys) as text, "" when absent."""

    def get(name: str) -> str:
        value = fields.get(name.encode(), fields.get(name))
        return as_text(value) if value is not None else ""

    return get


class QueueReads:
    client: aioredis.Redis
    keys: Keys

    async def get(self, request_id: str) -> RequestRecord:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.request(request_id))
            pipe.lrange(self.keys.history(request_id), 0, -1)
            fields, history = await pipe.execute()
        if not fields:
            raise NotFound(f"no request with request_id {request_id}")
        return RequestRecord.from_redis(fields, history)

    async def get_many(self, request_ids: Sequence[str]) -> list[RequestRecord | None]:
        """The records of the requests (None for one that does not exist), read in one
        transaction."""
        if not request_ids:
            return []
        async with self.client.pipeline(transaction=True) as pipe:
            for request_id in request_ids:
                pipe.hgetall(self.keys.request(request_id))
                pipe.lrange(self.keys.history(request_id), 0, -1)
            replies = await pipe.execute()
        return [
            RequestRecord.from_redis(fields, history) if fields else None
            for fields, history in zip(replies[::2], replies[1::2], strict=True)
        ]

    async def exists(self, request_id: str) -> bool:
        return bool(await self.client.exists(self.keys.request(request_id)))

    async def lanes(self) -> list[str]:
        """The lanes that hold anything (server/domain/routing.py)."""
        return sorted(as_text(lane) for lane in await self.client.smembers(self.keys.lanes))

    async def overview(self) -> Overview:
        """Waiting items per priority class, summed over the business types and amount
        bands of each class, and the item of each class that has waited longest."""
        lanes = await self.lanes()
        classes = all_classes()
        async with self.client.pipeline(transaction=True) as pipe:
            for lane in lanes:
                pipe.zcard(lane)
            for priority in classes:
                pipe.zrange(self.keys.waiting_since(priority), 0, 0, withscores=True)
            pipe.hgetall(self.keys.counts)
            pipe.hgetall(self.keys.waiting_by_branch)
            pipe.time()
            replies = await pipe.execute()
        firsts = replies[len(lanes) : len(lanes) + len(classes)]
        oldest: dict[PriorityClass, tuple[int, str]] = {
            priority: (int(first[0][1]), as_text(first[0][0]))
            for priority, first in zip(classes, firsts, strict=True)
            if first
        }
        waiting: dict[PriorityClass, int] = dict.fromkeys(classes, 0)
        for i, lane in enumerate(lanes):
            name = LaneName.parse(lane)
            if name is not None:
                waiting[PriorityClass(name.importance, name.urgency)] += int(replies[i])
        depths = [
            LaneDepth(
                priority,
                count,
                oldest[priority][0] if priority in oldest else None,
                oldest[priority][1] if priority in oldest else None,
            )
            for priority, count in waiting.items()
        ]
        counts_raw, branches_raw, (seconds, micros) = replies[-3], replies[-2], replies[-1]
        return Overview(
            lanes=depths,
            counts={as_text(k): int(v) for k, v in counts_raw.items()},
            waiting_by_branch={as_text(k): int(v) for k, v in branches_raw.items() if int(v) > 0},
            at_ms=int(seconds) * 1000 + int(micros) // 1000,
        )

    async def position(self, request_id: str) -> tuple[State, int, int]:
        """(state, items ahead of it or -1 when not waiting, total waiting). "Ahead"
        is in the queue's one order (score); which authorizer takes an item also
        depends on qualifications (routing)."""
        fields = await self.client.hmget(self.keys.request(request_id), ["st", "sc", "ln"])
        if fields[0] is None:
            raise NotFound(f"no request with request_id {request_id}")
        state = State(as_text(fields[0]))
        lanes = await self.lanes()
        async with self.client.pipeline(transaction=True) as pipe:
            for lane in lanes:
                pipe.zcard(lane)
                if state is State.QUEUED:
                    if lane == as_text(fields[2]):
                        pipe.zrank(lane, request_id)
                    else:
                        pipe.zcount(lane, "-inf", f"({as_text(fields[1])}")
            replies = await pipe.execute()
        step = 2 if state is State.QUEUED else 1
        waiting = sum(int(replies[i]) for i in range(0, len(replies), step))
        if state is not State.QUEUED:
            return state, -1, waiting
        return state, sum(int(replies[i] or 0) for i in range(1, len(replies), 2)), waiting

    async def waiting_of_branch(self, branch_id: str, limit: int = 1000) -> list[str]:
        """A branch's waiting requests: awaiting on-site review, then queued. Reads the
        lanes through, so it costs time with the queue's depth: for an emergency hand-back
        (R8), never for the request path."""
        found = [
            as_text(rid)
            for rid in await self.client.zrange(self.keys.onsite(branch_id), 0, limit - 1)
        ]
        for lane in await self.lanes():
            start = 0
            while len(found) < limit:
                ids = await self.client.zrange(lane, start, start + 999)
                if not ids:
                    break
                start += len(ids)
                async with self.client.pipeline(transaction=False) as pipe:
                    for rid in ids:
                        pipe.hget(self.keys.request(as_text(rid)), "br")
                    branches = await pipe.execute()
                found.extend(
                    as_text(rid)
                    for rid, branch in zip(ids, branches, strict=True)
                    if branch is not None and as_text(branch) == branch_id
                )
        return found[:limit]

    async def pending_review(self, branch_id: str, limit: int = 200) -> list[RequestRecord]:
        ids = await self.client.zrange(self.keys.onsite(branch_id), 0, limit - 1)
        records = []
        for rid in ids:
            with contextlib.suppress(NotFound):
                records.append(await self.get(as_text(rid)))
        return records

    async def away(self) -> list[str]:
        return sorted(as_text(user) for user in await self.client.smembers(self.keys.away))
