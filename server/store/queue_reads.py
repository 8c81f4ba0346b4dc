"""The queue's read-only queries: a request with its history, the overview a
supervisor watches, a request's position, what awaits on-site review, who is away.
Plain reads (pipelined), no scripts: QueueStore inherits them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from server.domain.priority import PriorityClass, all_classes
from server.domain.records import RequestRecord
from server.domain.states import State
from server.errors import NotFound
from server.store.keys import Keys


@dataclass(frozen=True, slots=True)
class LaneDepth:
    priority: PriorityClass
    waiting: int
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


class QueueReads:
    client: aioredis.Redis
    keys: Keys
    all_lanes: list[str]

    async def get(self, request_id: str) -> RequestRecord:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.request(request_id))
            pipe.lrange(self.keys.history(request_id), 0, -1)
            fields, history = await pipe.execute()
        if not fields:
            raise NotFound(f"no request with request_id {request_id}")
        return RequestRecord.from_redis(fields, history)

    async def overview(self) -> Overview:
        classes = all_classes()
        async with self.client.pipeline(transaction=True) as pipe:
            for lane in self.all_lanes:
                pipe.zcard(lane)
                pipe.zrange(lane, 0, 0)
            pipe.hgetall(self.keys.counts)
            pipe.hgetall(self.keys.waiting_by_branch)
            pipe.time()
            replies = await pipe.execute()
        heads = [replies[2 * i + 1][0] if replies[2 * i + 1] else None for i in range(len(classes))]
        submitted: list[Any] = []
        if any(heads):
            async with self.client.pipeline(transaction=False) as pipe:
                for head in heads:
                    if head is not None:
                        pipe.hget(self.keys.request(as_text(head)), "sub")
                submitted = list(await pipe.execute())
        lanes = []
        for i, priority in enumerate(classes):
            head = heads[i]
            oldest = int(submitted.pop(0) or 0) if head is not None else None
            lanes.append(
                LaneDepth(priority, int(replies[2 * i]), oldest, as_text(head) if head else None)
            )
        counts_raw, branches_raw, (seconds, micros) = replies[-3], replies[-2], replies[-1]
        return Overview(
            lanes=lanes,
            counts={as_text(k): int(v) for k, v in counts_raw.items()},
            waiting_by_branch={as_text(k): int(v) for k, v in branches_raw.items() if int(v) > 0},
            at_ms=int(seconds) * 1000 + int(micros) // 1000,
        )

    async def position(self, request_id: str) -> tuple[State, int, int]:
        """(state, items offered before it or -1 when not waiting, total waiting)."""
        fields = await self.client.hmget(self.keys.request(request_id), ["st", "sc", "ln"])
        if fields[0] is None:
            raise NotFound(f"no request with request_id {request_id}")
        state = State(as_text(fields[0]))
        async with self.client.pipeline(transaction=True) as pipe:
            for lane in self.all_lanes:
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

    async def pending_review(self, branch_id: str, limit: int = 200) -> list[RequestRecord]:
        ids = await self.client.zrange(self.keys.onsite(branch_id), 0, limit - 1)
        records = []
        for rid in ids:
            with contextlib.suppress(NotFound):
                records.append(await self.get(as_text(rid)))
        return records

    async def away(self) -> list[str]:
        return sorted(as_text(user) for user in await self.client.smembers(self.keys.away))
