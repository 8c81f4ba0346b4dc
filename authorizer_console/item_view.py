"""What the authorizer sees of an offered item: plain text built from the offer, so
the Tk layer only lays it out and the tests read the same lines the screen shows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from authq.render import clock, format_money, kind_name, mask_account
from authq.v1 import authorizer_pb2 as apb
from authq.v1 import common_pb2 as cpb

from authorizer_console.catalog import KIND_LABELS, business_name

DIRECT = "DIRECT_CENTRAL"
REVIEWED = "ONSITE_REVIEW_THEN_CENTRAL"


def duration(ms: int) -> str:
    """12 s, 3 min 05 s, 2 h 07 min."""
    seconds = max(0, ms) // 1000
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True, slots=True)
class SupplementRound:
    asked_at_ms: int
    asked_by: str
    kinds: tuple[str, ...]
    note: str
    supplied_at_ms: int = 0
    supplied_note: str = ""

    def describe(self) -> str:
        wanted = ", ".join(KIND_LABELS.get(k, k) for k in self.kinds) or "-"
        line = f"{clock(self.asked_at_ms)[:8]} {self.asked_by} asked for {wanted}"
        if self.note:
            line += f": {self.note}"
        if self.supplied_at_ms:
            line += f"; supplied {clock(self.supplied_at_ms)[:8]}"
            if self.supplied_note:
                line += f" ({self.supplied_note})"
        else:
            line += "; not supplied yet"
        return line


@dataclass(frozen=True, slots=True)
class ImageSlot:
    index: int
    kind: str
    sha256: str
    size_bytes: int

    @property
    def label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind)


@dataclass(frozen=True, slots=True)
class ItemView:
    request_id: str
    fencing_token: int
    lease_expires_ms: int
    business_code: str
    business_zh: str
    business_en: str
    amount: str
    account_masked: str
    customer: str
    branch_id: str
    teller_id: str
    mode: str
    importance: int
    urgent: bool
    submitted_ms: int
    memo: str
    fields: tuple[tuple[str, str], ...]
    onsite_notes: tuple[str, ...]
    rounds: tuple[SupplementRound, ...]
    images: tuple[ImageSlot, ...]

    @classmethod
    def from_offer(cls, offer: apb.Offer) -> ItemView:
        view = offer.request
        tx = view.transaction
        names = business_name(tx.business_type)
        onsite = tuple(
            f"{entry.actor}: {entry.note or 'confirmed'}"
            for entry in view.history
            if entry.event == "ONSITE_CONFIRMED"
        )
        return cls(
            request_id=view.request_id,
            fencing_token=offer.lease.fencing_token,
            lease_expires_ms=offer.lease.expires_at_ms,
            business_code=tx.business_type,
            business_zh=names.zh,
            business_en=names.en,
            amount=format_money(tx.amount) if tx.HasField("amount") else "-",
            account_masked=mask_account(tx.account),
            customer=tx.customer_name,
            branch_id=view.branch_id,
            teller_id=view.teller_id,
            mode=REVIEWED if onsite else DIRECT,
            importance=view.importance,
            urgent=view.urgency == cpb.URGENCY_URGENT,
            submitted_ms=view.submitted_at_ms,
            memo=tx.memo,
            fields=tuple(sorted(tx.fields.items())),
            onsite_notes=onsite,
            rounds=supplement_rounds(view.history),
            images=image_slots(view),
        )

    def waited(self, now_ms: int) -> str:
        return duration(now_ms - self.submitted_ms)

    def lease_left(self, now_ms: int) -> str:
        return duration(self.lease_expires_ms - now_ms)

    @property
    def title(self) -> str:
        name = " / ".join(n for n in (self.business_zh, self.business_en) if n)
        return name or self.business_code

    def detail_lines(self, now_ms: int) -> list[tuple[str, str]]:
        """(label, value) rows of the transaction panel, in reading order."""
        rows = [
            ("Business", f"{self.title}  [{self.business_code}]"),
            ("Amount", self.amount),
            ("Account", self.account_masked),
            ("Customer", self.customer),
            ("Branch", self.branch_id),
            ("Teller", self.teller_id),
            ("Mode", self.mode),
            (
                "Priority",
                f"importance {self.importance}" + ("  URGENT" if self.urgent else ""),
            ),
            ("Waited", f"{self.waited(now_ms)} (submitted {clock(self.submitted_ms)[:8]})"),
            ("Request", self.request_id),
        ]
        if self.memo:
            rows.append(("Memo", self.memo))
        rows.extend((key, value) for key, value in self.fields)
        rows.extend(("On-site review", note) for note in self.onsite_notes)
        rows.extend((f"Round {n}", r.describe()) for n, r in enumerate(self.rounds, start=1))
        return rows


def supplement_rounds(history: Iterable[cpb.RequestUpdate]) -> tuple[SupplementRound, ...]:
    """Each SUPPLEMENT_REQUESTED with the SUPPLIED that answered it, if any."""
    rounds: list[SupplementRound] = []
    for entry in history:
        if entry.event == "SUPPLEMENT_REQUESTED":
            rounds.append(
                SupplementRound(
                    asked_at_ms=entry.at_ms,
                    asked_by=entry.actor,
                    kinds=tuple(kind_name(k) for k in entry.requested_kinds),
                    note=entry.note,
                )
            )
        elif entry.event == "SUPPLIED" and rounds and not rounds[-1].supplied_at_ms:
            last = rounds[-1]
            rounds[-1] = SupplementRound(
                last.asked_at_ms, last.asked_by, last.kinds, last.note, entry.at_ms, entry.note
            )
    return tuple(rounds)


def image_slots(view: cpb.RequestView) -> tuple[ImageSlot, ...]:
    """The images as the request holds them: the submission's, then the supplied ones."""
    return tuple(
        ImageSlot(index, kind_name(ref.kind), ref.sha256, ref.size_bytes)
        for index, ref in enumerate(view.images)
    )
