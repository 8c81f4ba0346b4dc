"""What the queue stores about a request, and its msgpack form in Redis."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

from server.domain.priority import PriorityClass
from server.domain.states import State

IMAGE_KINDS = (
    "ID_FRONT",
    "ID_BACK",
    "VOUCHER",
    "APPLICATION_FORM",
    "CUSTOMER_PHOTO",
    "OTHER",
)


@dataclass(frozen=True, slots=True)
class Image:
    kind: str
    sha256: str
    size_bytes: int
    content_type: str

    def pack(self) -> list[Any]:
        return [self.kind, self.sha256, self.size_bytes, self.content_type]

    @classmethod
    def unpack(cls, raw: list[Any]) -> Image:
        return cls(str(raw[0]), str(raw[1]), int(raw[2]), str(raw[3]))


@dataclass(frozen=True, slots=True)
class Submission:
    """A request as the teller submitted it: immutable once stored."""

    request_id: str
    branch_id: str
    teller_id: str
    business_type: str
    amount_minor: int
    currency: str
    account: str
    customer_name: str
    memo: str
    fields: dict[str, str]
    urgency: int
    importance: int
    images: tuple[Image, ...]
    preparation_seconds: int = 0

    @property
    def priority(self) -> PriorityClass:
        return PriorityClass(self.importance, self.urgency)

    def pack(self) -> bytes:
        return msgpack.packb(  # type: ignore[no-any-return]
            [
                1,  # layout version of this record
                self.request_id,
                self.branch_id,
                self.teller_id,
                self.business_type,
                self.amount_minor,
                self.currency,
                self.account,
                self.customer_name,
                self.memo,
                dict(sorted(self.fields.items())),
                self.urgency,
                self.importance,
                [image.pack() for image in self.images],
                self.preparation_seconds,
            ]
        )

    @classmethod
    def unpack(cls, data: bytes) -> Submission:
        raw = msgpack.unpackb(data)
        if raw[0] != 1:
            raise ValueError(f"unknown submission layout {raw[0]}")
        return cls(
            request_id=raw[1],
            branch_id=raw[2],
            teller_id=raw[3],
            business_type=raw[4],
            amount_minor=raw[5],
            currency=raw[6],
            account=raw[7],
            customer_name=raw[8],
            memo=raw[9],
            fields=dict(raw[10]),
            urgency=raw[11],
            importance=raw[12],
            images=tuple(Image.unpack(image) for image in raw[13]),
            preparation_seconds=raw[14],
        )

    def fingerprint(self) -> str:
        """Identifies the content, so a retry is told apart from a reused id.
        Preparation time is left out: a retry may measure it anew."""
        content = msgpack.packb(
            [
                self.request_id,
                self.branch_id,
                self.teller_id,
                self.business_type,
                self.amount_minor,
                self.currency,
                self.account,
                self.customer_name,
                self.memo,
                sorted(self.fields.items()),
                self.urgency,
                [(image.kind, image.sha256) for image in self.images],
            ]
        )
        return hashlib.sha256(content).hexdigest()[:32]


_DECISION_EVENTS = frozenset({"APPROVED", "REJECTED", "SUPPLEMENT_REQUESTED"})


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    request_id: str
    version: int
    at_ms: int
    event: str
    actor: str
    state: State
    reason_code: str = ""
    note: str = ""
    kinds: tuple[str, ...] = ()
    branch_id: str = ""

    @property
    def is_decision(self) -> bool:
        """An authorizer's decision: approved, rejected or images asked for. The image
        check's send-back (images asked for by 'system', server/images/gate.py) is not:
        nobody decided, and counted it would raise the decision rate that the backlog
        monitor and the supervisor's view estimate waits with."""
        return self.event in _DECISION_EVENTS and self.actor != "system"

    @classmethod
    def unpack(cls, data: bytes) -> HistoryEntry:
        raw = msgpack.unpackb(data)
        kinds = raw[8] if isinstance(raw[8], list) else []  # Lua packs {} as a map
        return cls(
            request_id=raw[0],
            version=int(raw[1]),
            at_ms=int(raw[2]),
            event=raw[3],
            actor=raw[4],
            state=State(raw[5]),
            reason_code=raw[6],
            note=raw[7],
            kinds=tuple(kinds),
            branch_id=raw[9],
        )


@dataclass(frozen=True, slots=True)
class RequestRecord:
    submission: Submission
    state: State
    version: int
    submitted_ms: int
    holder: str
    token: int
    lease_until_ms: int
    supplements: tuple[Image, ...] = ()
    history: tuple[HistoryEntry, ...] = field(default=())

    @property
    def request_id(self) -> str:
        return self.submission.request_id

    @property
    def images(self) -> tuple[Image, ...]:
        return self.submission.images + self.supplements

    @property
    def requested_kinds(self) -> tuple[str, ...]:
        """The kinds asked for by the latest supplement request, if one is open."""
        for entry in reversed(self.history):
            if entry.event == "SUPPLEMENT_REQUESTED":
                return entry.kinds
        return ()

    @classmethod
    def from_redis(cls, fields: dict[bytes, bytes], history: list[bytes]) -> RequestRecord:
        supplements = fields.get(b"sx")
        submission = Submission.unpack(fields[b"d"])
        submitted_ms = int(fields[b"sub"])
        submitted = HistoryEntry(
            request_id=submission.request_id,
            version=1,
            at_ms=submitted_ms,
            event="SUBMITTED",
            actor=submission.teller_id,
            state=_submitted_state(fields),
            branch_id=submission.branch_id,
        )
        return cls(
            submission=submission,
            state=State(fields[b"st"].decode()),
            version=int(fields[b"v"]),
            submitted_ms=submitted_ms,
            holder=fields.get(b"h", b"").decode(),
            token=int(fields.get(b"tok", b"0")),
            lease_until_ms=int(fields.get(b"lu", b"0")),
            supplements=tuple(Image.unpack(raw) for raw in msgpack.unpackb(supplements))
            if supplements
            else (),
            history=(submitted, *(HistoryEntry.unpack(raw) for raw in history)),
        )


def _submitted_state(fields: dict[bytes, bytes]) -> State:
    """The state a request entered when submitted, as submit.lua emitted it: one that
    still awaits its on-site review, or that was reviewed on site (review.lua names
    the reviewer, rvw), went to PENDING_ONSITE_REVIEW (R2); any other, QUEUED. (One
    withdrawn or handed back before its review left no mark of it: QUEUED.)"""
    if fields[b"st"] == State.PENDING_ONSITE_REVIEW.encode() or b"rvw" in fields:
        return State.PENDING_ONSITE_REVIEW
    return State.QUEUED
