"""The teller's local fallback (R8): when the center cannot be reached, or answers with
an emergency fallback, the workstation says so, journals the event, and reports it
once the center is back; the center keeps each fallback once, audited, for
supervisors to list."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from authq.v1 import common_pb2 as cpb
from authq.v1 import supervisor_pb2 as spb
from authq.v1 import supervisor_pb2_grpc, teller_pb2_grpc
from authq.v1 import teller_pb2 as tpb
from google.protobuf.json_format import MessageToDict

from server.accounts.model import Role
from teller_client import fallback_cli
from teller_client.journal import FallbackEvent, Journal, OnsiteDecision
from tests.conftest import PASSWORD, RunningServer
from tests.helpers import fallback_record, request, standard_images

SUBMIT = (
    "submit", "--type", "CASH_WITHDRAWAL", "--amount", "12000.50", "--account",
    "6222020200001234", "--customer", "Zhang San",
)  # fmt: skip
UNREACHABLE = tpb.FALLBACK_CAUSE_CENTER_UNREACHABLE


async def cli(module: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def nothing_listening() -> str:
    """A local port nobody listens on: connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def login_args(tmp_path: Path, user: str = "teller-1") -> tuple[str, ...]:
    return ("--user", user, "--password", PASSWORD, "--state-dir", str(tmp_path / "state"))


async def audit_actions(server: RunningServer) -> list[tuple[str, str, str]]:
    await server.runtime.center.flush_audit()
    return [
        (r.entry.action, r.entry.target, r.entry.outcome) async for r in server.runtime.audit.read()
    ]


async def test_unreachable_center_is_journaled_then_reported_once(
    server: RunningServer, tmp_path: Path
) -> None:
    await server.account("teller-1", [Role.TELLER], "branch-1")
    journal_path = tmp_path / "journal.jsonl"
    me = (*login_args(tmp_path), "--journal", str(journal_path))
    dead = nothing_listening()

    code, out, err = await cli(
        "teller_client.cli", "--server", dead, *me, *SUBMIT, "--request-id", "fb-unreach-0001"
    )
    assert code == fallback_cli.EXIT_UNREACHABLE, err
    assert fallback_cli.UNREACHABLE_TEXT in out
    assert "fb-unreach-0001" in out
    (line,) = [json.loads(raw) for raw in journal_path.read_text().splitlines()]
    assert line["type"] == "fallback"
    assert line["request_id"] == "fb-unreach-0001"
    assert line["teller_id"] == "teller-1"
    assert line["cause"] == "CENTER_UNREACHABLE"
    assert line["status_code"] == "UNAVAILABLE"
    assert line["transaction"]["account"] == "6222020200001234"
    assert line["transaction"]["amount"] == {"minorUnits": "1200050", "currency": "CNY"}
    assert journal_path.stat().st_mode & 0o077 == 0  # customers' data (R14)

    # With the center still down: the list and the on-site decision work offline.
    code, out, _ = await cli("teller_client.cli", "--server", dead, *me, "fallback", "list")
    assert code == 0
    assert out.startswith("PENDING  fb-unreach-0001")
    code, out, err = await cli(
        "teller_client.cli", "--server", dead, *me, "fallback", "record", "fb-unreach-0001",
        "--onsite-authorizer", "senior-7", "--outcome", "APPROVED", "--note", "ID checked",
    )  # fmt: skip
    assert code == 0, err
    assert "APPROVED by senior-7" in out

    # The center is back: the next command reports it.
    code, _, err = await cli("teller_client.cli", "--server", server.target, *me, "login")
    assert code == 0, err
    assert "1 local fallback record(s) reported to the center" in err
    code, out, _ = await cli("teller_client.cli", "--server", dead, *me, "fallback", "list")
    assert out.startswith("UPLOADED fb-unreach-0001")

    async with server.supervisor() as supervisor:
        (held,) = await supervisor.fallbacks("branch-1")
    assert held.request_id == "fb-unreach-0001"
    assert (held.teller_id, held.branch_id, held.reported_by) == (
        "teller-1",
        "branch-1",
        "teller-1",
    )
    assert held.cause == UNREACHABLE
    assert held.status_code == "UNAVAILABLE"
    assert held.transaction.amount.minor_units == 1_200_050
    assert held.onsite_outcome == tpb.ONSITE_OUTCOME_APPROVED
    assert (held.onsite_authorizer, held.onsite_note) == ("senior-7", "ID checked")
    assert held.occurred_at_ms <= held.onsite_at_ms <= held.received_at_ms
    assert not held.also_submitted

    # Uploaded again (a reply lost on the way): the center holds it once.
    (entry,) = Journal(journal_path).entries().values()
    async with server.teller() as teller:
        reply = await teller.report_fallbacks([fallback_cli.to_pb(entry)])
    assert reply.results[0].status == tpb.FALLBACK_REPORT_STATUS_DUPLICATE
    code, _, err = await cli(
        "teller_client.cli", "--server", server.target, *me, "fallback", "sync"
    )
    assert code == 0, err
    async with server.supervisor() as supervisor:
        assert len(await supervisor.fallbacks()) == 1
    local = [a for a in await audit_actions(server) if a[0].startswith("LOCAL_FALLBACK")]
    assert local == [("LOCAL_FALLBACK", "fb-unreach-0001", "OK")]

    # Settled, it stays for --journal-keep-days (7 by default); with none to keep, the
    # next command that reaches the center drops its customer data (R14).
    assert "dropped" not in err
    code, _, err = await cli(
        "teller_client.cli", "--server", server.target, *me, "--journal-keep-days", "0", "login"
    )
    assert code == 0, err
    assert f"1 settled fallback(s) dropped from {journal_path}" in err
    assert Journal(journal_path).entries() == {}
    assert b"6222020200001234" not in journal_path.read_bytes()
    code, _, err = await cli(
        "teller_client.cli", "--server", server.target, *me, "--journal-keep-days", "-1", "login"
    )
    assert code == 2
    assert "days cannot be negative" in err


async def test_emergency_answer_is_journaled_and_its_outcome_follows(
    server: RunningServer, tmp_path: Path
) -> None:
    await server.account("teller-1", [Role.TELLER], "branch-1")
    env = {"AUTHQ_JOURNAL": str(tmp_path / "env-journal.jsonl")}
    me = ("--server", server.target, *login_args(tmp_path))
    async with server.supervisor() as supervisor:
        emergency = await supervisor.declare_emergency("center network failure", ["branch-1"])
    captures = []
    for kind, data in standard_images():
        (tmp_path / kind).write_bytes(data)
        captures += ["--image", f"{kind}={tmp_path / kind}"]
    code, out, err = await cli(
        "teller_client.cli", *me, *SUBMIT, *captures, "--request-id", "fb-emerg-0001", env=env
    )
    assert code == 4, err
    assert "ON SITE" in out
    (entry,) = Journal(tmp_path / "env-journal.jsonl").entries().values()
    assert entry.event.cause == "EMERGENCY"
    assert entry.event.emergency_id == emergency.emergency_id
    assert entry.event.branch_id == "branch-1"

    code, out, err = await cli("teller_client.cli", *me, "fallback", "sync", env=env)
    assert code == 0, err
    assert "1/1 uploaded" in out
    code, _, err = await cli(
        "teller_client.cli", *me, "fallback", "record", "fb-emerg-0001",
        "--onsite-authorizer", "senior-7", "--outcome", "REJECTED", env=env,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = await cli("teller_client.cli", *me, "fallback", "list", env=env)
    assert code == 0  # offline commands upload nothing
    code, _, err = await cli("teller_client.cli", *me, "login", env=env)
    assert "1 local fallback record(s) reported" in err

    code, out, err = await cli(
        "authorizer_console.cli", "--server", server.target,
        *login_args(tmp_path, "supervisor-1"), "fallbacks", "--branch", "branch-1",
    )  # fmt: skip
    assert code == 0, err
    assert f"emergency {emergency.emergency_id}" in out
    assert "REJECTED by senior-7" in out
    assert "6222********1234" in out
    actions = [a for a in await audit_actions(server) if a[0].startswith("LOCAL_FALLBACK")]
    assert actions == [
        ("LOCAL_FALLBACK", "fb-emerg-0001", "OK"),
        ("LOCAL_FALLBACK_OUTCOME", "fb-emerg-0001", "OK"),
    ]


async def test_a_teller_reports_only_its_own_for_its_own_branch(server: RunningServer) -> None:
    async with server.teller("teller-2", "branch-2") as other, server.teller() as teller:
        for mine, field in ((fallback_record(branch_id="branch-1"), "branch_id"),
                            (fallback_record(teller_id="teller-1"), "teller_id")):  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await other.report_fallbacks([mine])
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert f"records[0].{field}" in (refused.value.details() or "")
        reply = await teller.report_fallbacks([fallback_record(branch_id="branch-1")])
        assert reply.results[0].status == tpb.FALLBACK_REPORT_STATUS_STORED
    async with server.supervisor() as supervisor:
        assert [r.teller_id for r in await supervisor.fallbacks()] == ["teller-1"]
        assert await supervisor.fallbacks("branch-2") == []
    async with server.teller() as teller:
        stub = supervisor_pb2_grpc.SupervisorServiceStub(teller.channel)
        with pytest.raises(grpc.aio.AioRpcError) as not_a_supervisor:
            await stub.ListFallbacks(spb.ListFallbacksRequest(), metadata=teller.metadata)
        assert not_a_supervisor.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with server.authorizer() as authorizer:
        teller_stub = teller_pb2_grpc.TellerServiceStub(authorizer.channel)
        with pytest.raises(grpc.aio.AioRpcError) as not_a_teller:
            await teller_stub.ReportFallbacks(
                tpb.ReportFallbacksRequest(records=[fallback_record()]),
                metadata=authorizer.metadata,
            )
        assert not_a_teller.value.code() == grpc.StatusCode.PERMISSION_DENIED
    refusals = [a for a in await audit_actions(server) if a[0] == "LOCAL_FALLBACK"]
    assert len([a for a in refusals if a[2] != "OK"]) == 2


def _no_transaction(r: tpb.FallbackRecord) -> None:
    r.ClearField("transaction")


def _authorized_by_its_teller(r: tpb.FallbackRecord) -> None:
    r.onsite_outcome = tpb.ONSITE_OUTCOME_APPROVED
    r.onsite_authorizer = "teller-1"
    r.onsite_at_ms = r.occurred_at_ms


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: setattr(r, "request_id", "x"), "records[0].request_id"),
        (_no_transaction, "records[0].transaction"),
        (lambda r: setattr(r.transaction, "account", "?"), "records[0].transaction.account"),
        (lambda r: setattr(r.transaction, "customer_name", ""),
         "records[0].transaction.customer_name"),
        (lambda r: setattr(r.transaction.amount, "currency", "XXQ"),
         "records[0].transaction.amount.currency"),
        (lambda r: setattr(r, "occurred_at_ms", 0), "records[0].occurred_at_ms"),
        (lambda r: setattr(r, "occurred_at_ms", 2**50), "records[0].occurred_at_ms"),
        (lambda r: setattr(r, "cause", tpb.FALLBACK_CAUSE_UNSPECIFIED), "records[0].cause"),
        (lambda r: setattr(r, "status_code", "BROKEN"), "records[0].status_code"),
        (lambda r: setattr(r, "cause", tpb.FALLBACK_CAUSE_EMERGENCY), "records[0].emergency_id"),
        (lambda r: setattr(r, "onsite_outcome", tpb.ONSITE_OUTCOME_APPROVED),
         "records[0].onsite_authorizer"),
        (lambda r: setattr(r, "onsite_authorizer", "senior-7"), "records[0].onsite_outcome"),
        (_authorized_by_its_teller, "records[0].onsite_authorizer"),
    ],
)  # fmt: skip
async def test_bad_fields_are_refused_naming_the_field(
    server: RunningServer, change: Callable[[tpb.FallbackRecord], object], field: str
) -> None:
    bad = fallback_record()
    change(bad)
    async with server.teller() as teller:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await teller.report_fallbacks([bad])
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith(field + ":")
    async with server.supervisor() as supervisor:
        assert await supervisor.fallbacks() == []


async def test_batches_are_bounded(server: RunningServer) -> None:
    async with server.teller() as teller:
        many = [fallback_record(request_id=f"fb-many-{i:04d}") for i in range(101)]
        for records, problem in (([], "at least one"),
                                 ([fallback_record()] * 2, "records[1].request_id: listed twice"),
                                 (many, "at most 100")):  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await teller.report_fallbacks(records)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert problem in (refused.value.details() or "")


async def test_conflicts_change_nothing_and_a_submitted_twin_is_flagged(
    server: RunningServer,
) -> None:
    approved = fallback_record(onsite_outcome=tpb.ONSITE_OUTCOME_APPROVED,
                               onsite_authorizer="senior-7",
                               onsite_at_ms=time.time_ns() // 1_000_000)  # fmt: skip
    rejected = tpb.FallbackRecord()
    rejected.CopyFrom(approved)
    rejected.onsite_outcome = tpb.ONSITE_OUTCOME_REJECTED
    other_content = fallback_record(status_message="something else")
    async with server.teller() as teller:
        statuses = [
            (await teller.report_fallbacks([r])).results[0].status
            for r in (approved, rejected, other_content, approved)
        ]
        assert statuses == [
            tpb.FALLBACK_REPORT_STATUS_STORED,
            tpb.FALLBACK_REPORT_STATUS_CONFLICT,
            tpb.FALLBACK_REPORT_STATUS_CONFLICT,
            tpb.FALLBACK_REPORT_STATUS_DUPLICATE,
        ]
        # The submit reached the center although the workstation saw a deadline.
        submitted = await teller.submit(request(request_id="fb-twin-0001"))
        assert submitted.request.state == cpb.REQUEST_STATE_QUEUED
        twin = fallback_record(request_id="fb-twin-0001", status_code="DEADLINE_EXCEEDED")
        (result,) = (await teller.report_fallbacks([twin])).results
        assert result.also_submitted
    async with server.supervisor() as supervisor:
        held = {r.request_id: r for r in await supervisor.fallbacks()}
    assert held["fb-record-0001"].onsite_outcome == tpb.ONSITE_OUTCOME_APPROVED
    assert held["fb-record-0001"].status_message == "failed to connect to all addresses"
    assert held["fb-twin-0001"].also_submitted


async def test_supervisors_list_by_branch_and_period(server: RunningServer) -> None:
    hour = 3_600_000
    now = time.time_ns() // 1_000_000
    async with server.teller() as teller, server.teller("teller-2", "branch-2") as other:
        for age in (3, 2, 1):
            await teller.report_fallbacks(
                [fallback_record(request_id=f"fb-b1-{age}h-0001", occurred_at_ms=now - age * hour)]
            )
        await other.report_fallbacks([fallback_record(request_id="fb-b2-0001")])
    async with server.supervisor() as supervisor:
        branch1 = await supervisor.fallbacks("branch-1", from_ms=now - 150 * 60_000)
        assert [r.request_id for r in branch1] == ["fb-b1-1h-0001", "fb-b1-2h-0001"]
        older = await supervisor.fallbacks("branch-1", to_ms=now - 2 * hour)
        assert [r.request_id for r in older] == ["fb-b1-3h-0001"]
        assert len(await supervisor.fallbacks()) == 4
        assert len(await supervisor.fallbacks(limit=2)) == 2
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await supervisor.fallbacks(from_ms=now, to_ms=now - hour)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith("to_ms:")


async def test_a_refused_record_does_not_hold_back_the_others(
    server: RunningServer, tmp_path: Path
) -> None:
    await server.account("teller-1", [Role.TELLER], "branch-1")
    journal = Journal(tmp_path / "journal.jsonl")
    now = time.time_ns() // 1_000_000
    good = request().transaction
    for rid, account in (("fb-good-0001", good.account), ("fb-bad-00001", "?")):
        good.account = account
        journal.record_fallback(
            FallbackEvent(rid, "teller-1", "", now, "CENTER_UNREACHABLE",
                          MessageToDict(good), status_code="UNAVAILABLE")
        )  # fmt: skip
    code, _, err = await cli(
        "teller_client.cli", "--server", server.target, *login_args(tmp_path),
        "--journal", str(journal.path), "fallback", "sync",
    )  # fmt: skip
    assert code == 1
    assert "fb-bad-00001: records[0].transaction.account" in err
    states = {rid: entry.state for rid, entry in journal.entries().items()}
    assert states == {"fb-good-0001": "UPLOADED", "fb-bad-00001": "REFUSED"}
    assert journal.pending("teller-1") == []


def test_the_journal_only_appends_and_survives_a_torn_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "deep" / "journal.jsonl")
    event = FallbackEvent("fb-torn-0001", "teller-1", "branch-1", 1, "CENTER_UNREACHABLE",
                          {"account": "6222020200001234"}, status_code="UNAVAILABLE")  # fmt: skip
    journal.record_fallback(event)
    assert journal.record_fallback(event).event == event  # a retried submit: kept once
    with journal.path.open("ab") as handle:
        handle.write(b'{"type": "onsite", "request_id": "fb-to')  # a crash mid-write
    decision = OnsiteDecision("senior-7", "APPROVED", "", 2)
    journal.record_onsite("fb-torn-0001", decision)
    assert journal.torn_lines() == 1
    (entry,) = journal.entries().values()
    assert entry.onsite == decision
    assert [e.event.request_id for e in journal.pending("teller-1")] == ["fb-torn-0001"]
    assert journal.pending("teller-2") == []
    journal.mark_uploaded(entry, "STORED")
    assert journal.pending("teller-1") == []
    with pytest.raises(ValueError, match="recorded once"):
        journal.record_onsite("fb-torn-0001", decision)
    with pytest.raises(ValueError, match="no fallback fb-unknown"):
        journal.record_onsite("fb-unknown", decision)
    other = Journal(tmp_path / "other.jsonl")
    other.record_fallback(event)
    with pytest.raises(ValueError, match="R11"):
        other.record_onsite("fb-torn-0001", OnsiteDecision("teller-1", "APPROVED", "", 2))
    lines = journal.path.read_text().splitlines()
    assert len(lines) == 4  # fallback, torn, onsite, uploaded: nothing rewritten


async def test_a_cached_login_whose_submit_fails_falls_back_too(
    server: RunningServer, tmp_path: Path
) -> None:
    await server.account("teller-1", [Role.TELLER], "branch-1")
    state = ("--user", "teller-1", "--state-dir", str(tmp_path / "state"))
    env = {"AUTHQ_PASSWORD": ""}
    code, _, err = await cli(
        "teller_client.cli", "--server", server.target, *login_args(tmp_path), "login"
    )
    assert code == 0, err
    # No password now: the saved login is used, and it is the submit that fails.
    code, out, err = await cli(
        "teller_client.cli", "--json", "--server", nothing_listening(), *state, *SUBMIT,
        "--request-id", "fb-cached-0001", env=env,
    )  # fmt: skip
    assert code == fallback_cli.EXIT_UNREACHABLE, err
    answer = json.loads(out)
    assert answer["unreachable"] is True
    assert answer["fallback"]["request_id"] == "fb-cached-0001"
    assert fallback_cli.UNREACHABLE_TEXT in err  # words go to stderr in JSON mode
    entries = Journal(tmp_path / "state" / "fallback-journal.jsonl").entries()
    assert entries["fb-cached-0001"].event.status_code == "UNAVAILABLE"
