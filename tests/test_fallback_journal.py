"""The workstation's fallback journal lets go of customers' data (R14) once the center
holds a fallback in full: compaction drops what is settled and old enough, keeps the
rest byte for byte, and never loses a line appended while it runs."""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path
from typing import Any

import pytest
from authq import local_files

from teller_client import journal as journal_module
from teller_client.journal import (
    DAY_MS,
    FallbackEvent,
    Journal,
    JournalError,
    OnsiteDecision,
    Reconciliation,
)
from tests.test_local_fallback import cli, login_args, nothing_listening

NOW_MS = 1_800_000_000_000


def event(request_id: str) -> FallbackEvent:
    return FallbackEvent(request_id, "teller-1", "branch-1", 1, "CENTER_UNREACHABLE",
                         {"account": "6222020200001234", "customerName": "Zhang San"},
                         status_code="UNAVAILABLE")  # fmt: skip


def decided(journal: Journal, request_id: str) -> None:
    journal.record_fallback(event(request_id))
    journal.record_onsite(request_id, OnsiteDecision("senior-7", "APPROVED", "", 2))


def uploaded(journal: Journal, request_id: str, status: str = "STORED") -> None:
    journal.mark_uploaded(journal.entries()[request_id], status)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    now = [NOW_MS - 10 * DAY_MS]
    monkeypatch.setattr(journal_module, "now_ms", lambda: now[0])
    return now


def test_only_what_the_center_holds_in_full_and_long_enough_leaves(
    tmp_path: Path, clock: list[int]
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    decided(journal, "fb-settled-old")
    uploaded(journal, "fb-settled-old")
    decided(journal, "fb-duplicate-old")
    uploaded(journal, "fb-duplicate-old", "DUPLICATE")
    journal.record_fallback(event("fb-no-outcome"))  # uploaded, its outcome still to come
    uploaded(journal, "fb-no-outcome")
    decided(journal, "fb-conflict")  # the center holds it otherwise: for the reconciling
    uploaded(journal, "fb-conflict", "CONFLICT")
    decided(journal, "fb-refused")
    journal.mark_refused(journal.entries()["fb-refused"], "records[0].transaction.account")
    decided(journal, "fb-pending")
    clock[0] = NOW_MS - DAY_MS
    decided(journal, "fb-settled-new")
    uploaded(journal, "fb-settled-new")
    with journal.path.open("ab") as handle:
        handle.write(b'{"type": "fallback", "request_id": "fb-to')  # a crash mid-write
    staying = ("fb-no-outcome", "fb-conflict", "fb-refused", "fb-pending", "fb-settled-new")
    lines_before = journal.path.read_bytes().splitlines(keepends=True)
    before = journal.entries()

    assert journal.compact(NOW_MS - 7 * DAY_MS) == 2
    after = journal.entries()
    assert list(after) == list(staying)
    assert after == {rid: before[rid] for rid in staying}
    assert journal.torn_lines() == 0
    # What stays is kept as written; nothing of the customers' data that left remains.
    text = journal.path.read_bytes()
    assert text.splitlines(keepends=True) == [
        line for line in lines_before if any(f'"{rid}"'.encode() in line for rid in staying)
    ]
    assert b"fb-settled-old" not in text
    assert b"fb-duplicate-old" not in text
    assert journal.path.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*.new"))

    # Nothing more to drop: the file is left alone; appends go on as before.
    inode = journal.path.stat().st_ino
    assert journal.compact(NOW_MS - 7 * DAY_MS) == 0
    assert journal.path.stat().st_ino == inode
    journal.record_onsite("fb-no-outcome", OnsiteDecision("senior-7", "REJECTED", "", 3))
    assert journal.entries()["fb-no-outcome"].pending
    assert journal.compact(NOW_MS) == 1  # fb-settled-new, with no days to keep


def test_an_append_waiting_on_a_compaction_lands_in_the_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    decided(journal, "fb-settled")
    uploaded(journal, "fb-settled")
    waiting = threading.Event()
    real_flock = fcntl.flock

    class Flock:
        # fcntl as the journal's lock (authq.local_files.locked) sees it: says when the
        # appender waits for the lock.
        def __getattr__(self, name: str) -> Any:
            return getattr(fcntl, name)

        @staticmethod
        def flock(fd: int, operation: int) -> None:
            if threading.current_thread() is not threading.main_thread():
                waiting.set()
            real_flock(fd, operation)

    monkeypatch.setattr(local_files, "fcntl", Flock())
    appender = threading.Thread(target=journal.record_fallback, args=(event("fb-new"),))
    with journal._locked():  # the compaction's turn: it holds the lock...
        appender.start()
        assert waiting.wait(10)  # ...while the appender, with the old file open, waits
        journal._replace(b"")  # the compaction's new file, which drops fb-settled
    appender.join(10)
    assert list(journal.entries()) == ["fb-new"]


def test_a_conflict_or_a_refusal_leaves_once_reconciled_and_kept_long_enough(
    tmp_path: Path, clock: list[int]
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    decided(journal, "fb-conflict")
    uploaded(journal, "fb-conflict", "CONFLICT")
    decided(journal, "fb-refused")
    journal.mark_refused(journal.entries()["fb-refused"], "records[0].transaction.account")
    assert all(e.needs_reconciling for e in journal.entries().values())

    how = Reconciliation("branch-head-3", "settled", NOW_MS - 2 * DAY_MS)  # 8 days on
    for rid in ("fb-conflict", "fb-refused"):
        entry = journal.record_reconciled(rid, how)
        assert (entry.settled, entry.state) == (True, "RECONCILED")
    assert journal.entries()["fb-conflict"].reconciled == how
    # Kept for the days to keep from the reconciliation, not from the upload.
    assert journal.compact(NOW_MS - 7 * DAY_MS) == 0
    assert journal.compact(NOW_MS - DAY_MS) == 2
    assert journal.entries() == {}


def test_only_what_needs_reconciling_is_reconciled_once_by_someone_else(
    tmp_path: Path, clock: list[int]
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    decided(journal, "fb-stored")
    uploaded(journal, "fb-stored")
    decided(journal, "fb-pending")
    journal.record_fallback(event("fb-no-outcome"))
    uploaded(journal, "fb-no-outcome", "CONFLICT")
    decided(journal, "fb-conflict")
    uploaded(journal, "fb-conflict", "CONFLICT")
    ok = Reconciliation("branch-head-3", "called the center, kept the center's record", 9)

    def refused(rid: str, how: Reconciliation = ok) -> str:
        with pytest.raises(JournalError) as caught:
            journal.record_reconciled(rid, how)
        return str(caught.value)

    assert "fb-stored has nothing to reconcile (the center holds it as sent)" in refused(
        "fb-stored"
    )
    assert "fb-pending has nothing to reconcile (pending)" in refused("fb-pending")
    assert "nothing to reconcile" in refused("fb-no-outcome")  # its on-site outcome first
    assert "no fallback fb-nowhere" in refused("fb-nowhere")
    assert refused("fb-conflict", Reconciliation("teller-1", "x", 9)) == (
        "--by: the teller who keyed a transaction cannot reconcile its fallback (R11)"
    )
    assert refused("fb-conflict", Reconciliation(" ", "x", 9)).startswith("--by:")
    assert refused("fb-conflict", Reconciliation("branch-head-3", " ", 9)).startswith("--note:")
    journal.record_reconciled("fb-conflict", ok)
    assert "already reconciled by branch-head-3" in refused("fb-conflict")


async def test_the_reconcile_command_works_with_the_center_down(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    decided(journal, "fb-conflict")
    uploaded(journal, "fb-conflict", "CONFLICT")
    me = ("--server", nothing_listening(), *login_args(tmp_path), "--journal", str(journal.path))
    code, out, _ = await cli("teller_client.cli", *me, "fallback", "list")
    assert code == 0
    assert "authq-teller fallback reconcile fb-conflict --by ID --note TEXT" in out
    code, out, err = await cli(
        "teller_client.cli", *me, "fallback", "reconcile", "fb-conflict",
        "--by", "branch-head-3", "--note", "the center's record stands",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("RECONCILED fb-conflict")
    assert "reconciled by branch-head-3 at " in out
    assert out.rstrip().endswith(": the center's record stands")
    code, _, err = await cli(
        "teller_client.cli", *me, "fallback", "reconcile", "fb-conflict",
        "--by", "branch-head-3", "--note", "again",
    )  # fmt: skip
    assert code != 0
    assert "already reconciled by branch-head-3" in err
