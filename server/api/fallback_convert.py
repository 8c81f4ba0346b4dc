"""Local fallback records (R8) between protobuf and server/store/fallbacks.py.

Parsing refuses anything malformed with InvalidArgument naming the field
(``records[2].transaction.account``). A fallback is a record of what happened at a
branch, not a submission: the business type need not be in the catalog in force and
no images travel, but every field must be well formed and bounded, since it is kept
for good (R15)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence

import grpc
from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb
from google.protobuf.json_format import MessageToDict, ParseDict

from server.api import convert
from server.domain import transaction_rules as rules
from server.domain.reasons import NOTE_MAX_CHARS
from server.domain.states import State
from server.errors import InvalidArgument
from server.store.emergencies import check_emergency_id
from server.store.fallbacks import Cause, Fallback, OnsiteOutcome, ReportResult, ReportStatus

# Records in one ReportFallbacks call.
MAX_BATCH = 100
# How far ahead of the server's clock a workstation's may run.
MAX_CLOCK_AHEAD_MS = 5 * 60_000
_ID_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,64}\Z")
_STATUS_NAMES = frozenset(code.name for code in grpc.StatusCode)

_CAUSES = {
    tpb.FALLBACK_CAUSE_CENTER_UNREACHABLE: Cause.CENTER_UNREACHABLE,
    tpb.FALLBACK_CAUSE_EMERGENCY: Cause.EMERGENCY,
}
_OUTCOMES = {
    tpb.ONSITE_OUTCOME_APPROVED: OnsiteOutcome.APPROVED,
    tpb.ONSITE_OUTCOME_REJECTED: OnsiteOutcome.REJECTED,
}
_STATUSES = {
    ReportStatus.STORED: tpb.FALLBACK_REPORT_STATUS_STORED,
    ReportStatus.DUPLICATE: tpb.FALLBACK_REPORT_STATUS_DUPLICATE,
    ReportStatus.OUTCOME_ADDED: tpb.FALLBACK_REPORT_STATUS_OUTCOME_ADDED,
    ReportStatus.CONFLICT: tpb.FALLBACK_REPORT_STATUS_CONFLICT,
}


def fallbacks_from_pb(
    records: Sequence[tpb.FallbackRecord], now_ms: int | None = None
) -> list[Fallback]:
    if not records:
        raise InvalidArgument("records", "at least one fallback record is required")
    if len(records) > MAX_BATCH:
        raise InvalidArgument("records", f"at most {MAX_BATCH} per call (got {len(records)})")
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    seen: set[str] = set()
    fallbacks = []
    for index, record in enumerate(records):
        fallback = fallback_from_pb(record, f"records[{index}]", now)
        if fallback.request_id in seen:
            raise InvalidArgument(f"records[{index}].request_id", "listed twice in this call")
        seen.add(fallback.request_id)
        fallbacks.append(fallback)
    return fallbacks


def _instant(value: int, field: str, now_ms: int) -> int:
    if value <= 0:
        raise InvalidArgument(field, "is required: milliseconds since the epoch")
    if value > now_ms + MAX_CLOCK_AHEAD_MS:
        raise InvalidArgument(field, "is in the future: check the workstation's clock")
    return value


def _transaction(record: tpb.FallbackRecord, where: str) -> tuple[str, str, int, str]:
    """The transaction as canonical JSON, with its business type, amount and currency."""
    if not record.HasField("transaction"):
        raise InvalidArgument(f"{where}.transaction", "is required: the transaction as keyed")
    tx = record.transaction
    field = f"{where}.transaction"
    rules.business_type(tx.business_type, f"{field}.business_type")
    rules.account(tx.account, f"{field}.account")
    rules.customer_name(tx.customer_name, f"{field}.customer_name")
    rules.memo(tx.memo, f"{field}.memo")
    rules.fields(tx.fields, f"{field}.fields")
    minor, currency = 0, ""
    if tx.HasField("amount"):
        minor, currency = tx.amount.minor_units, tx.amount.currency
        rules.amount(minor, currency, f"{field}.amount")
    canonical = json.dumps(
        MessageToDict(tx), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return canonical, tx.business_type, minor, currency


@convert.as_invalid_argument
def fallback_from_pb(record: tpb.FallbackRecord, where: str, now_ms: int) -> Fallback:
    request_id = rules.request_id(record.request_id, f"{where}.request_id")
    transaction, business_type, minor, currency = _transaction(record, where)
    if record.urgency not in (cpb.URGENCY_UNSPECIFIED, cpb.URGENCY_NORMAL, cpb.URGENCY_URGENT):
        raise InvalidArgument(f"{where}.urgency", f"unknown urgency {record.urgency}")
    for name in ("teller_id", "branch_id"):
        value = getattr(record, name)
        if value and not _ID_RE.match(value):
            raise InvalidArgument(f"{where}.{name}", "1-64 of A-Z a-z 0-9 . _ : @ -, or empty")
    occurred = _instant(record.occurred_at_ms, f"{where}.occurred_at_ms", now_ms)
    cause = _CAUSES.get(record.cause)
    if cause is None:
        raise InvalidArgument(
            f"{where}.cause", "is required: CENTER_UNREACHABLE or EMERGENCY (R8: say why)"
        )
    status_code = record.status_code.strip()
    if cause is Cause.CENTER_UNREACHABLE:
        if status_code not in _STATUS_NAMES:
            raise InvalidArgument(
                f"{where}.status_code", "is required: the gRPC status got, e.g. UNAVAILABLE"
            )
        if record.emergency_id:
            raise InvalidArgument(f"{where}.emergency_id", "only an EMERGENCY fallback names one")
    else:
        rules.text(record.emergency_id, f"{where}.emergency_id", 32, required=True)
        check_emergency_id(record.emergency_id.strip(), f"{where}.emergency_id")
        if status_code:
            raise InvalidArgument(f"{where}.status_code", "only an unreachable center has one")
    outcome = _OUTCOMES.get(record.onsite_outcome)
    if outcome is None:
        if record.onsite_outcome != tpb.ONSITE_OUTCOME_UNSPECIFIED:
            raise InvalidArgument(
                f"{where}.onsite_outcome", f"unknown outcome {record.onsite_outcome}"
            )
        if record.onsite_authorizer or record.onsite_note or record.onsite_at_ms:
            raise InvalidArgument(
                f"{where}.onsite_outcome", "is required with the on-site authorizer, note or time"
            )
    else:
        if not _ID_RE.match(record.onsite_authorizer):
            raise InvalidArgument(
                f"{where}.onsite_authorizer",
                "is required with an on-site outcome: who authorized it at the branch",
            )
        onsite_at = _instant(record.onsite_at_ms, f"{where}.onsite_at_ms", now_ms)
        # Both times come from the same workstation's clock: no skew to allow for.
        if onsite_at < occurred:
            raise InvalidArgument(
                f"{where}.onsite_at_ms",
                "is before occurred_at_ms: it was authorized on site after the fallback",
            )
    return Fallback(
        request_id=request_id,
        teller_id=record.teller_id,
        branch_id=record.branch_id,
        occurred_at_ms=occurred,
        cause=cause,
        transaction_json=transaction,
        business_type=business_type,
        amount_minor=minor,
        currency=currency,
        urgent=record.urgency == cpb.URGENCY_URGENT,
        status_code=status_code,
        status_message=rules.text(record.status_message, f"{where}.status_message", 500),
        emergency_id=record.emergency_id.strip(),
        onsite_outcome=outcome,
        onsite_authorizer=record.onsite_authorizer,
        onsite_note=rules.text(record.onsite_note, f"{where}.onsite_note", NOTE_MAX_CHARS),
        onsite_at_ms=record.onsite_at_ms if outcome else 0,
    )


def fallback_to_pb(fallback: Fallback) -> tpb.FallbackRecord:
    record = tpb.FallbackRecord(
        request_id=fallback.request_id,
        urgency=cpb.URGENCY_URGENT if fallback.urgent else cpb.URGENCY_NORMAL,
        teller_id=fallback.teller_id,
        branch_id=fallback.branch_id,
        occurred_at_ms=fallback.occurred_at_ms,
        cause=tpb.FallbackCause.Value("FALLBACK_CAUSE_" + fallback.cause.value),
        status_code=fallback.status_code,
        status_message=fallback.status_message,
        emergency_id=fallback.emergency_id,
        onsite_authorizer=fallback.onsite_authorizer,
        onsite_note=fallback.onsite_note,
        onsite_at_ms=fallback.onsite_at_ms,
        reported_by=fallback.reported_by,
        received_at_ms=fallback.received_at_ms,
        also_submitted=fallback.also_submitted,
        central_state=_central_state(fallback.central_state),
    )
    if fallback.onsite_outcome is not None:
        record.onsite_outcome = tpb.OnsiteOutcome.Value(
            "ONSITE_OUTCOME_" + fallback.onsite_outcome.value
        )
    if fallback.transaction_json:
        ParseDict(json.loads(fallback.transaction_json), record.transaction)
    return record


def result_to_pb(result: ReportResult) -> tpb.FallbackReportResult:
    return tpb.FallbackReportResult(
        request_id=result.request_id,
        status=_STATUSES[result.status],
        message=result.detail,
        also_submitted=result.also_submitted,
        central_state=_central_state(result.central_state),
    )


def _central_state(state: str) -> cpb.RequestState.ValueType:
    """The state the store names; UNSPECIFIED for none (and for a name this server
    does not know, which only a newer server could have written)."""
    try:
        return convert.state_value(State(state)) if state else cpb.REQUEST_STATE_UNSPECIFIED
    except ValueError:
        return cpb.REQUEST_STATE_UNSPECIFIED
