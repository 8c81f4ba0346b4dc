"""authq-teller's local fallback (R8): what the teller is told when the center cannot
be reached or answers with an emergency fallback, the journal entry it leaves
(teller_client/journal.py), and the upload of pending entries once the center is
back: at the start of every command that reaches it, or ``fallback sync``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import grpc
from authq.login import shared_default
from authq.reconnect import STORE_REASONS, is_at_capacity, store_refuses_writes
from authq.refusals import reason_of
from authq.render import format_money
from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb
from google.protobuf.json_format import MessageToDict, ParseDict

from teller_client.client import TellerClient
from teller_client.journal import (
    DAY_MS,
    DECIDED,
    DEFAULT_KEEP_DAYS,
    OUTCOMES,
    FallbackEvent,
    Journal,
    JournalEntry,
    OnsiteDecision,
    Reconciliation,
    default_path,
    now_ms,
)

# The exit code of a submit that fell back because the center could not be reached
# (4 is the emergency answer).
EXIT_UNREACHABLE = 5
# The exit code of a `fallback sync` after which the center holds a record otherwise
# (CONFLICT) or had decided its request itself too (authorized twice): people must
# reconcile the two records, and a script running the sync must see it. A record the
# center refused is 1, as any failure, and wins when both happen.
EXIT_NEEDS_ATTENTION = 6
SYNC_EXITS_TEXT = (
    "Exit codes: 0: every record uploaded and held by the center as sent; 1: the center "
    "refused a record (or the upload failed); "
    f"{EXIT_NEEDS_ATTENTION}: none refused, but the center holds one otherwise (CONFLICT) or "
    "had decided it too (authorized twice). Each refused or held otherwise stays in the "
    "journal until reconciled: `fallback list` says how."
)
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
UNREACHABLE_TEXT = (
    "the authorization center cannot be reached: authorize on site under the branch's "
    "fallback procedure (R8); this is recorded and will be reported when the center is back"
)
# A submit the center still refused at its admission ceiling after the client's tries
# (teller_client.client.TellerClient.submit): nothing reached it.
AT_CAPACITY_TEXT = (
    "the authorization center is at capacity and did not take this request, also when "
    "tried again: authorize on site under the branch's fallback procedure (R8); this is "
    "recorded and will be reported when the center has room"
)
# A submit the center could not store: its queue store refuses writes (full, its disk
# failing, a read-only replica: the reasons of authq.reconnect.STORE_REASONS). For the
# branch the center is down until its operators act.
STORE_REFUSES_TEXT = (
    "the authorization center cannot store requests now (its queue store refuses "
    "writes) and took nothing: authorize on site under the branch's fallback procedure "
    "(R8); this is recorded and will be reported when the center is back"
)
# How each of those texts ends: left out when the journal could not be written.
RECORDED_PROMISE = "; this is recorded"
# Records per ReportFallbacks call (the server takes at most 100).
BATCH = 50


def add_fallback_commands(
    parser: argparse.ArgumentParser, commands: argparse._SubParsersAction[argparse.ArgumentParser]
) -> None:
    add_journal_arguments(parser)
    fallback = commands.add_parser(
        "fallback",
        help="local fallbacks (R8): list, record the on-site decision, upload, reconcile",
    )
    actions = fallback.add_subparsers(dest="fallback_command", required=True)
    listing = actions.add_parser("list", help="journaled fallbacks: pending or uploaded")
    listing.add_argument("--pending", action="store_true", help="only those not uploaded yet")
    record = actions.add_parser(
        "record", help="who authorized a fallback on site, and the outcome (once)"
    )
    record.add_argument("request_id", help="as `fallback list` shows it")
    record.add_argument(
        "--onsite-authorizer", required=True, metavar="ID", help="who authorized it on site"
    )
    record.add_argument("--outcome", required=True, choices=OUTCOMES, help="what was decided")
    record.add_argument("--note", default="", help="anything the center should know of it")
    actions.add_parser(
        "sync", help="upload the pending fallbacks to the center now", description=SYNC_EXITS_TEXT
    )
    reconcile = actions.add_parser(
        "reconcile",
        help="record that a fallback the center refused, holds otherwise (CONFLICT) or "
        "decided too was squared with the center's record (once); it then leaves the "
        "journal like a settled one",
    )
    reconcile.add_argument("request_id", help="as `fallback list` shows it")
    reconcile.add_argument("--by", required=True, metavar="ID", help="who reconciled it")
    reconcile.add_argument("--note", required=True, help="what was done to reconcile it")


def add_journal_arguments(
    target: argparse._ActionsContainer, *, after_command: bool = False
) -> None:
    """The journal's flags, which every command takes (authq.login.shared_default)."""
    default = shared_default(after_command)
    target.add_argument(
        "--journal",
        type=Path,
        default=default(os.environ.get("AUTHQ_JOURNAL")),
        help="the local fallback journal (env AUTHQ_JOURNAL; default "
        "STATE_DIR/fallback-journal.jsonl)",
    )
    target.add_argument(
        "--journal-keep-days",
        type=_days,
        default=default(os.environ.get("AUTHQ_JOURNAL_KEEP_DAYS", DEFAULT_KEEP_DAYS)),
        metavar="DAYS",
        help="how long a fallback the center holds in full stays in the journal before "
        "its customer data leaves the workstation (R14; env AUTHQ_JOURNAL_KEEP_DAYS; "
        f"default {DEFAULT_KEEP_DAYS}; 0: as soon as it is settled)",
    )


def _days(text: str | int) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if days < 0:
        raise argparse.ArgumentTypeError("days cannot be negative")
    return days


def journal_of(args: argparse.Namespace) -> Journal:
    path: Path | None = args.journal
    return Journal(Path(path).expanduser() if path else default_path(args.state_dir))


def unreachable(exc: grpc.aio.AioRpcError) -> bool:
    return exc.code() in UNREACHABLE


def falls_back(exc: grpc.aio.AioRpcError) -> bool:
    """A submit that failed so sends the teller to on-site authorization (R8): the
    center cannot be reached, is at capacity still after the tries submit() made, or
    cannot store anything."""
    return unreachable(exc) or is_at_capacity(exc) or store_refuses_writes(exc)


def _fallback_text(exc: grpc.aio.AioRpcError) -> str:
    if is_at_capacity(exc):
        return AT_CAPACITY_TEXT
    if store_refuses_writes(exc):
        return STORE_REFUSES_TEXT
    return UNREACHABLE_TEXT


def _say(text: str, as_json: bool) -> None:
    # In JSON mode stdout carries only JSON: words for the teller go to stderr.
    print(text, file=sys.stderr if as_json else sys.stdout, flush=True)


def _event(
    request: tpb.SubmitRequest, teller_id: str, branch_id: str, cause: str, **why: str
) -> FallbackEvent:
    return FallbackEvent(
        request_id=request.request_id,
        teller_id=teller_id,
        branch_id=branch_id,
        occurred_at_ms=now_ms(),
        cause=cause,
        transaction=MessageToDict(request.transaction),
        urgent=request.urgency == cpb.URGENCY_URGENT,
        **why,
    )


def _record_hint(request_id: str) -> str:
    return (
        f"once decided on site: authq-teller fallback record {request_id} "
        "--onsite-authorizer ID --outcome APPROVED|REJECTED [--note TEXT]"
    )


def _not_recorded(journal: Journal, request_id: str, exc: OSError) -> str:
    """What the teller is told in place of the record hint when the journal could not
    be written: nothing will report this fallback, so it is kept on paper."""
    return (
        f"NOT recorded in {journal.path} ({_reason(exc)}): write {request_id} down with "
        "the transaction and who authorizes it on site; this workstation will not report it"
    )


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _journaled(journal: Journal, event: FallbackEvent) -> JournalEntry | OSError:
    """Journals the fallback; the error instead when the journal cannot be written. The
    teller must still be told to authorize on site (R8), so it never stops the
    command."""
    try:
        return journal.record_fallback(event)
    except OSError as exc:
        return exc


def center_unreachable(
    args: argparse.Namespace, request: tpb.SubmitRequest, exc: grpc.aio.AioRpcError
) -> int:
    """Journals the fallback and tells the teller to authorize on site. ``request``
    passed check_request before anything was sent (cli.run): what the center would
    refuse is never journaled, since the center would refuse its record at the upload
    and never hold that fallback."""
    journal = journal_of(args)
    event = _event(request, args.user, "", "CENTER_UNREACHABLE",
                   status_code=exc.code().name, status_message=(exc.details() or "")[:500],
                   status_reason=reason_of(exc))  # fmt: skip
    entry = _journaled(journal, event)
    if args.json:
        # A retried submit's fallback is the one journaled first.
        held = entry.event if isinstance(entry, JournalEntry) else event
        print(json.dumps({"unreachable": True, "journal": str(journal.path),
                          "recorded": isinstance(entry, JournalEntry),
                          "fallback": asdict(held)}, ensure_ascii=False))  # fmt: skip
    text = _fallback_text(exc)
    if isinstance(entry, JournalEntry):
        record = [
            f"  recorded as {request.request_id} in {journal.path}",
            "  " + _record_hint(request.request_id),
        ]
    else:
        # The texts end promising a record and a report: neither will happen.
        text = text.partition(RECORDED_PROMISE)[0]
        record = ["  " + _not_recorded(journal, request.request_id, entry)]
    lines = [text + ".", f"  ({exc.code().name}: {exc.details()})", *record]
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        lines.append(
            "  the center may have received it before the line failed: when it is back, "
            f"`authq-teller show {request.request_id}` tells; it must not be authorized twice"
        )
    _say("\n".join(lines), args.json)
    return EXIT_UNREACHABLE


def record_emergency(
    args: argparse.Namespace,
    client: TellerClient,
    request: tpb.SubmitRequest,
    fallback: tpb.OnsiteFallback,
) -> None:
    """Journals an emergency answer (the center took nothing) and says so."""
    branch = client.login_reply.branch_id if client.login_reply is not None else ""
    journal = journal_of(args)
    entry = _journaled(
        journal,
        _event(request, args.user, branch, "EMERGENCY", emergency_id=fallback.emergency_id),
    )
    if isinstance(entry, OSError):
        _say(_not_recorded(journal, request.request_id, entry), args.json)
        return
    _say(
        f"recorded as {request.request_id} in {journal.path}; it will be reported to the "
        f"center\n{_record_hint(request.request_id)}",
        args.json,
    )


# -- upload ------------------------------------------------------------------------


def to_pb(entry: JournalEntry) -> tpb.FallbackRecord:
    event = entry.event
    record = tpb.FallbackRecord(
        request_id=event.request_id,
        urgency=cpb.URGENCY_URGENT if event.urgent else cpb.URGENCY_NORMAL,
        teller_id=event.teller_id,
        branch_id=event.branch_id,
        occurred_at_ms=event.occurred_at_ms,
        cause=tpb.FallbackCause.Value("FALLBACK_CAUSE_" + event.cause),
        status_code=event.status_code,
        status_message=event.status_message,
        emergency_id=event.emergency_id,
    )
    ParseDict(event.transaction, record.transaction)
    if entry.onsite is not None:
        record.onsite_outcome = tpb.OnsiteOutcome.Value("ONSITE_OUTCOME_" + entry.onsite.outcome)
        record.onsite_authorizer = entry.onsite.authorizer
        record.onsite_note = entry.onsite.note
        record.onsite_at_ms = entry.onsite.at_ms
    return record


@dataclass
class SyncReport:
    uploaded: int = 0
    refused: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Uploaded, and held by the center otherwise (CONFLICT) or decided there too: to
    # reconcile (request ids).
    attention: list[str] = field(default_factory=list)

    @property
    def needs_attention(self) -> int:
        """Records someone must act on: refused, held otherwise or decided twice."""
        return len(self.refused) + len(self.attention)

    @property
    def exit_code(self) -> int:
        if self.refused:
            return 1
        return EXIT_NEEDS_ATTENTION if self.attention else 0

    def summary(self) -> str:
        text = (
            f"{self.uploaded} uploaded, {len(self.refused)} refused by the center: "
            f"{self.needs_attention} need(s) attention"
        )
        if self.needs_attention:
            text += " (refused, held otherwise or decided twice): `authq-teller fallback list`"
        return text


async def _send(
    client: TellerClient, journal: Journal, batch: Sequence[JournalEntry], report: SyncReport
) -> None:
    try:
        reply = await client.report_fallbacks([to_pb(entry) for entry in batch])
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        if len(batch) > 1:
            # One malformed record refuses the call: find it, send the others.
            for entry in batch:
                await _send(client, journal, [entry], report)
            return
        journal.mark_refused(batch[0], exc.details() or "")
        report.refused.append(f"{batch[0].event.request_id}: {exc.details()}")
        return
    for entry, result in zip(batch, reply.results, strict=True):
        status = tpb.FallbackReportStatus.Name(result.status).removeprefix(
            "FALLBACK_REPORT_STATUS_"
        )
        central = (
            cpb.RequestState.Name(result.central_state).removeprefix("REQUEST_STATE_")
            if result.central_state
            else ""
        )
        journal.mark_uploaded(entry, status, result.message, result.also_submitted, central)
        report.uploaded += 1
        rid = entry.event.request_id
        if result.status == tpb.FALLBACK_REPORT_STATUS_CONFLICT:
            report.warnings.append(f"{rid}: the center holds it otherwise: {result.message}")
        if result.status == tpb.FALLBACK_REPORT_STATUS_CONFLICT or central in DECIDED:
            report.attention.append(rid)
        said = central_note(result.also_submitted, central)
        if said:
            report.warnings.append(f"{rid}: {said} (see `authq-teller show {rid}`)")


async def sync(
    client: TellerClient,
    journal: Journal,
    teller_id: str,
    progress: Callable[[int, int], None] | None = None,
) -> SyncReport:
    """Uploads this teller's pending fallbacks and marks them in the journal."""
    pending = journal.pending(teller_id)
    report = SyncReport()
    for start in range(0, len(pending), BATCH):
        await _send(client, journal, pending[start : start + BATCH], report)
        if progress is not None:
            progress(min(start + BATCH, len(pending)), len(pending))
    return report


def _tell(report: SyncReport) -> None:
    for line in (*report.refused, *report.warnings):
        print(f"authq-teller: fallback {line}", file=sys.stderr, flush=True)


async def sync_quietly(client: TellerClient, args: argparse.Namespace) -> None:
    """At the start of a command that reached the center: uploads what is pending.
    A failure here never stops the command; the next one tries again."""
    journal = journal_of(args)
    try:
        pending = journal.pending(args.user)
    except OSError as exc:
        print(f"authq-teller: the journal {journal.path} could not be read ({_reason(exc)}): "
              "fallbacks not uploaded", file=sys.stderr, flush=True)  # fmt: skip
        return
    if not pending:
        compact(journal, args)
        return
    try:
        report = await sync(client, journal, args.user)
    except grpc.aio.AioRpcError as exc:
        print(f"authq-teller: fallbacks not uploaded yet ({exc.code().name}: {exc.details()})",
              file=sys.stderr, flush=True)  # fmt: skip
        return
    except OSError as exc:
        # Uploaded, perhaps, but not marked so: the next command sends them again, and
        # the center keeps each once by request id.
        print(f"authq-teller: the journal {journal.path} could not be written "
              f"({_reason(exc)}): fallbacks not all marked uploaded",
              file=sys.stderr, flush=True)  # fmt: skip
        return
    if report.uploaded:
        print(f"authq-teller: {report.uploaded} local fallback record(s) reported to the center",
              file=sys.stderr, flush=True)  # fmt: skip
    if report.needs_attention:
        print(f"authq-teller: {report.needs_attention} local fallback record(s) need attention "
              "(refused, held otherwise or decided twice): `authq-teller fallback list`",
              file=sys.stderr, flush=True)  # fmt: skip
    _tell(report)
    compact(journal, args)


def compact(journal: Journal, args: argparse.Namespace) -> None:
    """Drops the fallbacks the center has held in full for ``--journal-keep-days``
    (R14). A failure never stops the command: the next one tries again."""
    keep_days: int = args.journal_keep_days
    try:
        dropped = journal.compact(now_ms() - keep_days * DAY_MS)
    except OSError as exc:
        print(f"authq-teller: the journal {journal.path} was not compacted: {exc}",
              file=sys.stderr, flush=True)  # fmt: skip
        return
    if dropped:
        print(f"authq-teller: {dropped} settled fallback(s) dropped from {journal.path}: the "
              f"center has held them in full for {keep_days} day(s) or more",
              file=sys.stderr, flush=True)  # fmt: skip


async def sync_command(client: TellerClient, args: argparse.Namespace) -> int:
    journal = journal_of(args)
    total = len(journal.pending(args.user))
    _say(f"{total} fallback record(s) of {args.user} to upload", args.json)

    def progress(done: int, of: int) -> None:
        _say(f"  {done}/{of} uploaded", args.json)

    report = await sync(client, journal, args.user, progress)
    _tell(report)
    _say(report.summary(), args.json)
    compact(journal, args)
    if args.json:
        print(json.dumps(asdict(report), ensure_ascii=False))
    return report.exit_code


# -- offline commands ----------------------------------------------------------------


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def describe(entry: JournalEntry) -> str:
    event = entry.event
    tx = cpb.Transaction()
    ParseDict(event.transaction, tx)
    amount = format_money(tx.amount) if tx.HasField("amount") else "-"
    why = (
        f"emergency {event.emergency_id}"
        if event.cause == "EMERGENCY"
        else f"center cannot store requests ({event.status_reason})"
        if event.status_reason in STORE_REASONS
        # Entries written before reasons were kept have RESOURCE_EXHAUSTED alone.
        else "center at capacity"
        if event.status_code == grpc.StatusCode.RESOURCE_EXHAUSTED.name
        else f"center unreachable ({event.status_code})"
    )
    text = (
        f"{entry.state:<8} {event.request_id}  {_when(event.occurred_at_ms)}  "
        f"{tx.business_type} {amount}  teller {event.teller_id}  {why}"
    )
    if entry.onsite is not None:
        text += f"\n         on site: {entry.onsite.outcome} by {entry.onsite.authorizer}"
        if entry.onsite.note:
            text += f" ({entry.onsite.note})"
    else:
        text += "\n         on site: not recorded yet"
    if entry.refused:
        text += f"\n         refused by the center: {entry.refused}"
    elif entry.server_status == "CONFLICT":
        text += f"\n         the center holds it otherwise: {entry.server_message}"
    if entry.reconciled is not None:
        how = entry.reconciled
        text += f"\n         reconciled by {how.by} at {_when(how.at_ms)}: {how.note}"
    elif entry.needs_reconciling:
        text += (
            f"\n         to reconcile with the center: authq-teller fallback reconcile "
            f"{event.request_id} --by ID --note TEXT"
        )
    said = central_note(entry.also_submitted, entry.central_state)
    if said:
        text += f"\n         {said}"
    return text


def central_note(also_submitted: bool, central_state: str) -> str:
    """What the teller must know of the center's request of the same id ("" none)."""
    if not also_submitted:
        return ""
    if central_state == "SENT_BACK":
        return (
            "the center had also received this request and has withdrawn it (SENT_BACK): "
            "it is authorized on site only"
        )
    if central_state in ("APPROVED", "REJECTED"):
        return (
            f"the center had already decided this request ({central_state}) before the "
            "fallback reached it: it was authorized twice, tell your supervisor"
        )
    if central_state == "CANCELLED":
        return "the center also received this request; it was cancelled there"
    return "the center also received this request: never authorize it twice"


def offline_command(args: argparse.Namespace) -> int | None:
    """``fallback list``, ``record`` and ``reconcile``: they work with the center down.
    None for any other command."""
    if args.command != "fallback" or args.fallback_command == "sync":
        return None
    journal = journal_of(args)
    if args.fallback_command == "record":
        decision = OnsiteDecision(
            args.onsite_authorizer.strip(), args.outcome, args.note.strip(), now_ms()
        )
        entry = journal.record_onsite(args.request_id, decision)
        if args.json:
            print(json.dumps(asdict(entry.onsite) if entry.onsite else {}, ensure_ascii=False))
        else:
            print(describe(entry))
        return 0
    if args.fallback_command == "reconcile":
        how = Reconciliation(args.by.strip(), args.note.strip(), now_ms())
        entry = journal.record_reconciled(args.request_id, how)
        if args.json:
            print(json.dumps(asdict(how), ensure_ascii=False))
        else:
            print(describe(entry))
        return 0
    entries = [e for e in journal.entries().values() if e.pending or not args.pending]
    for entry in entries:
        if args.json:
            print(json.dumps({"state": entry.state, **asdict(entry)}, ensure_ascii=False))
        else:
            print(describe(entry))
    if not entries and not args.json:
        print(f"no {'pending ' if args.pending else ''}fallbacks in {journal.path}")
    if journal.torn_lines():
        print(f"authq-teller: {journal.torn_lines()} unreadable line(s) in {journal.path} "
              "skipped", file=sys.stderr)  # fmt: skip
    return 0
