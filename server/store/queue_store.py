"""The queue in Redis: one method per operation, each one atomic Lua script (plus
plain reads). Script status codes become the domain errors of server/errors.py."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import redis.asyncio as aioredis

from server.accounts.model import Qualification
from server.domain.records import HistoryEntry, Image, RequestRecord, Submission
from server.domain.routing import ClaimFilter, band_of
from server.domain.states import Outcome, State
from server.errors import (
    AccountInactive,
    AlreadyExists,
    AuthorizerAway,
    FailedPrecondition,
    IllegalTransition,
    LeaseLost,
    NotFound,
    OnsiteFallbackRequired,
    PermissionDenied,
)
from server.store import staging
from server.store.audit_records import StagedAudit
from server.store.keys import Keys
from server.store.queue_reads import QueueReads, as_text
from server.store.scripts import ScriptCall, Scripts, load_script

# How long a claim's nonce key outlives the claim (server/lua/claim.lua). The pipe
# sends a claim whose reply was lost again within its retry window (at most
# RETRY_WINDOW_S + a backoff + CONNECT_TIMEOUT_S, 14 s, in server/store/redis_pipe.py);
# the repeat must still find the key to know itself a repeat, so the key is kept twice
# that. Longer costs memory at peak: one key of about 100 B per claim while it lives.
CLAIM_REPEAT_TTL_MS = 30_000

# The words for the reasons the scripts answer with 'LEASE' (lease_refusal in
# server/lua/_lib.lua); STALE_FENCING_TOKEN's name both tokens.
_LEASE_WORDS = {
    "LEASE_HELD_BY_OTHER": "held by another authorizer",
    "LEASE_EXPIRED": "lease expired",
}


def claim_nonce() -> str:
    """A fresh nonce for one claim call: a repeat of that call carries the same one."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    lease_ms: int = 60_000
    importance_step_ms: int = 300_000
    urgency_step_ms: int = 60_000
    events_maxlen: int = 50_000


@dataclass(frozen=True, slots=True)
class LapsedLease:
    """A claim whose lease ran out before its holder decided or released it."""

    request_id: str
    holder: str
    token: int


@dataclass(frozen=True, slots=True)
class Claim:
    record: RequestRecord
    token: int
    lease_until_ms: int
    # Whether anything (for anyone) was still waiting after this claim: the dispatcher
    # claims again only then.
    more_waiting: bool = True


@dataclass(frozen=True, slots=True)
class NothingToClaim:
    """A claim found nothing the authorizer may take. ``more_waiting``: items it may
    not take (others may) are still queued; False: the queue is empty."""

    more_waiting: bool


class QueueStore(QueueReads):
    def __init__(self, client: aioredis.Redis, keys: Keys, config: QueueConfig) -> None:
        self.client = client
        self.keys = keys
        self.config = config
        self.scripts = Scripts.register(client)
        self._hand_back = load_script(client, "hand_back")

    # -- teller side ---------------------------------------------------------------

    def submit_call(
        self,
        submission: Submission,
        onsite_review: bool = False,
        local_minor: int | None = None,
        audit: StagedAudit | None = None,
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of the submit script for one submission (bench/ pipelines
        these to fill a deep queue with exactly the records a Submit writes).
        ``local_minor`` is the amount in the local currency (server/domain/routing.py);
        None: the amount as given, which must then be in the local currency."""
        rid = submission.request_id
        head_start_us = 1000 * submission.priority.head_start_ms(
            self.config.importance_step_ms, self.config.urgency_step_ms
        )
        if local_minor is None:
            local_minor = submission.amount_minor
        keys = [
            self.keys.request(rid),
            self.keys.lane(submission.priority, submission.business_type, band_of(local_minor)),
            self.keys.events,
            self.keys.waiting_by_branch,
            self.keys.counts,
            self.keys.onsite(submission.branch_id),
            self.keys.fallback(None),
            self.keys.fallback(submission.branch_id),
            self.keys.archive_marker(rid),
            self.keys.fallback_record(rid),
        ]
        args: list[Any] = [
            rid,
            submission.fingerprint(),
            submission.pack(),
            submission.branch_id,
            head_start_us,
            submission.teller_id,
            self.config.events_maxlen,
            "1" if onsite_review else "0",
            local_minor,
        ]
        staging.audit_tail(keys, args, self.keys.audit_staged, audit)
        return keys, args

    async def submit(
        self,
        submission: Submission,
        onsite_review: bool = False,
        local_minor: int | None = None,
        audit: StagedAudit | None = None,
    ) -> tuple[RequestRecord, bool]:
        """Stores a new request, or returns the stored one for a retry (True). With
        ``onsite_review`` it waits for the branch's on-site reviewer first (R2)."""
        rid = submission.request_id
        keys, args = self.submit_call(submission, onsite_review, local_minor, audit)
        result = await self.scripts.submit(keys=keys, args=args)
        staging.settle(audit, result)
        status = as_text(result[0])
        if status == "FALLBACK":
            raise OnsiteFallbackRequired(as_text(result[1]))
        if status == "ARCHIVED":
            raise AlreadyExists(
                f"request_id {rid} belongs to a request that has ended and been archived: "
                "choose a new request_id for a new request",
                request_id=rid,
                exists="archived_request",
            )
        if status == "ONSITE":
            raise AlreadyExists(
                f"request_id {rid} was reported as a local fallback, authorized on site (R8): "
                "the center does not take the same transaction too",
                request_id=rid,
                exists="local_fallback",
            )
        if status == "CONFLICT":
            raise AlreadyExists(
                f"request_id {rid} was already used for a request with other content "
                f"(now {as_text(result[1])}): choose a new request_id for a new request",
                request_id=rid,
                exists="request",
                state=as_text(result[1]),
            )
        if status == "DUP":
            return await self.get(rid), True
        return (
            RequestRecord(
                submission=submission,
                state=State(as_text(result[1])),
                version=1,
                submitted_ms=int(result[3]),
                holder="",
                token=0,
                lease_until_ms=0,
            ),
            False,
        )

    async def cancel(
        self,
        request_id: str,
        teller_id: str,
        note: str,
        branch_id: str,
        audit: StagedAudit | None = None,
    ) -> HistoryEntry:
        result = await self.run_audited(
            self.scripts.cancel,
            audit,
            keys=[
                self.keys.request(request_id),
                self.keys.history(request_id),
                self.keys.events,
                self.keys.counts,
                self.keys.waiting_by_branch,
                self.keys.onsite(branch_id),
            ],
            args=[request_id, teller_id, note, self.config.events_maxlen],
        )
        if as_text(result[0]) == "STATE" and as_text(result[2]) == "1":
            raise IllegalTransition(
                request_id,
                as_text(result[1]),
                "cancel",
                "R4: review has started, a request can only be withdrawn before that",
            )
        return await self._entry(request_id, result, "cancel", "CANCELLED", teller_id, note=note)

    async def supply(
        self,
        request_id: str,
        expected_version: int,
        supplements: Sequence[Image],
        teller_id: str,
        note: str,
        audit: StagedAudit | None = None,
    ) -> HistoryEntry:
        packed = msgpack.packb([image.pack() for image in supplements])
        result = await self.run_audited(
            self.scripts.supply,
            audit,
            keys=[
                self.keys.request(request_id),
                self.keys.history(request_id),
                self.keys.events,
                self.keys.counts,
                self.keys.waiting_by_branch,
            ],
            args=[request_id, expected_version, packed, teller_id, note, self.config.events_maxlen],
        )
        return await self._entry(
            request_id, result, "supply images to", "SUPPLIED", teller_id, note=note
        )

    async def review(
        self,
        request_id: str,
        reviewer_id: str,
        branch_id: str,
        confirm: bool,
        checks: Sequence[str],
        note: str,
        audit: StagedAudit | None = None,
    ) -> HistoryEntry:
        result = await self.run_audited(
            self.scripts.review,
            audit,
            keys=[
                self.keys.request(request_id),
                self.keys.history(request_id),
                self.keys.events,
                self.keys.counts,
                self.keys.waiting_by_branch,
                self.keys.onsite(branch_id),
            ],
            args=[
                request_id,
                reviewer_id,
                branch_id,
                "CONFIRM" if confirm else "SEND_BACK",
                ",".join(checks),
                note,
                self.config.events_maxlen,
            ],
        )
        status = as_text(result[0])
        if status == "BRANCH":
            raise PermissionDenied(
                f"request {request_id} belongs to branch {as_text(result[1])}: an on-site "
                "reviewer reviews only the requests of its own branch (R2, R13)",
                request_id=request_id,
            )
        event = "ONSITE_CONFIRMED" if confirm else "SENT_BACK"
        return await self._entry(request_id, result, "review", event, reviewer_id, note=note)

    async def hand_back(
        self, request_id: str, supervisor_id: str, note: str, audit: StagedAudit | None = None
    ) -> HistoryEntry:
        """Ends a waiting request SENT_BACK to its branch, which authorizes it on site
        (R8: during an emergency, work already queued goes back to the branches)."""
        branch = await self.client.hget(self.keys.request(request_id), "br")
        if branch is None:
            raise NotFound(f"no request with request_id {request_id}", request_id=request_id)
        result = await self.run_audited(
            self._hand_back,
            audit,
            keys=[
                self.keys.request(request_id),
                self.keys.history(request_id),
                self.keys.events,
                self.keys.counts,
                self.keys.waiting_by_branch,
                self.keys.onsite(as_text(branch)),
            ],
            args=[request_id, supervisor_id, note, self.config.events_maxlen, as_text(branch)],
        )
        return await self._entry(
            request_id, result, "hand back to its branch", "HANDED_BACK", supervisor_id, note=note
        )

    # -- authorizer side -----------------------------------------------------------

    async def claim(
        self,
        authorizer_id: str,
        qualification: Qualification | None = None,
        audit: StagedAudit | None = None,
    ) -> Claim | None:
        """The best waiting item the authorizer may decide (its qualification: issue 3
        §4; None: anything), or None. ``audit``: the CLAIM record without its target,
        which the script fills in."""
        result = await self.claim_or_nothing(authorizer_id, qualification, audit)
        return None if isinstance(result, NothingToClaim) else result

    async def claim_or_nothing(
        self,
        authorizer_id: str,
        qualification: Qualification | None = None,
        audit: StagedAudit | None = None,
    ) -> Claim | NothingToClaim:
        """As claim(), saying when it finds nothing whether the queue is empty. Each call
        carries a fresh nonce, so the script is safe to send again after a lost reply: a
        repeat answers the claim the first run made, or nothing if that claim is no
        longer held (server/lua/claim.lua)."""
        only = ClaimFilter.of(qualification)
        result = await self.run_audited(
            self.scripts.claim,
            audit,
            keys=[
                self.keys.leases,
                self.keys.events,
                self.keys.fence,
                self.keys.waiting_by_branch,
                self.keys.counts,
                self.keys.away,
                self.keys.lanes,
                self.keys.claim_nonce(claim_nonce()),
            ],
            args=[
                authorizer_id,
                self.config.lease_ms,
                self.config.events_maxlen,
                self.keys.request_prefix,
                self.keys.history_prefix,
                only.business_types,
                only.full_bands,
                only.ceiling_minor,
                CLAIM_REPEAT_TTL_MS,
                self.keys.account_prefix,
            ],
        )
        status = as_text(result[0])
        if status == "AWAY":
            raise AuthorizerAway(authorizer_id)
        if status == "INACTIVE":
            raise AccountInactive(authorizer_id)
        if status == "EMPTY":
            return NothingToClaim(more_waiting=bool(int(result[1])))
        flat = result[5]
        fields = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
        record = RequestRecord.from_redis(fields, result[6])
        return Claim(record=record, token=int(result[2]), lease_until_ms=int(result[3]),
                     more_waiting=bool(int(result[7])))  # fmt: skip

    async def decide(
        self,
        request_id: str,
        token: int,
        authorizer_id: str,
        outcome: Outcome,
        reason_code: str = "",
        note: str = "",
        kinds: Sequence[str] = (),
        audit: StagedAudit | None = None,
    ) -> HistoryEntry:
        result = await self.run_audited(
            self.scripts.decide,
            audit,
            keys=[
                self.keys.request(request_id),
                self.keys.history(request_id),
                self.keys.leases,
                self.keys.events,
                self.keys.counts,
            ],
            args=[
                request_id,
                token,
                authorizer_id,
                outcome.state.value,
                outcome.event,
                reason_code,
                note,
                ",".join(kinds),
                self.config.events_maxlen,
            ],
        )
        action = outcome.value.lower().replace("_", " for ")
        entry = await self._entry(
            request_id, result, action, outcome.event, authorizer_id, reason_code, note, kinds
        )
        # The script knows a repeat by its holder, token and outcome; what it said with
        # it is in the history. A call that says something else is no retry of it, and
        # answering it as done would tell its caller that their reason was recorded.
        if as_text(result[0]) == "DUP" and (entry.reason_code, entry.note, entry.kinds) != (
            reason_code,
            note,
            tuple(kinds),
        ):
            raise FailedPrecondition(
                f"cannot {action} request {request_id}: it was decided {entry.state.value} "
                f"under this fencing token already, with another reason, note or image "
                "kinds; a decision is made once",
                request_id=request_id,
            )
        return entry

    async def release(
        self,
        request_id: str,
        token: int,
        authorizer_id: str,
        note: str,
        audit: StagedAudit | None = None,
        *,
        put_back: bool = False,
    ) -> HistoryEntry:
        """Returns a claimed item to its place. ``put_back``: the dispatcher's, for an
        offer that never reached the authorizer; nobody opened the item, so the review
        flag goes back to what it was before the claim and the teller may still withdraw
        it (R4). Otherwise the holder hands it back: review has started."""
        mode = "put_back" if put_back else "release"
        result = await self._requeue(request_id, mode, token, authorizer_id, note, audit)
        return await self._entry(
            request_id, result, "hand back", "RELEASED", authorizer_id, note=note
        )

    async def expire(self, request_id: str, audit: StagedAudit | None = None) -> LapsedLease | None:
        """Returns the item to the queue if its lease has run out, and says whose lease
        it was; None if it had not run out (or another process expired it first).
        ``audit``: the LEASE_EXPIRED record, which the script completes (whose lease)."""
        result = await self._requeue(request_id, "expire", 0, "system", "lease expired", audit)
        if as_text(result[0]) != "OK":
            return None
        return LapsedLease(request_id, as_text(result[4]), int(result[5]))

    async def _requeue(
        self,
        request_id: str,
        mode: str,
        token: int,
        actor: str,
        note: str,
        audit: StagedAudit | None,
    ) -> list[Any]:
        return await self.run_audited(
            self.scripts.requeue,
            audit,
            keys=[
                self.keys.request(request_id),
                self.keys.history(request_id),
                self.keys.leases,
                self.keys.events,
                self.keys.counts,
                self.keys.waiting_by_branch,
            ],
            args=[request_id, mode, token, actor, note, self.config.events_maxlen],
        )

    async def run_audited(
        self, script: ScriptCall, audit: StagedAudit | None, keys: list[str], args: list[Any]
    ) -> list[Any]:
        """Runs a script that stages its action's audit record (server/store/staging.py);
        ``audit.staged`` says whether the script did the action, and so staged it."""
        return await staging.run_audited(script, self.keys.audit_staged, audit, keys, args)

    async def set_away(
        self, authorizer_id: str, away: bool, audit: StagedAudit | None = None
    ) -> None:
        """``audit``: the AWAY or BACK record, staged in the same transaction (R15)."""
        async with staging.audited_transaction(self.client, self.keys.audit_staged,
                                               audit) as pipe:  # fmt: skip
            if away:
                pipe.sadd(self.keys.away, authorizer_id)
            else:
                pipe.srem(self.keys.away, authorizer_id)
                # Its console may wait on another server process, whose dispatcher
                # would otherwise look again only when an item enters the queue.
                pipe.publish(self.keys.account_changes, authorizer_id)

    async def is_away(self, authorizer_id: str) -> bool:
        return bool(await self.client.sismember(self.keys.away, authorizer_id))

    async def renew(self, request_id: str, token: int, authorizer_id: str) -> int:
        result = await self.scripts.renew(
            keys=[self.keys.request(request_id), self.keys.leases],
            args=[request_id, token, authorizer_id, self.config.lease_ms],
        )
        self._raise_for(request_id, result, "renew the lease of")
        return int(result[1])

    async def expired_leases(self, now_ms: int, limit: int = 100) -> list[str]:
        ids = await self.client.zrangebyscore(self.keys.leases, "-inf", now_ms, 0, limit)
        return [as_text(rid) for rid in ids]

    async def next_lease_deadline(self) -> int | None:
        head = await self.client.zrange(self.keys.leases, 0, 0, withscores=True)
        return int(head[0][1]) if head else None

    # -- images --------------------------------------------------------------------

    async def record_blob(self, image: Image) -> str | None:
        """Notes that an image's bytes are stored: size and content type. Returns the
        verdict of its full check stored there, if any (server/images/checker.py), read
        in the same round trip."""
        key = self.keys.blob(image.sha256)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={"sz": image.size_bytes, "ct": image.content_type})
            pipe.hget(key, "ck")
            _, verdict = await pipe.execute()
        return None if verdict is None else as_text(verdict)

    async def blob_meta(self, hashes: Sequence[str]) -> list[tuple[int, str] | None]:
        if not hashes:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for sha256 in hashes:
                pipe.hmget(self.keys.blob(sha256), ["sz", "ct"])
            replies = await pipe.execute()
        return [(int(size), as_text(ct)) if size is not None else None for size, ct in replies]

    # -- script results ----------------------------------------------------------

    async def _entry(
        self,
        request_id: str,
        result: list[Any],
        action: str,
        event: str,
        actor: str,
        reason_code: str = "",
        note: str = "",
        kinds: Sequence[str] = (),
    ) -> HistoryEntry:
        """The history entry a transition script just recorded, or for a repeat (DUP:
        a retry, or a second teller's cancel of a cancelled request) the one recorded
        when it was done: its time, actor and note, not the repeat's."""
        self._raise_for(request_id, result, action)
        version = int(result[2])
        if as_text(result[0]) == "DUP":
            recorded = await self._recorded(request_id, version)
            if recorded is not None:
                return recorded
        at_ms = int(result[3]) if len(result) > 3 else int(time.time() * 1000)
        return HistoryEntry(
            request_id=request_id,
            version=version,
            at_ms=at_ms,
            event=event,
            actor=actor,
            state=State(as_text(result[1])),
            reason_code=reason_code,
            note=note,
            kinds=tuple(kinds),
        )

    async def _recorded(self, request_id: str, version: int) -> HistoryEntry | None:
        """The history entry of that version (None once archived out of Redis)."""
        try:
            record = await self.get(request_id)
        except NotFound:
            return None
        return next((entry for entry in record.history if entry.version == version), None)

    @staticmethod
    def _raise_for(request_id: str, result: list[Any], action: str) -> None:
        status = as_text(result[0])
        if status in ("OK", "DUP"):
            return
        if status == "NOTFOUND":
            raise NotFound(f"no request with request_id {request_id}", request_id=request_id)
        if status == "STATE":
            raise IllegalTransition(request_id, as_text(result[1]), action)
        if status == "LEASE":
            raise _lease_lost(request_id, action, [as_text(value) for value in result[1:]])
        if status == "DUTY":
            raise PermissionDenied(
                f"cannot {action} request {request_id}: {as_text(result[1])}; whoever submitted "
                "or reviewed a request can never authorize it (R11)",
                request_id=request_id,
            )
        if status == "VERSION":
            raise FailedPrecondition(
                f"request {request_id} changed while the call was prepared: try again",
                request_id=request_id,
            )
        raise RuntimeError(f"unexpected script status {status!r} for {request_id}")


def _lease_lost(request_id: str, action: str, answer: list[str]) -> LeaseLost:
    """The script's answer on a lease that is not the caller's: its reason, and for a
    stale token the token presented and the current one."""
    reason = answer[0]
    if reason == "STALE_FENCING_TOKEN":
        token, current = answer[1], answer[2]
        return LeaseLost(
            f"cannot {action} request {request_id}: stale fencing token {token} "
            f"(current {current})",
            reason=reason,
            request_id=request_id,
            token=token,
            current_token=current,
        )
    said = _LEASE_WORDS.get(reason)
    if said is None:  # a script's reason this code does not know yet
        return LeaseLost(f"cannot {action} request {request_id}: {reason}", request_id=request_id)
    message = f"cannot {action} request {request_id}: {said}"
    return LeaseLost(message, reason=reason, request_id=request_id)
