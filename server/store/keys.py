"""Every Redis key name, built in one place. All keys share the prefix's hash tag
(``{authq}`` by default) so the scripts run unchanged on Redis Cluster."""

from __future__ import annotations

from dataclasses import dataclass

from server.domain.priority import PriorityClass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "{authq}"

    def request(self, request_id: str) -> str:
        return f"{self.request_prefix}{request_id}"

    def history(self, request_id: str) -> str:
        return f"{self.history_prefix}{request_id}"

    @property
    def request_prefix(self) -> str:
        return f"{self.prefix}:req:"

    @property
    def history_prefix(self) -> str:
        return f"{self.prefix}:hist:"

    def lane(self, priority: PriorityClass, business_type: str, band: int) -> str:
        """Where a waiting item waits (server/domain/routing.py)."""
        return f"{self.prefix}:lane:{priority.lane}:{business_type}:b{band}"

    @property
    def lanes(self) -> str:
        """The set of lanes that hold anything. The scripts derive this name from a
        lane's own (see lane_index in server/lua/_lib.lua): keep the two in step."""
        return f"{self.prefix}:lanes"

    def waiting_since(self, priority: PriorityClass) -> str:
        """The class's waiting items by when each joined the queue (field enq): where the
        oldest wait is read. A lane is ordered by score, and a supplied, confirmed or
        moved item heads it with a later enq than items behind it. The scripts derive
        this name from a lane's own (since_key in server/lua/_lib.lua)."""
        return f"{self.prefix}:since:{priority.lane}"

    @property
    def waiting_since_built(self) -> str:
        """Set once every item waiting from before the waiting-since sets existed is in
        its set (QueueStore.index_waiting_since)."""
        return f"{self.prefix}:since-built"

    @property
    def audit_staged(self) -> str:
        """Audit records staged by the scripts that did the actions, not chained yet
        (server/store/audit.py, AuditLog.staged_key)."""
        return f"{self.prefix}:audit-staged"

    @property
    def audit_archived(self) -> str:
        """How far the audit trail is moved out of Redis into segment files: {seq, hash}
        of the last record moved (server/store/audit_segments.py)."""
        return f"{self.prefix}:audit-archived"

    @property
    def audit_hours(self) -> str:
        """The first audit seq chained in each hour: {hours since the epoch: seq}
        (audit_append.lua), where a report over a period starts reading."""
        return f"{self.prefix}:audit-hours"

    def account(self, user_id: str) -> str:
        return f"{self.account_prefix}{user_id}"

    @property
    def account_prefix(self) -> str:
        return f"{self.prefix}:acct:"

    @property
    def accounts(self) -> str:
        return f"{self.prefix}:accounts"

    @property
    def account_changes(self) -> str:
        """A pub/sub channel, not a key: the user id of every account change (and of
        an authorizer back from away), for the servers' token caches
        (server/api/token_cache.py) and through them their dispatchers."""
        return f"{self.prefix}:account-changes"

    def account_tokens(self, user_id: str) -> str:
        return f"{self.prefix}:acct-tokens:{user_id}"

    def login_failures(self, user_id: str) -> str:
        """A user id's wrong passwords in a row, and its login lock once there were too
        many (server/lua/login_failed.lua): {n, lk}. Kept for an unknown id too, and
        with a TTL, so that it tells no id from another and does not pile up."""
        return f"{self.prefix}:login-fail:{user_id}"

    def token(self, token_digest: str) -> str:
        return f"{self.prefix}:token:{token_digest}"

    def branch(self, branch_id: str) -> str:
        return f"{self.prefix}:branch:{branch_id}"

    @property
    def branches(self) -> str:
        return f"{self.prefix}:branches"

    def onsite(self, branch_id: str) -> str:
        """A branch's requests awaiting on-site review, by submission time."""
        return f"{self.prefix}:onsite:{branch_id}"

    def emergency(self, emergency_id: str) -> str:
        return f"{self.emergency_prefix}{emergency_id}"

    @property
    def emergency_prefix(self) -> str:
        return f"{self.prefix}:emergency:"

    @property
    def emergency_counter(self) -> str:
        return f"{self.prefix}:emergency-seq"

    @property
    def emergencies(self) -> str:
        """Emergencies in force, by declaration time."""
        return f"{self.prefix}:emergencies"

    def fallback(self, branch_id: str | None) -> str:
        """The emergencies covering a branch; None: the center-wide ones (R8)."""
        return f"{self.prefix}:fallback:{branch_id or '*'}"

    def blob(self, sha256: str) -> str:
        return f"{self.prefix}:blob:{sha256}"

    def archive_marker(self, request_id: str) -> str:
        """A request's archiving state (server/archive/index.py), kept for good."""
        return f"{self.prefix}:arch:{request_id}"

    @property
    def archive_ended(self) -> str:
        """Ended requests not archived yet, by the time they were seen ended."""
        return f"{self.prefix}:arch-ended"

    @property
    def archive_hot(self) -> str:
        """Archived requests whose hot keys are still in Redis, by archiving time."""
        return f"{self.prefix}:arch-hot"

    @property
    def archive_heads(self) -> str:
        """Per archive day: the line count and chain hash of its manifest."""
        return f"{self.prefix}:arch-heads"

    @property
    def away(self) -> str:
        """Authorizers who set themselves away: no new items for them."""
        return f"{self.prefix}:away"

    @property
    def leases(self) -> str:
        return f"{self.prefix}:leases"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def fence(self) -> str:
        return f"{self.prefix}:fence"

    def claim_nonce(self, nonce: str) -> str:
        """Set by the claim that carried this nonce to "<id> <token>" of what it took, for
        a while (server/lua/claim.lua): that claim sent again after a lost reply knows
        itself a repeat and answers what it took instead of taking another item."""
        return f"{self.prefix}:claim-nonce:{nonce}"

    @property
    def waiting_by_branch(self) -> str:
        return f"{self.prefix}:waiting-by-branch"

    @property
    def counts(self) -> str:
        return f"{self.prefix}:counts"

    def move(self, request_id: str) -> str:
        """A pending two-person move of one request (R6), see server/store/moves.py.
        ``move("")`` is the index of pending moves (a sorted set by deadline): request
        ids are never empty, so it cannot collide with a pending move."""
        return f"{self.prefix}:move:{request_id}"

    @property
    def window_counter(self) -> str:
        return f"{self.prefix}:ext-seq"

    def window(self, window_id: str) -> str:
        """An extended-hours window (R9): requested by a branch, decided by a supervisor."""
        return f"{self.prefix}:ext:{window_id}"

    @property
    def windows_pending(self) -> str:
        """Windows awaiting a supervisor's decision, by start time."""
        return f"{self.prefix}:ext-pending"

    def windows_of(self, branch_id: str) -> str:
        """Every window a branch asked for, by end time (approved or not)."""
        return f"{self.prefix}:ext-branch:{branch_id}"

    def fallback_record(self, request_id: str) -> str:
        """A local fallback a teller reported (R8), see server/store/fallbacks.py. Not
        ``fallback:``: that family holds the emergencies covering a branch."""
        return f"{self.prefix}:fallback-record:{request_id}"

    def fallback_index(self, branch_id: str | None) -> str:
        """Reported fallbacks by the time they occurred: one branch's, or (None) all."""
        return f"{self.prefix}:fallback-index:{branch_id or '*'}"
