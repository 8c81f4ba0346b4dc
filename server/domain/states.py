"""Request states and the transitions between them (R4, R5).

    QUEUED ──claim──▶ CLAIMED ──approve──▶ APPROVED
      ▲  │              │ │ └──reject───▶ REJECTED
      │  │              │ └──ask────────▶ NEEDS_SUPPLEMENT ──supply──▶ QUEUED
      │  │              │                   (sent back by the image check: ──cancel──▶
      │  │              │                    CANCELLED too, nobody having opened it, R4)
      │  │              └──release / lease expiry──▶ QUEUED (original place)
      │  └──cancel (only if never claimed, R4)──▶ CANCELLED
      │
    PENDING_ONSITE_REVIEW ──confirm (on-site reviewer, R2)──▶ QUEUED
                          ──send back──▶ SENT_BACK;  ──cancel──▶ CANCELLED

    Any state not final ──the branch reports it authorized on site (R8)──▶ SENT_BACK;
    QUEUED or PENDING_ONSITE_REVIEW ──a supervisor hands it back (R8)──▶ SENT_BACK

Each arrow is one Lua script in server/lua/; this module names the states."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    PENDING_ONSITE_REVIEW = "PENDING_ONSITE_REVIEW"
    SENT_BACK = "SENT_BACK"
    QUEUED = "QUEUED"
    CLAIMED = "CLAIMED"
    NEEDS_SUPPLEMENT = "NEEDS_SUPPLEMENT"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({State.APPROVED, State.REJECTED, State.CANCELLED, State.SENT_BACK})


class Outcome(StrEnum):
    """An authorizer's decision and the state and event it leads to."""

    APPROVE = "APPROVE"
    REJECT = "REJECT"
    ASK_SUPPLEMENT = "ASK_SUPPLEMENT"

    @property
    def state(self) -> State:
        return {
            Outcome.APPROVE: State.APPROVED,
            Outcome.REJECT: State.REJECTED,
            Outcome.ASK_SUPPLEMENT: State.NEEDS_SUPPLEMENT,
        }[self]

    @property
    def event(self) -> str:
        return {
            Outcome.APPROVE: "APPROVED",
            Outcome.REJECT: "REJECTED",
            Outcome.ASK_SUPPLEMENT: "SUPPLEMENT_REQUESTED",
        }[self]
