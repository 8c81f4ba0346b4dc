"""What `authq-teller fallback sync` leaves for people to act on (R8): a fallback the
center holds otherwise (CONFLICT) or had decided itself too (authorized twice) ends the
sync with an exit code of its own, so a nightly script sees it; a transaction the
center would refuse is not journaled while it is down, and one it refuses at sync
stays in the journal until someone reconciles it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from authq.exits import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED
from authq.v1 import teller_pb2 as tpb
from google.protobuf.json_format import MessageToDict

from server.accounts.model import Role
from server.domain import transaction_rules
from teller_client import client, fallback_cli
from teller_client.journal import FallbackEvent, Journal, OnsiteDecision
from tests.conftest import RunningServer
from tests.helpers import fallback_record, request
from tests.test_local_fallback import SUBMIT, cli, login_args, nothing_listening

TELLER = "teller_client.cli"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def journal_args(tmp_path: Path) -> tuple[str, ...]:
    return (*login_args(tmp_path), "--journal", str(tmp_path / "journal.jsonl"))


def journaled(tmp_path: Path, submitted: tpb.SubmitRequest) -> Journal:
    """The workstation's journal holding ``submitted`` as fallen back (its answer never
    came) and approved on site."""
    journal = Journal(tmp_path / "journal.jsonl")
    journal.record_fallback(
        FallbackEvent(submitted.request_id, "teller-1", "", now_ms(), "CENTER_UNREACHABLE",
                      MessageToDict(submitted.transaction), status_code="DEADLINE_EXCEEDED")
    )  # fmt: skip
    journal.record_onsite(
        submitted.request_id, OnsiteDecision("senior-7", "APPROVED", "", now_ms())
    )
    return journal


# -- outcomes to act on have an exit code of their own ---------------------------------


async def test_sync_exits_needs_attention_when_the_center_holds_it_otherwise(
    server: RunningServer, tmp_path: Path
) -> None:
    await server.account("teller-1", [Role.TELLER], "branch-1")
    submitted = request()
    async with server.teller() as teller:  # another copy reached the center first
        other = fallback_record(request_id=submitted.request_id, status_message="other")
        await teller.report_fallbacks([other])
    journal = journaled(tmp_path, submitted)

    code, out, err = await cli(
        TELLER, "--server", server.target, *journal_args(tmp_path), "fallback", "sync"
    )
    assert code == fallback_cli.EXIT_NEEDS_ATTENTION, err
    assert f"fallback {submitted.request_id}: the center holds it otherwise" in err
    assert "1 need(s) attention" in out
    assert journal.entries()[submitted.request_id].needs_reconciling


async def test_sync_exits_needs_attention_when_the_center_decided_it_too(
    server: RunningServer, tmp_path: Path
) -> None:
    await server.account("teller-1", [Role.TELLER], "branch-1")
    submitted = request()
    async with server.teller() as teller, server.authorizer() as authorizer:
        await teller.submit(submitted)  # its answer "lost": the workstation fell back
        offer = await authorizer.next(timeout=10)
        await authorizer.decide(submitted.request_id, offer.lease.fencing_token, "approve")
    journaled(tmp_path, submitted)

    code, out, err = await cli(
        TELLER, "--server", server.target, *journal_args(tmp_path), "fallback", "sync"
    )
    assert code == fallback_cli.EXIT_NEEDS_ATTENTION, err
    assert "authorized twice, tell your supervisor" in err
    assert "1 need(s) attention" in out


async def test_a_sync_the_center_takes_as_sent_exits_zero(
    server: RunningServer, tmp_path: Path
) -> None:
    await server.account("teller-1", [Role.TELLER], "branch-1")
    journaled(tmp_path, request())

    code, out, err = await cli(
        TELLER, "--server", server.target, *journal_args(tmp_path), "fallback", "sync"
    )
    assert code == 0, err
    assert "0 need(s) attention" in out


def test_the_needs_attention_exit_code_is_distinct() -> None:
    others = {0, 1, 2, 3, 4, fallback_cli.EXIT_UNREACHABLE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE}
    assert fallback_cli.EXIT_NEEDS_ATTENTION not in others


async def test_sync_help_lists_its_exit_codes(tmp_path: Path) -> None:
    code, out, err = await cli(TELLER, "fallback", "sync", "--help")
    assert code == 0, err
    described = " ".join(out.split())
    assert f"{fallback_cli.EXIT_NEEDS_ATTENTION}: none refused, but the center holds" in described


# -- nothing the center would refuse is journaled; a refusal stays ---------------------


def test_the_local_rules_are_the_centers() -> None:
    """The workstation refuses with the center's own rules
    (server/domain/transaction_rules.py), not a copy of them."""
    assert client.InvalidRequest is transaction_rules.Malformed


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("--account", "12"), "transaction.account"),
        (("--customer", "  "), "transaction.customer_name"),
        (("--currency", "XYZ"), "transaction.amount.currency"),
        (("--amount", "2000000000000"), "transaction.amount.minor_units"),
        (("--type", "CASH-WITHDRAWAL"), "transaction.business_type"),
        (("--memo", "m" * 501), "transaction.memo"),
        (("--field", "=value"), "transaction.fields"),
        (("--request-id", "short"), "request_id"),
    ],
)
async def test_a_malformed_transaction_is_refused_locally_and_not_journaled(
    tmp_path: Path, change: tuple[str, str], field: str
) -> None:
    code, out, err = await cli(
        TELLER, "--server", nothing_listening(), *journal_args(tmp_path), *SUBMIT, *change
    )
    assert code == 2, (out, err)
    assert err.strip().count("\n") == 0
    assert err.startswith(f"authq-teller: {field}")
    assert "on site" not in out + err
    assert Journal(tmp_path / "journal.jsonl").entries() == {}


async def test_a_malformed_transaction_is_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    # Refused at once, not after a login and the submit's retries against a center that
    # is away or slow: the listener below is never even connected to.
    connections = 0

    def accepted(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    listener = await asyncio.start_server(accepted, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        code, out, err = await cli(
            TELLER, "--server", f"127.0.0.1:{port}", *journal_args(tmp_path), *SUBMIT,
            "--account", "12",
        )  # fmt: skip
    finally:
        listener.close()
        await listener.wait_closed()
    assert code == 2, (out, err)
    assert err.startswith("authq-teller: transaction.account: is required")
    assert connections == 0


async def test_a_record_the_center_refuses_stays_in_the_journal_until_reconciled(
    server: RunningServer, tmp_path: Path
) -> None:
    """A malformed record an older workstation journaled: refused at sync, it is not
    compacted away with the settled ones, but waits, marked, for someone to act."""
    await server.account("teller-1", [Role.TELLER], "branch-1")
    bad = request()
    bad.transaction.account = "?"
    journal = journaled(tmp_path, bad)
    me = ("--server", server.target, *journal_args(tmp_path), "--journal-keep-days", "0")
    rid = bad.request_id

    code, _, err = await cli(TELLER, *me, "fallback", "sync")
    assert code == 1, err
    assert f"fallback {rid}: records[0].transaction.account" in err
    code, _, err = await cli(TELLER, *me, "login")
    assert code == 0, err
    assert "dropped" not in err
    code, out, _ = await cli(TELLER, *me, "fallback", "list")
    assert out.startswith(f"REFUSED  {rid}")
    assert f"authq-teller fallback reconcile {rid}" in out

    code, _, err = await cli(
        TELLER, *me, "fallback", "reconcile", rid, "--by", "branch-head-1", "--note", "re-keyed"
    )
    assert code == 0, err
    code, _, err = await cli(TELLER, *me, "login")
    assert f"1 settled fallback(s) dropped from {journal.path}" in err
    assert journal.entries() == {}
