"""Two-person moves up the queue (R6), in Redis: one atomic Lua script per step.

A supervisor or director *requests* a move of a waiting request, with a reason; a
*different* supervisor or director *confirms* it within ``window_ms``; only then does
the request change place. Until then the move is pending:

* ``Keys.move(id)`` is a hash ``{rq requester, rs reason, cr created_ms, ex
  expires_ms, lp "1" once its lapse was seen}``, one per request (a second request
  while one is pending is refused; a lapsed one is replaced).
* ``Keys.move("")`` indexes the pending moves in a sorted set scored by ``ex``, so
  that ListMoves needs no SCAN and lapsed moves are found (request ids are never
  empty, so the index name cannot collide with a move; it is also the prefix of the
  move keys, which move_sweep.lua derives from it).

A move *lapses* when ``ex`` has passed: confirming it is refused ("lapsed after N s").
Whichever sees the lapse first (move_sweep.lua, run before every move call by the
servicer, or a confirmation, or a new request replacing it) marks it ``lp`` and
stages its audit record in the same step (stage_move_lapse in server/lua/_lib.lua),
so that each lapse is audited exactly once across server processes. The
hash carries a Redis TTL of ``window + keep_lapsed_ms``: garbage collection only, long
enough for a late confirmation to be told that the move lapsed.

Confirming moves the request to the *front*: its score becomes one microsecond below
both the smallest lane head and zero, below every item never moved (their scores are
times since the epoch less R7's head starts), so neither later work nor older work
coming back (a release, a supply, an on-site confirmation) overtakes it. It stays in
its own lane; its ``sc`` field is updated too, so a hand-back or a lapsed lease
returns it to the new place. A move confirmed later goes ahead of an earlier one. The
request's history gets a REPRIORITIZED entry naming the confirmer and the requester."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from server.domain.states import State
from server.errors import FailedPrecondition, IllegalTransition, NotFound, PermissionDenied
from server.store.audit_records import StagedAudit
from server.store.keys import Keys
from server.store.queue_reads import as_text
from server.store.queue_store import QueueConfig
from server.store.scripts import load_script
from server.store.staging import run_audited, run_staging

# A lapsed move is kept this long past its deadline for the sweep to audit it.
KEEP_LAPSED_MS = 24 * 3600 * 1000
SWEEP_LIMIT = 100


@dataclass(frozen=True, slots=True)
class PendingMove:
    request_id: str
    requester: str
    reason: str
    created_ms: int
    expires_ms: int

    @property
    def window_s(self) -> float:
        return (self.expires_ms - self.created_ms) / 1000

    @classmethod
    def from_reply(cls, request_id: str, fields: list[Any]) -> PendingMove:
        """From the ``rq, rs, cr, ex`` values a script returns."""
        return cls(
            request_id=request_id,
            requester=as_text(fields[0]),
            reason=as_text(fields[1]),
            created_ms=int(fields[2]),
            expires_ms=int(fields[3]),
        )


@dataclass(frozen=True, slots=True)
class ConfirmedMove:
    move: PendingMove
    confirmer: str
    version: int
    at_ms: int
    old_score_us: int
    new_score_us: int


class MoveLapsed(FailedPrecondition):
    """The move was not confirmed in time. ``first``: this call was the first to see
    the lapse (audit it as a lapse)."""

    def __init__(self, move: PendingMove, first: bool) -> None:
        super().__init__(
            f"the move of request {move.request_id} requested by {move.requester} lapsed "
            f"after {move.window_s:g} s without confirmation (R6): request it again"
        )
        self.move = move
        self.first = first


class SameRequester(PermissionDenied):
    def __init__(self, request_id: str, user_id: str) -> None:
        super().__init__(
            f"{user_id} requested the move of request {request_id} and cannot confirm it: "
            "R6 needs two people: the confirmer must differ from the requester"
        )


class MoveNotWaiting(IllegalTransition):
    def __init__(self, request_id: str, state: str) -> None:
        super().__init__(request_id, state, "move", "R6: only waiting items can be moved")


class MovePending(FailedPrecondition):
    def __init__(self, move: PendingMove) -> None:
        super().__init__(
            f"a move of request {move.request_id} is already pending (requested by "
            f"{move.requester}, lapses at {move.expires_ms} ms): confirm it or let it lapse"
        )
        self.move = move


class MoveStore:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        window_ms: int,
        queue: QueueConfig,
        keep_lapsed_ms: int = KEEP_LAPSED_MS,
    ) -> None:
        self.client = client
        self.keys = keys
        self.window_ms = window_ms
        self.keep_lapsed_ms = keep_lapsed_ms
        self.events_maxlen = queue.events_maxlen
        self.index = keys.move("")
        self._request = load_script(client, "move_request")
        self._confirm = load_script(client, "move_confirm")
        self._sweep = load_script(client, "move_sweep")

    async def sweep(self, lapse: bytes = b"", limit: int = SWEEP_LIMIT) -> list[PendingMove]:
        """Marks and returns the moves that lapsed (each one to exactly one caller), and
        stages each one's audit record from ``lapse`` (module docstring)."""
        swept = await run_staging(
            self._sweep, self.keys.audit_staged, keys=[self.index], args=[limit], template=lapse
        )
        return [PendingMove.from_reply(as_text(item[0]), item[1:]) for item in swept]

    async def request(
        self, request_id: str, requester: str, reason: str, audit: StagedAudit | None = None,
        lapse: bytes = b"",
    ) -> PendingMove:  # fmt: skip
        """Records a pending move and returns it. A lapsed move it replaces that no step
        had seen yet has its lapse staged from ``lapse``; ``audit``: the request's
        record, staged with the move's deadline."""
        result = await run_audited(
            self._request, self.keys.audit_staged, audit,
            keys=[self.keys.request(request_id), self.keys.move(request_id), self.index],
            args=[request_id, requester, reason, self.window_ms, self.keep_lapsed_ms],
            templates=[lapse],
        )  # fmt: skip
        status = as_text(result[0])
        if status == "NOTFOUND":
            raise NotFound(f"no request with request_id {request_id}")
        if status == "STATE":
            raise MoveNotWaiting(request_id, as_text(result[1]))
        if status == "PENDING":
            raise MovePending(PendingMove.from_reply(request_id, result[1:]))
        return PendingMove(request_id, requester, reason, int(result[1]), int(result[2]))

    async def confirm(
        self, request_id: str, confirmer: str, audit: StagedAudit | None = None,
        lapse: bytes = b"",
    ) -> ConfirmedMove:  # fmt: skip
        """Moves the request to the front (see the module docstring), or raises
        FailedPrecondition (none pending), MoveLapsed, SameRequester or
        MoveNotWaiting. ``audit``: the confirmation's record, staged with the move and
        both scores; a lapse this call sees first is staged from ``lapse``."""
        result = await run_audited(
            self._confirm, self.keys.audit_staged, audit,
            keys=[
                self.keys.request(request_id),
                self.keys.history(request_id),
                self.keys.move(request_id),
                self.index,
                self.keys.events,
                self.keys.lanes,
            ],
            args=[request_id, confirmer, self.events_maxlen],
            templates=[lapse],
        )  # fmt: skip
        status = as_text(result[0])
        if status == "NOMOVE":
            raise FailedPrecondition(
                f"no move of request {request_id} is pending (R6): one must be asked for "
                "first (`move`, or Move up in the console); a move is confirmed once, and "
                "lapses if not confirmed in time"
            )
        if status == "LAPSED":
            raise MoveLapsed(
                PendingMove.from_reply(request_id, result[1:5]), as_text(result[5]) == "1"
            )
        if status == "SAME":
            raise SameRequester(request_id, confirmer)
        if status == "NOTFOUND":
            raise NotFound(f"no request with request_id {request_id}")
        if status == "STATE":
            raise MoveNotWaiting(request_id, as_text(result[1]))
        return ConfirmedMove(
            move=PendingMove.from_reply(request_id, result[3:7]),
            confirmer=confirmer,
            version=int(result[1]),
            at_ms=int(result[2]),
            old_score_us=int(as_text(result[7])),
            new_score_us=int(as_text(result[8])),
        )

    async def pending(self) -> list[PendingMove]:
        """The moves that can be confirmed now, the earliest to lapse first: lapsed
        ones not yet swept are left out, and so are those of requests not waiting.
        Such a move stays pending until it lapses (claim, decide and cancel leave it
        alone, off their hot paths), so that it is listed again should its request
        wait again (a release, a supply) in time."""
        now_s, now_us = await self.client.time()
        now_ms = int(now_s) * 1000 + int(now_us) // 1000
        ahead = await self.client.zrangebyscore(self.index, f"({now_ms}", "+inf")
        ids = [as_text(rid) for rid in ahead]
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hmget(self.keys.move(rid), ["rq", "rs", "cr", "ex"])
                pipe.hget(self.keys.request(rid), "st")
            replies = await pipe.execute()
        moves, states = replies[0::2], replies[1::2]
        return [
            PendingMove.from_reply(rid, fields)
            for rid, fields, state in zip(ids, moves, states, strict=True)
            if fields[0] is not None and int(fields[3]) > now_ms and _waiting(state)
        ]


def _waiting(state: Any) -> bool:
    """Only a waiting request can be moved (move_confirm.lua checks it again)."""
    return state is not None and as_text(state) == State.QUEUED.value
