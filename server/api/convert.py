"""Protobuf messages to domain objects and back. Parsing refuses anything malformed
with InvalidArgument naming the field, so nothing malformed reaches the store."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import ParamSpec, TypeVar

from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb

from server.center import Identity
from server.domain import transaction_rules as rules
from server.domain.records import IMAGE_KINDS, HistoryEntry, Image, RequestRecord, Submission
from server.domain.states import State
from server.errors import InvalidArgument
from server.intake import check_sha256
from server.policy.model import PolicyView

_KIND_PREFIX = "IMAGE_KIND_"
_STATE_PREFIX = "REQUEST_STATE_"
_P = ParamSpec("_P")
_T = TypeVar("_T")


# Looked up on every message: built once (the enum wrapper's lookups build lists).
_KIND_BY_VALUE: dict[int, str] = {
    value: name.removeprefix(_KIND_PREFIX)
    for name, value in cpb.ImageKind.items()
    if name.removeprefix(_KIND_PREFIX) in IMAGE_KINDS
}
_VALUE_BY_KIND: dict[str, cpb.ImageKind.ValueType] = {
    kind: cpb.ImageKind.Value(_KIND_PREFIX + kind) for kind in _KIND_BY_VALUE.values()
}
_VALUE_BY_STATE: dict[State, cpb.RequestState.ValueType] = {
    state: cpb.RequestState.Value(_STATE_PREFIX + state.value) for state in State
}


def as_invalid_argument(parse: Callable[_P, _T]) -> Callable[_P, _T]:
    """``parse`` raising the refusal of a transaction rule (server/domain/transaction_rules.py)
    as the InvalidArgument of the same field and problem."""

    @functools.wraps(parse)
    def parsed(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return parse(*args, **kwargs)
        except rules.Malformed as refused:
            raise InvalidArgument(refused.field, refused.problem) from None

    return parsed


def kind_name(value: int, field: str) -> str:
    kind = _KIND_BY_VALUE.get(value)
    if kind is None:
        raise InvalidArgument(field, f"must be one of {', '.join(IMAGE_KINDS)} (got {value})")
    return kind


def kind_value(kind: str) -> cpb.ImageKind.ValueType:
    return _VALUE_BY_KIND[kind]


def state_value(state: State) -> cpb.RequestState.ValueType:
    return _VALUE_BY_STATE[state]


@as_invalid_argument
def check_request_id(value: str, field: str = "request_id") -> str:
    return rules.request_id(value, field)


def images_from_pb(refs: Iterable[cpb.ImageRef], field: str) -> list[Image]:
    images = []
    seen: set[tuple[str, str]] = set()
    for index, ref in enumerate(refs):
        kind = kind_name(ref.kind, f"{field}[{index}].kind")
        sha256 = check_sha256(ref.sha256, f"{field}[{index}].sha256")
        if (kind, sha256) in seen:
            raise InvalidArgument(f"{field}[{index}]", "the same image is listed twice")
        seen.add((kind, sha256))
        images.append(Image(kind, sha256, 0, ""))
    return images


@as_invalid_argument
def submission_from_pb(
    request: tpb.SubmitRequest, identity: Identity, catalog: PolicyView
) -> Submission:
    rules.request_id(request.request_id)
    if not request.HasField("transaction"):
        raise InvalidArgument("transaction", "is required")
    tx = request.transaction
    # The catalog in force, not a form, says which business types the center takes.
    if not tx.business_type:
        raise InvalidArgument("transaction.business_type", "is required")
    business = catalog.get(tx.business_type)
    if business is None:
        raise InvalidArgument(
            "transaction.business_type", f"unknown business type {tx.business_type[:64]!r}"
        )
    amount, currency = _amount(tx, business.monetary)
    rules.account(tx.account, "transaction.account")
    rules.fields(tx.fields, "transaction.fields")
    if request.urgency not in (
        cpb.URGENCY_UNSPECIFIED,
        cpb.URGENCY_NORMAL,
        cpb.URGENCY_URGENT,
    ):
        raise InvalidArgument("urgency", f"unknown urgency {request.urgency}")
    rules.preparation_seconds(request.preparation_seconds)
    return Submission(
        request_id=request.request_id,
        branch_id=identity.branch_id,
        teller_id=identity.user_id,
        business_type=business.code,
        amount_minor=amount,
        currency=currency,
        account=tx.account,
        customer_name=rules.customer_name(tx.customer_name, "transaction.customer_name"),
        memo=rules.memo(tx.memo, "transaction.memo"),
        fields=dict(tx.fields),
        urgency=2 if request.urgency == cpb.URGENCY_URGENT else 1,
        importance=business.importance,
        images=tuple(images_from_pb(request.images, "images")),
        preparation_seconds=request.preparation_seconds,
    )


def _amount(tx: cpb.Transaction, monetary: bool) -> tuple[int, str]:
    if not tx.HasField("amount"):
        if monetary:
            raise InvalidArgument("transaction.amount", f"is required for {tx.business_type}")
        return 0, ""
    minor, currency = tx.amount.minor_units, tx.amount.currency
    rules.amount(minor, currency, "transaction.amount")
    if monetary and minor == 0:
        raise InvalidArgument("transaction.amount.minor_units", "must be positive")
    return minor, currency


def image_to_pb(image: Image) -> cpb.ImageRef:
    return cpb.ImageRef(
        kind=kind_value(image.kind),
        sha256=image.sha256,
        size_bytes=image.size_bytes,
        content_type=image.content_type,
    )


def entry_to_pb(entry: HistoryEntry) -> cpb.RequestUpdate:
    return cpb.RequestUpdate(
        request_id=entry.request_id,
        state=state_value(entry.state),
        version=entry.version,
        at_ms=entry.at_ms,
        event=entry.event,
        actor=entry.actor,
        reason_code=entry.reason_code,
        note=entry.note,
        requested_kinds=[kind_value(kind) for kind in entry.kinds if kind in IMAGE_KINDS],
    )


def record_to_pb(record: RequestRecord) -> cpb.RequestView:
    sub = record.submission
    transaction = cpb.Transaction(
        business_type=sub.business_type,
        account=sub.account,
        customer_name=sub.customer_name,
        memo=sub.memo,
        fields=sub.fields,
    )
    if sub.currency:
        transaction.amount.CopyFrom(cpb.Money(minor_units=sub.amount_minor, currency=sub.currency))
    return cpb.RequestView(
        request_id=sub.request_id,
        state=state_value(record.state),
        version=record.version,
        branch_id=sub.branch_id,
        teller_id=sub.teller_id,
        transaction=transaction,
        urgency=cpb.URGENCY_URGENT if sub.urgency == 2 else cpb.URGENCY_NORMAL,
        importance=sub.importance,
        images=[image_to_pb(image) for image in record.images],
        submitted_at_ms=record.submitted_ms,
        authorizer_id=record.holder,
        history=[entry_to_pb(entry) for entry in record.history],
    )
