"""Local fallbacks tellers report (R8): transactions a branch authorized on site
because the center could not be reached, or because an emergency was in force.

Each is stored once, by the workstation's request id (server/lua/fallback_report.lua):
a retried upload changes nothing, and the on-site outcome, often recorded after the
first upload, is added once. A per-branch index and an index of all, by the time the
fallback occurred, serve the supervisor's listing.

The same script withdraws the center's request of the same id, if a submit the
workstation gave up on had reached it and no one has decided it yet: a transaction is
authorized once, on site or centrally, never both."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis

from server.store.keys import Keys
from server.store.queue_reads import as_text, field_reader
from server.store.scripts import load_script
from server.store.staging import run_staging

# What one listing returns at most.
MAX_LIST = 1000
# The note on the history entry of a request a fallback withdrew.
WITHDRAWAL_NOTE = "authorized on site as a local fallback (R8): withdrawn from the center"


class Cause(StrEnum):
    CENTER_UNREACHABLE = "CENTER_UNREACHABLE"
    EMERGENCY = "EMERGENCY"


class OnsiteOutcome(StrEnum):
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


class ReportStatus(StrEnum):
    STORED = "STORED"
    DUPLICATE = "DUPLICATE"
    OUTCOME_ADDED = "OUTCOME_ADDED"
    CONFLICT = "CONFLICT"


@dataclass(frozen=True, slots=True)
class Fallback:
    """One local fallback: who, what, when, why, and the on-site outcome."""

    request_id: str
    teller_id: str
    branch_id: str
    occurred_at_ms: int
    cause: Cause
    # The transaction as keyed, canonical JSON (the API layer owns its shape), and
    # what of it the audit trail and the listings name.
    transaction_json: str
    business_type: str = ""
    amount_minor: int = 0
    currency: str = ""
    urgent: bool = False
    status_code: str = ""
    status_message: str = ""
    emergency_id: str = ""
    onsite_outcome: OnsiteOutcome | None = None
    onsite_authorizer: str = ""
    onsite_note: str = ""
    onsite_at_ms: int = 0
    # Set by the server.
    reported_by: str = ""
    received_at_ms: int = 0
    also_submitted: bool = False
    # What became of the center's request of the same id ("" = none): SENT_BACK when
    # the report withdrew it, or its final state if it had ended before.
    central_state: str = ""

    def event_fields(self) -> dict[str, str]:
        """What happened, without the on-site outcome (which may come later) and
        without what the server adds: the part a retry must repeat exactly."""
        return {
            "request_id": self.request_id,
            "teller": self.teller_id,
            "branch": self.branch_id,
            "occurred_at": str(self.occurred_at_ms),
            "cause": self.cause.value,
            "transaction": self.transaction_json,
            "business_type": self.business_type,
            "amount_minor": str(self.amount_minor),
            "currency": self.currency,
            "urgent": "1" if self.urgent else "0",
            "status_code": self.status_code,
            "status_message": self.status_message,
            "emergency_id": self.emergency_id,
        }

    def audit_details(self) -> dict[str, str | int]:
        """Who, what, when, why and the on-site outcome, for the audit trail (R8, R15);
        the customer's name and account stay in the record (R14). fallback_report.lua
        adds what it found at the center: also_submitted, central_state, withdrew."""
        return {
            "teller": self.teller_id,
            "branch": self.branch_id,
            "occurred_at_ms": self.occurred_at_ms,
            "cause": self.cause.value,
            "status_code": self.status_code,
            "status_message": self.status_message[:200],
            "emergency_id": self.emergency_id,
            "business_type": self.business_type,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "onsite_outcome": self.onsite_outcome.value if self.onsite_outcome else "",
            "onsite_authorizer": self.onsite_authorizer,
            "onsite_note": self.onsite_note[:200],
        }

    def digest(self) -> str:
        canonical = json.dumps(self.event_fields(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ReportResult:
    request_id: str
    status: ReportStatus
    also_submitted: bool
    detail: str = ""
    # As Fallback.central_state, after this report.
    central_state: str = ""
    # This report withdrew the center's request (ended it SENT_BACK).
    withdrew: bool = False


class FallbackStore:
    def __init__(self, client: aioredis.Redis, keys: Keys, events_maxlen: int) -> None:
        self.client = client
        self.keys = keys
        self.events_maxlen = events_maxlen
        self._report = load_script(client, "fallback_report")

    async def report(
        self, fallback: Fallback, reported_by: str, template: bytes = b""
    ) -> ReportResult:
        """Stores the fallback unless held; adds its on-site outcome if newly known;
        withdraws the center's request of the same id if undecided (the fallback's
        branch must be its branch). ``template``: the report's audit record, from
        which the script stages one record per action it takes."""
        event = fallback.event_fields()
        del event["occurred_at"]  # the script stores it beside the digest
        pairs = [item for name_value in event.items() for item in name_value]
        outcome = fallback.onsite_outcome.value if fallback.onsite_outcome else ""
        result = await run_staging(
            self._report, self.keys.audit_staged, template=template,
            keys=[
                self.keys.fallback_record(fallback.request_id),
                self.keys.fallback_index(fallback.branch_id),
                self.keys.fallback_index(None),
                self.keys.request(fallback.request_id),
                self.keys.archive_marker(fallback.request_id),
                self.keys.history(fallback.request_id),
                self.keys.events,
                self.keys.counts,
                self.keys.waiting_by_branch,
                self.keys.onsite(fallback.branch_id),
                self.keys.leases,
            ],
            args=[
                fallback.request_id,
                fallback.digest(),
                fallback.occurred_at_ms,
                outcome,
                fallback.onsite_authorizer,
                fallback.onsite_note,
                fallback.onsite_at_ms,
                fallback.branch_id,
                reported_by,
                WITHDRAWAL_NOTE,
                self.events_maxlen,
                *pairs,
                "reported_by",
                reported_by,
            ],
        )  # fmt: skip
        return ReportResult(
            fallback.request_id, ReportStatus(as_text(result[0])), int(result[1]) == 1,
            as_text(result[2]), as_text(result[3]), int(result[4]) == 1,
        )  # fmt: skip

    async def get(self, request_id: str) -> Fallback | None:
        fields = await self.client.hgetall(self.keys.fallback_record(request_id))
        return _fallback(fields) if fields else None

    async def list(
        self, branch_id: str | None, from_ms: int = 0, to_ms: int = 0, limit: int = 100
    ) -> list[Fallback]:
        """The most recent first; from_ms inclusive, to_ms exclusive, 0 unbounded."""
        newest: str | int = to_ms - 1 if to_ms else "+inf"
        oldest: str | int = from_ms if from_ms else "-inf"
        ids = await self.client.zrevrangebyscore(
            self.keys.fallback_index(branch_id), newest, oldest, start=0,
            num=min(max(limit, 1), MAX_LIST),
        )  # fmt: skip
        async with self.client.pipeline(transaction=False) as pipe:
            for request_id in ids:
                pipe.hgetall(self.keys.fallback_record(as_text(request_id)))
            rows = await pipe.execute()
        return [_fallback(row) for row in rows if row]


def _fallback(fields: dict[Any, Any]) -> Fallback:
    get = field_reader(fields)

    outcome = get("onsite_outcome")
    return Fallback(
        request_id=get("request_id"),
        teller_id=get("teller"),
        branch_id=get("branch"),
        occurred_at_ms=int(get("occurred_at") or 0),
        cause=Cause(get("cause")),
        transaction_json=get("transaction"),
        business_type=get("business_type"),
        amount_minor=int(get("amount_minor") or 0),
        currency=get("currency"),
        urgent=get("urgent") == "1",
        status_code=get("status_code"),
        status_message=get("status_message"),
        emergency_id=get("emergency_id"),
        onsite_outcome=OnsiteOutcome(outcome) if outcome else None,
        onsite_authorizer=get("onsite_authorizer"),
        onsite_note=get("onsite_note"),
        onsite_at_ms=int(get("onsite_at") or 0),
        reported_by=get("reported_by"),
        received_at_ms=int(get("received_at") or 0),
        also_submitted=get("also_submitted") == "1",
        central_state=get("central_state"),
    )
