"""The authorization center: what tellers and authorizers can do, in domain terms.

The gRPC layer (server/api/) translates protobuf to these calls and the domain
errors they raise to status codes; unary calls and session streams share them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from authq.catalog import REVIEW_CHECKS
from redis.exceptions import RedisError

from server.accounts.model import Qualification, Role
from server.blobs import BlobStore
from server.dispatch import WorkDispatcher
from server.domain.money import max_minor_units
from server.domain.reasons import NOTE_MAX_CHARS, check_rejection
from server.domain.records import HistoryEntry, Image, RequestRecord, Submission
from server.domain.states import Outcome, State
from server.errors import (
    AuthorizerAway,
    AuthqError,
    FailedPrecondition,
    IllegalTransition,
    InvalidArgument,
    NotFound,
    OnsiteFallbackRequired,
    PermissionDenied,
)
from server.events import EventHub, Resync
from server.images.access import check_image_access
from server.images.checker import ImageChecker
from server.images.probe import ImageLimits
from server.images.views import Rendition, image_view
from server.intake import Upload, begin_upload
from server.policy.enrollment import check_enrollment
from server.policy.hours import may_submit
from server.policy.loader import DEFAULT_POLICY
from server.policy.model import (
    Mode,
    PolicyError,
    PolicyView,
    UnknownRegionError,
    decide_mode,
    missing_images,
    missing_images_message,
)
from server.policy.reloadable import PolicyHolder
from server.store.audit import (
    MAX_BODY_BYTES,
    OUTCOME_OK,
    OUTCOME_REPEAT,
    AuditEntry,
    AuditLog,
)
from server.store.audit_records import StagedAudit
from server.store.branches import BranchDirectory
from server.store.emergencies import Emergency, EmergencyStore
from server.store.fallbacks import Cause, Fallback, FallbackStore, ReportResult
from server.store.queue_store import Claim, QueueStore

log = logging.getLogger(__name__)

# How long a stop waits for the audit writer to chain what is staged.
AUDIT_DRAIN_S = 5.0
# How far a branch's clock (a fallback's occurred_at_ms) may stray from the center's
# (an emergency's declared and ended times) when a fallback cites an emergency (R8).
EMERGENCY_CLOCK_SKEW_MS = 5 * 60_000


def _entry(
    identity: Identity, action: str, target: str, outcome: str, details: dict[str, str | int]
) -> AuditEntry:
    return AuditEntry(actor=identity.user_id, role=identity.role, origin=identity.origin,
                      action=action, target=target, outcome=outcome[:500],
                      details=dict(details))  # fmt: skip


def _longest(target: str, details: dict[str, str | int]) -> str:
    """The field of an action's record that holds the most: the one to name when
    the record is too large."""
    sizes = {name: len(str(value)) for name, value in details.items()}
    name = max(sizes, key=sizes.__getitem__, default="id")
    return name if sizes.get(name, 0) > len(target) else "id"


def _supplied(
    record: RequestRecord, teller_id: str, images: Sequence[Image]
) -> HistoryEntry | None:
    """The request's newest SUPPLIED entry if it is this teller's supply of these very
    images (the newest supplements, kinds and hashes in order); else None."""
    entry = next((e for e in reversed(record.history) if e.event == "SUPPLIED"), None)
    if entry is None or entry.actor != teller_id or not images:
        return None
    newest = record.supplements[-len(images) :]
    same = [(i.kind, i.sha256) for i in newest] == [(i.kind, i.sha256) for i in images]
    return entry if same else None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, as established by the server (never by a message field)."""

    user_id: str
    branch_id: str = ""
    roles: frozenset[Role] = frozenset()
    qualification: Qualification = field(default_factory=Qualification)
    # Where the call came from (the gRPC peer), for the audit trail.
    origin: str = ""

    @property
    def role(self) -> str:
        return ",".join(sorted(self.roles)) or "-"


# Who the audit trail names for a lease that ran out: nobody acted, the server did.
LEASE_REAPER = Identity(user_id="system", origin="lease-reaper")
# ... and for a claim the dispatcher put back because nobody got it.
DISPATCHER = Identity(user_id="system", origin="dispatcher")


class Center:
    def __init__(
        self,
        store: QueueStore,
        blobs: BlobStore,
        hub: EventHub,
        dispatcher: WorkDispatcher,
        limits: ImageLimits,
        max_images: int,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.hub = hub
        self.dispatcher = dispatcher
        self.limits = limits
        self.max_images = max_images
        # Every action and refusal goes to the hash-chained audit trail (R15).
        self.audit: AuditLog | None = None
        # The full image check and renditions (server/images/checker.py).
        self.images: ImageChecker | None = None
        self.policy = PolicyHolder.from_file(DEFAULT_POLICY)
        # One reload at a time: each records the version it puts in force first.
        self._policy_reload = asyncio.Lock()
        self.emergencies = EmergencyStore(store.client, store.keys)
        # Local fallbacks tellers reported (R8).
        self.fallbacks = FallbackStore(store.client, store.keys, store.config.events_maxlen)
        # Region, enrollment (R10) and extended-hours windows (R9) of each branch.
        self.branches = BranchDirectory(store.client, store.keys)
        # Operating hours are judged at this time (tests set a fixed one).
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    @contextlib.asynccontextmanager
    async def audited(
        self, identity: Identity, action: str, target: str, **details: str | int
    ) -> AsyncIterator[StagedAudit]:
        """Audits the action, or its refusal, before the reply goes out (R15). Hand
        what it yields to the store call that does the action: a transition script
        stages the record in the same step, so that a kill right after the action
        cannot lose it; an action done otherwise has its record staged next."""
        try:
            audit = self.stage(identity, action, target, **details)
        except InvalidArgument as exc:  # too large to audit: refused, and that recorded
            await self.record(identity, action, target[:128], str(exc), {})
            raise
        try:
            yield audit
        except AuthqError as exc:
            await self.record(identity, action, target, str(exc), details)
            raise
        if audit.staged:
            self.staged()
        elif audit.repeat:  # a retry: its action has its record already (R15)
            await self.record(identity, action, target, OUTCOME_REPEAT, details)
        elif audit.body:
            await self._stage(audit.body, action, target)
        else:  # no trail (a no-op)
            await self.record(identity, action, target, OUTCOME_OK, details)

    def stage(
        self, identity: Identity, action: str, target: str, **details: str | int
    ) -> StagedAudit:
        """The action's record, for the script that does it to stage (see audited).
        An action whose record would be too large to keep is refused: none is done
        without its record (R15)."""
        if self.audit is None:  # no audit trail (tests): nothing to stage
            return StagedAudit(b"")
        body = _entry(identity, action, target, OUTCOME_OK, details).pack()
        if len(body) > MAX_BODY_BYTES:
            raise InvalidArgument(
                _longest(target, details),
                f"far too long: the action's audit record would be {len(body)} bytes, "
                f"over the {MAX_BODY_BYTES} a record holds (R15)",
            )
        return StagedAudit(body)

    def staged(self) -> None:
        """Records were staged: the audit writer chains them with its next batch."""
        if self.audit is not None:
            self.audit.kick()

    def lapse_audit(self, request_id: str) -> StagedAudit:
        """The LEASE_EXPIRED record of an item (server/leases.py); the requeue script
        adds whose lease it was (holder and token) and stages it."""
        return self.stage(LEASE_REAPER, "LEASE_EXPIRED", request_id)

    def put_back_audit(
        self, request_id: str, authorizer_id: str, token: int, note: str
    ) -> StagedAudit:
        """The PUT_BACK record of a claim nobody got (server/dispatch.py): the item is
        back in the queue, and the claim counts as nobody's handling or lapse."""
        return self.stage(
            DISPATCHER, "PUT_BACK", request_id, holder=authorizer_id, token=token, note=note
        )

    async def record(
        self, identity: Identity, action: str, target: str, outcome: str,
        details: dict[str, str | int],
    ) -> None:  # fmt: skip
        """Stages the record of an action done or refused without a transition script
        (a refusal, a login, an image view) before the caller replies: one XADD, in
        the order of the staging stream that the scripts stage into, so the trail
        keeps the order things happened in. The action or refusal stands either way:
        a failure is logged."""
        if self.audit is None:
            return
        try:
            body = _entry(identity, action, target, outcome, details).pack()
        except (TypeError, ValueError) as exc:
            log.error("audit record of %s %s lost: %s", action, target, exc)
            return
        await self._stage(body, action, target)

    async def _stage(self, body: bytes, action: str, target: str) -> None:
        if self.audit is None:
            return
        if len(body) > MAX_BODY_BYTES:
            log.error("audit record of %s %s lost: %d bytes, over %d: keep details small",
                      action, target, len(body), MAX_BODY_BYTES)  # fmt: skip
            return
        try:
            await self.audit.stage(body)
        except (RedisError, OSError) as exc:
            log.error("audit record of %s %s lost: %s", action, target, exc)

    async def flush_audit(self) -> None:
        """Waits until the staged records are chained."""
        # Bounded: with Redis out of reach, staged records wait there for the next
        # writer, and the stop goes on.
        if self.audit is not None and not await self.audit.drain(AUDIT_DRAIN_S):
            log.error("audit writer stopped after %.0fs: staged records wait for the next "
                      "server", AUDIT_DRAIN_S)  # fmt: skip

    # -- images --------------------------------------------------------------------

    def begin_upload(self, kind: str, sha256: str, size: int) -> Upload:
        return begin_upload(kind, sha256, size, self.limits)

    async def finish_upload(self, upload: Upload) -> Image:
        image, data = await upload.finish(self.blobs)
        # Recorded only after the bytes are fsynced: a submit that finds the record
        # finds the bytes.
        verdict = await self.store.record_blob(image)
        if not await self.blobs.exists(image.sha256):
            # The blob GC removed identical bytes between our write (skipped: the file
            # was there) and the record; the record is fresh now, so write them again.
            await self.blobs.put(image.sha256, data)
        if self.images is not None:
            # After the ack, never before it.
            self.images.schedule(image.sha256, data, verdict)
        return image

    async def _resolve(
        self, images: Sequence[Image], field: str, already: int = 0
    ) -> tuple[Image, ...]:
        """Fills size and content type from the uploads; refuses unknown hashes. The
        limit counts the ``already`` images the request holds."""
        if already + len(images) > self.max_images:
            raise InvalidArgument(
                field,
                f"{already + len(images)} images exceeds the limit of {self.max_images} "
                "per request",
            )
        hashes = [image.sha256 for image in images]
        if self.images is not None:
            facts = await self.images.facts(hashes)
            metas = [(f.size_bytes, f.content_type, f.fault) if f else None for f in facts]
        else:
            metas = [(*m, "") if m else None for m in await self.store.blob_meta(hashes)]
        resolved = []
        for index, (image, meta) in enumerate(zip(images, metas, strict=True)):
            if meta is None:
                raise FailedPrecondition(
                    f"{field}[{index}]: image {image.sha256} was not uploaded: "
                    "upload it with UploadImage first"
                )
            if meta[2]:
                raise InvalidArgument(
                    f"{field}[{index}]",
                    f"image {image.kind} {image.sha256} failed the full check: {meta[2]}; "
                    "capture it again",
                )
            resolved.append(replace(image, size_bytes=meta[0], content_type=meta[1]))
        return tuple(resolved)

    # -- teller --------------------------------------------------------------------

    async def submit(
        self, submission: Submission, identity: Identity | None = None
    ) -> tuple[RequestRecord, bool]:
        who = identity or Identity(submission.teller_id, submission.branch_id)
        # branch and preparation_s feed the quality reports (server/reports/).
        async with self.audited(who, "SUBMIT", submission.request_id,
                                business_type=submission.business_type,
                                amount_minor=submission.amount_minor,
                                branch=submission.branch_id,
                                preparation_s=submission.preparation_seconds) as audit:  # fmt: skip
            try:
                onsite_review, local_minor = await self.admit(submission)
            except FailedPrecondition:
                # A retry of a request stored before the branch closed (or before the
                # policy changed) gets its original answer: submits are idempotent.
                if not await self.store.exists(submission.request_id):
                    raise
                onsite_review, local_minor = False, 0
            try:
                images = await self._resolve(submission.images, "images")
            except (InvalidArgument, FailedPrecondition):
                # A retry of a stored request is the store's to answer (the stored
                # request, or ALREADY_EXISTS by fingerprint: kinds and hashes only),
                # whatever its images' state now: one that failed the full check after
                # the first submit was stored with it, and a teller told to capture
                # again would submit the same transaction under a new id.
                if not await self.store.exists(submission.request_id):
                    raise
                images = submission.images
            return await self.store.submit(
                replace(submission, images=images), onsite_review, local_minor, audit
            )

    async def reload_policy(self, who: Identity) -> str:
        """Re-reads the policy file and puts it in force if it validates; a bad file
        is refused with its line and reason and the policy in force stays (R2).
        Either way the attempt is audited, and a new policy is recorded before it is
        put in force: if the record cannot be made, the policy in force stays. Returns a
        one-line account."""
        async with self._policy_reload:
            try:
                loaded = await asyncio.to_thread(self.policy.prepare)
            except PolicyError as exc:
                await self.record(who, "POLICY_RELOAD", self.policy.loaded.source, str(exc), {})
                return f"policy refused, version {self.policy.version} stays in force: {exc}"
            entry = _entry(who, "POLICY_RELOAD", loaded.source, "OK",
                           {"version": loaded.version, "sha256": loaded.sha256})  # fmt: skip
            if self.audit is not None:
                try:
                    await self.audit.stage(entry.pack())
                except (RedisError, OSError) as exc:
                    return (
                        f"policy version {loaded.version} not put in force, version "
                        f"{self.policy.version} stays: its audit record failed ({exc})"
                    )
            self.policy.put_in_force(loaded)
            return f"policy version {loaded.version} in force ({loaded.sha256[:12]})"

    def catalog(self) -> PolicyView:
        """The business types and rules in force (default region; regions per branch
        are not wired yet)."""
        return self.policy.loaded.policy.for_region(None)

    async def admit(self, submission: Submission) -> tuple[bool, int]:
        """Whether the center takes this submission now: the branch is enrolled for
        its business type (R10) and within its hours or an approved extended-hours
        window (R9); then the policy of the branch's region decides its route."""
        facts = await self.branches.facts(submission.branch_id)
        refusal = check_enrollment(facts.enrollment, submission.business_type)
        if refusal:
            raise FailedPrecondition(refusal)
        policy = self.policy.loaded.policy
        verdict = may_submit(
            policy.hours.center,
            policy.hours.for_branch(submission.branch_id),
            self.clock(),
            facts.windows,
        )
        if not verdict.open:
            raise FailedPrecondition(
                f"outside operating hours (R9): {verdict.reason}. Authorize on site, or "
                "ask the center for an extended-hours window"
            )
        try:
            view = policy.for_region(facts.policy_region)
        except UnknownRegionError as exc:
            raise FailedPrecondition(
                f"branch {submission.branch_id} is in region {facts.region}, which the "
                "policy in force does not define: ask an administrator to fix the branch "
                "or the policy"
            ) from exc
        return self.route(submission, view)

    def route(self, submission: Submission, view: PolicyView | None = None) -> tuple[bool, int]:
        """Applies the policy (R2, R3): refuses on-site-only business and missing
        images. Returns whether an on-site reviewer must check it first, and the amount
        in local minor units that routes it to qualified authorizers (an amount with
        no indicative rate goes to those without a ceiling)."""
        view = view or self.catalog()
        decision = decide_mode(
            view, submission.business_type, submission.amount_minor, submission.currency
        )
        if decision.mode is Mode.ONSITE_ONLY:
            raise FailedPrecondition(decision.reason)
        missing = missing_images(
            view, submission.business_type, [image.kind for image in submission.images]
        )
        if missing:
            raise InvalidArgument("images", missing_images_message(missing))
        local_minor = view.local_minor(submission.amount_minor, submission.currency)
        if local_minor is None:
            local_minor = max_minor_units(view.thresholds.local_currency)
        return decision.mode is Mode.ONSITE_REVIEW_THEN_CENTRAL, local_minor

    async def fallback(self, exc: OnsiteFallbackRequired) -> Emergency:
        """The emergency behind a fallback answer (R8)."""
        return await self.emergencies.get(exc.emergency_id)

    async def report_fallbacks(
        self, identity: Identity, fallbacks: Sequence[Fallback]
    ) -> list[ReportResult]:
        """Stores the local fallbacks a teller reports (R8), each once: a new one is
        audited as LOCAL_FALLBACK, an on-site outcome that arrives later as
        LOCAL_FALLBACK_OUTCOME, a retried upload not at all. The center's request of
        the same id, if undecided, is withdrawn in the same step (fallback_report.lua).
        Teller and branch are the caller's, and an EMERGENCY fallback cites an emergency
        of that branch: a record naming others, or citing another, refuses the whole
        call before anything is stored (R8, R11, R13)."""
        own = []
        for index, fallback in enumerate(fallbacks):
            where = f"records[{index}]"
            problem: AuthqError | None = None
            if fallback.teller_id not in ("", identity.user_id):
                problem = PermissionDenied(
                    f"{where}.teller_id: {identity.user_id} cannot report the fallbacks of "
                    f"{fallback.teller_id}: everyone acts under their own account (R11)"
                )
            elif not identity.branch_id or fallback.branch_id not in ("", identity.branch_id):
                problem = PermissionDenied(
                    f"{where}.branch_id: {identity.user_id} is not a teller of branch "
                    f"{fallback.branch_id}: a teller reports for its own branch only (R13)"
                )
            elif fallback.onsite_authorizer == identity.user_id:
                problem = InvalidArgument(
                    f"{where}.onsite_authorizer",
                    "the teller who keyed a transaction cannot authorize it on site (R11)",
                )
            if problem is None:
                problem = await self._citation_problem(identity, fallback, where)
            if problem is not None:
                await self.record(identity, "LOCAL_FALLBACK", fallback.request_id,
                                  str(problem), {})  # fmt: skip
                raise problem
            own.append(replace(fallback, teller_id=identity.user_id, branch_id=identity.branch_id))
        results = []
        for fallback in own:
            # The script stages a record per action it takes (fallback_report.lua).
            template = self.stage(identity, "LOCAL_FALLBACK", fallback.request_id,
                                  **fallback.audit_details())  # fmt: skip
            results.append(await self.fallbacks.report(fallback, identity.user_id, template.body))
            if template.body:
                self.staged()
            else:  # no trail (a no-op), or too large to stage (logged)
                await self.record(identity, "LOCAL_FALLBACK", fallback.request_id,
                                  OUTCOME_OK, fallback.audit_details())  # fmt: skip
        return results

    async def _citation_problem(
        self, identity: Identity, fallback: Fallback, where: str
    ) -> InvalidArgument | None:
        """Why an EMERGENCY fallback cannot cite its emergency, or None: it must be one
        declared for the teller's branch (or center-wide) and in force when the fallback
        happened, give or take the branch's clock. An emergency ended since is fine: a
        branch reports once its network is back (R8)."""
        if fallback.cause is not Cause.EMERGENCY:
            return None
        field = f"{where}.emergency_id"
        try:
            emergency = await self.emergencies.get(fallback.emergency_id)
        except NotFound:
            return InvalidArgument(field, f"no emergency {fallback.emergency_id} was declared")
        if emergency.branch_ids and identity.branch_id not in emergency.branch_ids:
            return InvalidArgument(
                field,
                f"emergency {emergency.emergency_id} does not cover branch "
                f"{identity.branch_id}: its submissions still went to the center",
            )
        if fallback.occurred_at_ms < emergency.declared_at_ms - EMERGENCY_CLOCK_SKEW_MS:
            return InvalidArgument(
                field, f"emergency {emergency.emergency_id} was declared after the fallback"
            )
        ended = emergency.ended_at_ms
        if ended and fallback.occurred_at_ms > ended + EMERGENCY_CLOCK_SKEW_MS:
            return InvalidArgument(
                field, f"emergency {emergency.emergency_id} had ended before the fallback"
            )
        return None

    async def get_for_branch(self, identity: Identity, request_id: str) -> RequestRecord:
        record = await self.store.get(request_id)
        if record.submission.branch_id != identity.branch_id:
            raise PermissionDenied(
                f"request {request_id} belongs to another branch: a teller sees only "
                "the requests of its own branch (R13)"
            )
        return record

    async def cancel(self, identity: Identity, request_id: str, note: str) -> HistoryEntry:
        async with self.audited(identity, "CANCEL", request_id) as audit:
            record = await self.get_for_branch(identity, request_id)
            return await self.store.cancel(
                request_id, identity.user_id, note[:NOTE_MAX_CHARS], record.submission.branch_id,
                audit,
            )  # fmt: skip

    async def supply(
        self, identity: Identity, request_id: str, images: Sequence[Image], note: str
    ) -> HistoryEntry:
        async with self.audited(identity, "SUPPLY", request_id, images=len(images)) as audit:
            return await self._supply(identity, request_id, images, note, audit)

    async def _supply(
        self,
        identity: Identity,
        request_id: str,
        images: Sequence[Image],
        note: str,
        audit: StagedAudit,
    ) -> HistoryEntry:
        record = await self.get_for_branch(identity, request_id)
        if record.state is not State.NEEDS_SUPPLEMENT:
            done = _supplied(record, identity.user_id, images)
            if done is not None:
                # A retry after a lost reply: answered as done, recorded as a repeat
                # (R15). supply.lua knows one only by the version read before the first
                # supply, which a retry no longer has.
                audit.repeat = True
                return done
            raise IllegalTransition(
                request_id, record.state.value, "supply images to", "no supplement was asked for"
            )
        if not images:
            raise InvalidArgument("images", "a supplement needs at least one image")
        missing = sorted(set(record.requested_kinds) - {image.kind for image in images})
        if missing:
            raise InvalidArgument(
                "images", f"the authorizer asked for {', '.join(missing)}, which is missing"
            )
        added = await self._resolve(images, "images", already=len(record.images))
        supplements = (*record.supplements, *added)
        return await self.store.supply(
            request_id, record.version, supplements, identity.user_id, note[:NOTE_MAX_CHARS],
            audit,
        )  # fmt: skip

    async def watch(
        self, identity: Identity, request_id: str
    ) -> AsyncGenerator[HistoryEntry, None]:
        """The request's latest change, then every further one until a final state."""
        with self.hub.watch(request_id) as queue:
            record = await self.get_for_branch(identity, request_id)
            latest = record.history[-1]
            yield latest
            seen = latest.version
            if latest.state.is_final:
                return
            while True:
                item = await queue.get()
                if isinstance(item, Resync) or item.version > seen + 1:
                    # Something may be missing: take the history as Redis has it.
                    pending = [
                        entry
                        for entry in (await self.store.get(request_id)).history
                        if entry.version > seen
                    ]
                elif item.version == seen + 1:
                    pending = [item]
                else:
                    continue
                for entry in pending:
                    yield entry
                    seen = entry.version
                    if entry.state.is_final:
                        return

    # -- on-site review (R2) ---------------------------------------------------------

    async def pending_review(self, identity: Identity) -> list[RequestRecord]:
        return await self.store.pending_review(identity.branch_id)

    async def review(
        self,
        identity: Identity,
        request_id: str,
        confirm: bool,
        checks: Sequence[str],
        note: str,
    ) -> HistoryEntry:
        checks = tuple(dict.fromkeys(checks))  # each check counted once
        async with self.audited(identity, "ONSITE_REVIEW", request_id,
                                outcome="CONFIRM" if confirm else "SEND_BACK",
                                checks=",".join(checks)) as audit:  # fmt: skip
            unknown = sorted(set(checks) - set(REVIEW_CHECKS))
            if unknown:
                raise InvalidArgument(
                    "checks", f"unknown {', '.join(unknown)}: one of {', '.join(REVIEW_CHECKS)}"
                )
            if confirm and not checks:
                raise InvalidArgument("checks", "a confirmation says what was checked (R2)")
            if not confirm and not note.strip():
                raise InvalidArgument("note", "sending a request back needs a note for the teller")
            if len(note) > NOTE_MAX_CHARS:
                raise InvalidArgument("note", f"at most {NOTE_MAX_CHARS} characters")
            return await self.store.review(
                request_id, identity.user_id, identity.branch_id, confirm, checks, note, audit
            )

    # -- authorizer ----------------------------------------------------------------

    async def next_item(self, identity: Identity) -> Claim:
        """For a unary Next. An authorizer set away is told so at once: the dispatcher
        would hold the call, without a word, until they are back or its deadline
        passed (a console's session, by contrast, stays open and is offered items
        once they are back)."""
        if await self.store.is_away(identity.user_id):
            raise AuthorizerAway(identity.user_id)
        claim = await self.dispatcher.next_item(
            identity.user_id, identity.qualification, self.claim_audit(identity)
        )
        self.staged()
        return claim

    def claim_audit(self, identity: Identity) -> bytes:
        """The authorizer's CLAIM record without its target: the claim script fills in
        the item it takes, its fencing token and the time, and stages it (R15)."""
        return self.stage(identity, "CLAIM", "").body

    async def decide(
        self,
        identity: Identity,
        request_id: str,
        token: int,
        outcome: Outcome,
        reason_code: str,
        note: str,
        kinds: Sequence[str],
    ) -> HistoryEntry:
        async with self.audited(identity, "DECIDE", request_id, outcome=outcome.value,
                                reason_code=reason_code, token=token) as audit:  # fmt: skip
            return await self._decide(
                identity.user_id, request_id, token, outcome, reason_code, note, kinds, audit
            )

    async def _decide(
        self,
        authorizer_id: str,
        request_id: str,
        token: int,
        outcome: Outcome,
        reason_code: str,
        note: str,
        kinds: Sequence[str],
        audit: StagedAudit | None = None,
    ) -> HistoryEntry:
        if len(note) > NOTE_MAX_CHARS:
            raise InvalidArgument("note", f"at most {NOTE_MAX_CHARS} characters")
        if outcome is Outcome.REJECT:
            problem = check_rejection(reason_code, note)
            if problem:
                raise InvalidArgument("reason_code", problem)
        elif reason_code:
            raise InvalidArgument("reason_code", "only a rejection carries a reason_code")
        if outcome is Outcome.ASK_SUPPLEMENT:
            # Each kind is asked for once, however often the caller listed it: the
            # request's history (and every reader of it) keeps the list.
            kinds = tuple(dict.fromkeys(kinds))
            if not kinds:
                raise InvalidArgument(
                    "requested_kinds", "asking for images needs at least one image kind"
                )
        elif kinds:
            # Kept, they would show in the history as if images were asked for.
            raise InvalidArgument(
                "requested_kinds", "only a request for images (ASK_SUPPLEMENT) names image kinds"
            )
        return await self.store.decide(
            request_id, token, authorizer_id, outcome, reason_code, note, kinds, audit
        )

    async def release(
        self, identity: Identity, request_id: str, token: int, note: str
    ) -> HistoryEntry:
        async with self.audited(identity, "RELEASE", request_id, token=token) as audit:
            return await self.store.release(
                request_id, token, identity.user_id, note[:NOTE_MAX_CHARS], audit
            )

    async def set_away(self, identity: Identity, away: bool) -> None:
        async with self.audited(identity, "AWAY" if away else "BACK", identity.user_id) as audit:
            await self.store.set_away(identity.user_id, away, audit)
        if not away:
            self.dispatcher.wake()

    async def renew(self, authorizer_id: str, request_id: str, token: int) -> int:
        return await self.store.renew(request_id, token, authorizer_id)

    async def view_image(
        self, identity: Identity, request_id: str, sha256: str, rendition: Rendition
    ) -> bytes:
        """One image of a request for the holder, a supervisor or the branch; preview
        and thumbnail come watermarked with the viewer and the time (R14)."""
        # Every look at a customer's images is recorded, refusals too (R14, R15).
        async with self.audited(identity, "IMAGE_VIEW", request_id, sha256=sha256,
                                rendition=rendition.value):  # fmt: skip
            record = await self.store.get(request_id)
            check_image_access(identity.user_id, identity.roles, identity.branch_id, record,
                               original=rendition is Rendition.ORIGINAL)  # fmt: skip
            if sha256 not in {image.sha256 for image in record.images}:
                raise NotFound(f"request {request_id} has no image with sha256 {sha256}")
            return await image_view(self.blobs, self.images, sha256, rendition, identity.user_id)
