"""Turns the audit trail into the facts a quality report counts.

Only records that succeeded (outcome ``OK``) count. The trail is read from where the
period needs it (server/reports/sources.py): a decision in the period needs the SUBMIT
that tells its branch and teller, which may be older. The facts keep their own times,
so the period is applied afterwards (server/reports/figures.py).

What each fact is made of:
- SUBMIT (details ``branch``, ``preparation_s``): the request's branch and teller, and
  the teller's preparation time when the workstation reported one (0 = not reported).
  A retried submit of the same request id is recorded again; only the first counts.
- ONSITE_REVIEW (details ``outcome`` CONFIRM or SEND_BACK): a review; a confirmation
  puts the request in the queue.
- CLAIM, DECIDE, RELEASE (details ``token``): a claim and the decision or hand-back
  with the same fencing token give the authorizer's handling time. A claim whose lease
  ran out ends with LEASE_EXPIRED (details ``holder``, ``token``) and counts for no
  handling time: nobody finished it. A claim the server put back because its offer
  never reached the authorizer ends with PUT_BACK (details ``holder``, ``token``):
  neither handling time nor a lapse. So does a claim the image check sent back to the
  teller before offering it (IMAGE_CHECK_SEND_BACK, by system, naming no token: it
  ends the request's latest claim). A retried decision (same token) is recorded
  again; only the first counts.
- Queue wait: from the moment the request (re)entered the queue (SUBMIT, an on-site
  confirmation, SUPPLY, RELEASE, LEASE_EXPIRED, PUT_BACK) to the next CLAIM. The wait
  of a claim whose offer never reached its authorizer is the request's, not theirs.
  A claim of a request whose SUBMIT was not read (the read started after it) has a
  wait that only a read from further back can tell: it is kept as an UnplacedClaim."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from server.store.audit import OUTCOME_OK, AuditEntry


@dataclass(frozen=True, slots=True)
class RequestInfo:
    request_id: str
    branch: str
    teller: str
    submitted_ms: int
    # Seconds the teller reported, None when the workstation did not measure it.
    preparation_s: int | None
    # The on-site reviewer who confirmed it (R2), "" when none did.
    reviewer: str = ""


@dataclass(frozen=True, slots=True)
class Review:
    request_id: str
    reviewer: str
    at_ms: int
    confirmed: bool


@dataclass(frozen=True, slots=True)
class Decision:
    request_id: str
    authorizer: str
    at_ms: int
    # APPROVE, REJECT or ASK_SUPPLEMENT (server/domain/states.py Outcome).
    outcome: str
    reason_code: str


@dataclass(frozen=True, slots=True)
class Handling:
    """An authorizer's time on an item: its claim to the decision or hand-back."""

    request_id: str
    authorizer: str
    claimed_ms: int
    ended_ms: int

    @property
    def ms(self) -> int:
        return max(0, self.ended_ms - self.claimed_ms)


@dataclass(frozen=True, slots=True)
class Wait:
    """Time in the queue: from entering it to the claim."""

    request_id: str
    authorizer: str
    queued_ms: int
    claimed_ms: int
    # False when the claim's offer never reached the authorizer (put back, or sent back
    # by the image check): the request waited, but the authorizer never had the item.
    reached: bool = True

    @property
    def ms(self) -> int:
        return max(0, self.claimed_ms - self.queued_ms)


@dataclass(frozen=True, slots=True)
class UnplacedClaim:
    """A claim of a request whose SUBMIT the read did not reach: where its wait began
    (the SUBMIT, or a later on-site confirmation or SUPPLY) is further back."""

    request_id: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Lapse:
    """A claim whose lease ran out undecided: the item went back to the queue."""

    request_id: str
    authorizer: str
    at_ms: int


@dataclass(slots=True)
class History:
    requests: dict[str, RequestInfo] = field(default_factory=dict)
    reviews: list[Review] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    handlings: list[Handling] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)
    lapses: list[Lapse] = field(default_factory=list)
    unplaced_claims: list[UnplacedClaim] = field(default_factory=list)
    # Regions of the branches created through authq-admin (BRANCH_CREATE records).
    branch_regions: dict[str, str] = field(default_factory=dict)
    # The seq these facts were read from (server/reports/sources.py): 1, the whole trail.
    from_seq: int = 1


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


class HistoryCollector:
    """Takes audit entries one at a time, in the trail's order (a long trail need not
    be held in memory)."""

    def __init__(self) -> None:
        self.history = History()
        # request id -> when it last entered the queue and has not been claimed since.
        self.queued_since: dict[str, int] = {}
        # (request id, token) -> (authorizer, claimed at, index of its wait in
        # history.waits or None)
        self.open_claims: dict[tuple[str, int], tuple[str, int, int | None]] = {}
        self.ended: set[tuple[str, int]] = set()
        # request id -> the token of its latest claim (the image check's send-back
        # names none).
        self.latest_token: dict[str, int] = {}
        self._handlers: dict[str, Callable[[AuditEntry], None]] = {
            "BRANCH_CREATE": self._on_branch_create,
            "SUBMIT": self._on_submit,
            "ONSITE_REVIEW": self._on_onsite_review,
            "CANCEL": self._on_cancel,
            "SUPPLY": self._on_supply,
            "CLAIM": self._on_claim,
            "DECIDE": self._on_decide,
            "RELEASE": self._on_release,
            "LEASE_EXPIRED": self._on_lease_expired,
            "PUT_BACK": self._on_put_back,
            "IMAGE_CHECK_SEND_BACK": self._on_image_check_send_back,
        }

    def add(self, entry: AuditEntry) -> None:
        if entry.outcome != OUTCOME_OK:
            return
        handler = self._handlers.get(entry.action)
        if handler is not None:
            handler(entry)

    def _on_branch_create(self, entry: AuditEntry) -> None:
        region = entry.details.get("region")
        if isinstance(region, str) and region:
            self.history.branch_regions[entry.target] = region

    def _on_submit(self, entry: AuditEntry) -> None:
        rid = entry.target
        if rid in self.history.requests:
            return
        branch = entry.details.get("branch")
        preparation = _int(entry.details.get("preparation_s"))
        self.history.requests[rid] = RequestInfo(
            request_id=rid,
            branch=branch if isinstance(branch, str) and branch else "?",
            teller=entry.actor,
            submitted_ms=entry.at_ms,
            preparation_s=preparation if preparation else None,
        )
        self.queued_since[rid] = entry.at_ms

    def _on_onsite_review(self, entry: AuditEntry) -> None:
        rid = entry.target
        confirmed = entry.details.get("outcome") == "CONFIRM"
        self.history.reviews.append(Review(rid, entry.actor, entry.at_ms, confirmed))
        info = self.history.requests.get(rid)
        if confirmed:
            if info is not None:
                self.history.requests[rid] = RequestInfo(
                    info.request_id,
                    info.branch,
                    info.teller,
                    info.submitted_ms,
                    info.preparation_s,
                    reviewer=entry.actor,
                )
            self.queued_since[rid] = entry.at_ms
        else:
            self.queued_since.pop(rid, None)

    def _on_cancel(self, entry: AuditEntry) -> None:
        self.queued_since.pop(entry.target, None)

    def _on_supply(self, entry: AuditEntry) -> None:
        self.queued_since[entry.target] = entry.at_ms

    def _on_claim(self, entry: AuditEntry) -> None:
        rid = entry.target
        token = _int(entry.details.get("token"))
        queued = self.queued_since.pop(rid, None)
        wait_index: int | None = None
        if queued is not None:
            wait_index = len(self.history.waits)
            self.history.waits.append(Wait(rid, entry.actor, queued, entry.at_ms))
        elif rid not in self.history.requests:
            # Not "no wait": its start is before the read (server/reports/sources.py).
            self.history.unplaced_claims.append(UnplacedClaim(rid, entry.at_ms))
        if token is not None:
            self.open_claims[(rid, token)] = (entry.actor, entry.at_ms, wait_index)
            self.latest_token[rid] = token

    def _end_claim(self, entry: AuditEntry, handled: bool = True, reached: bool = True) -> bool:
        """Closes the claim the record's token names."""
        token = _int(entry.details.get("token"))
        return self._end(entry.target, token, entry.at_ms, handled, reached)

    def _end(
        self, request_id: str, token: int | None, at_ms: int, handled: bool, reached: bool
    ) -> bool:
        """Closes a claim, counting its handling time unless it was not handled (a
        lapse, or an offer that never reached the authorizer), and leaving its wait to
        no authorizer when not ``reached``; False for a repeat of an end already
        counted."""
        if token is None:
            return True
        key = (request_id, token)
        if key in self.ended:
            return False
        self.ended.add(key)
        claim = self.open_claims.pop(key, None)
        if claim is None:
            return True
        authorizer, claimed_ms, wait_index = claim
        if handled:
            self.history.handlings.append(Handling(request_id, authorizer, claimed_ms, at_ms))
        if not reached and wait_index is not None:
            waits = self.history.waits
            waits[wait_index] = replace(waits[wait_index], reached=False)
        return True

    def _on_decide(self, entry: AuditEntry) -> None:
        if not self._end_claim(entry):
            return
        outcome = str(entry.details.get("outcome") or "")
        reason = str(entry.details.get("reason_code") or "")
        self.history.decisions.append(
            Decision(entry.target, entry.actor, entry.at_ms, outcome, reason)
        )

    def _on_release(self, entry: AuditEntry) -> None:
        if self._end_claim(entry):
            self.queued_since[entry.target] = entry.at_ms

    def _on_lease_expired(self, entry: AuditEntry) -> None:
        if not self._end_claim(entry, handled=False):
            return
        holder = entry.details.get("holder")
        if isinstance(holder, str) and holder:
            self.history.lapses.append(Lapse(entry.target, holder, entry.at_ms))
        self.queued_since[entry.target] = entry.at_ms

    def _on_put_back(self, entry: AuditEntry) -> None:
        if self._end_claim(entry, handled=False, reached=False):
            self.queued_since[entry.target] = entry.at_ms

    def _on_image_check_send_back(self, entry: AuditEntry) -> None:
        # The request goes back to its teller: the queue takes it again at SUPPLY.
        token = self.latest_token.get(entry.target)
        self._end(entry.target, token, entry.at_ms, handled=False, reached=False)


def collect(entries: Iterable[AuditEntry]) -> History:
    """The facts of a stream of audit entries, taken in the trail's order."""
    collector = HistoryCollector()
    for entry in entries:
        collector.add(entry)
    return collector.history
