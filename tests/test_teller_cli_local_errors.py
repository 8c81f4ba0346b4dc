"""authq-teller with a local file it cannot use: a fallback journal that cannot be read
or written, a folder or file to write into that is not there or is something else.
Each says so in one line and never hides the on-site instruction (R8): a command that
reaches the center still runs, a fallback the journal could not take is told as NOT
recorded, and a path the teller gave is a usage error (exit 2)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

from server.accounts.model import Role
from teller_client import fallback_cli
from tests.conftest import PASSWORD, RunningServer
from tests.helpers import request, standard_images

SUBMIT = (
    "submit", "--type", "CASH_WITHDRAWAL", "--amount", "12000.50", "--account",
    "6222020200001234", "--customer", "Zhang San",
)  # fmt: skip
# What the teller is told to do, recorded or not.
ON_SITE = "authorize on site under the branch's fallback procedure (R8)."


async def cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "teller_client.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def me(tmp_path: Path) -> tuple[str, ...]:
    return ("--user", "teller-1", "--password", PASSWORD, "--state-dir", str(tmp_path / "state"))


def nothing_listening() -> str:
    """A local port nobody listens on: connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def blocked_journal(tmp_path: Path) -> Path:
    """A journal path under a plain file: it can be neither read nor written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker / "journal.jsonl"


def not_recorded(journal: Path, request_id: str) -> str:
    return (
        f"NOT recorded in {journal} (Not a directory): write {request_id} down with the "
        "transaction and who authorizes it on site; this workstation will not report it"
    )


async def test_a_journal_that_cannot_be_read_is_one_line_and_the_command_runs(
    server: RunningServer, tmp_path: Path
) -> None:
    async with server.teller() as teller:
        await teller.submit(request(request_id="local-err-read-0001"))
    journal = tmp_path / "journal-is-a-dir"
    journal.mkdir()
    code, out, err = await cli(
        "--server", server.target, *me(tmp_path), "--journal", str(journal),
        "show", "local-err-read-0001",
    )  # fmt: skip
    assert code == 0, err
    assert "local-err-read-0001" in out
    assert err == (
        f"authq-teller: the journal {journal} could not be read (Is a directory): "
        "fallbacks not uploaded\n"
    )


async def test_an_offline_command_on_a_journal_that_cannot_be_read_is_a_usage_error(
    tmp_path: Path,
) -> None:
    """`fallback list` never reaches the center: main's last resort says it."""
    journal = tmp_path / "journal-is-a-dir"
    journal.mkdir()
    code, out, err = await cli(*me(tmp_path), "--journal", str(journal), "fallback", "list")
    assert (code, out) == (2, "")
    assert err == f"authq-teller: {journal}: Is a directory\n"


async def test_a_dead_center_and_an_unwritable_journal_still_send_the_teller_on_site(
    tmp_path: Path,
) -> None:
    journal = blocked_journal(tmp_path)
    code, out, err = await cli(
        "--server", nothing_listening(), *me(tmp_path), "--journal", str(journal),
        *SUBMIT, "--request-id", "local-err-dead-0001",
    )  # fmt: skip
    assert code == fallback_cli.EXIT_UNREACHABLE, err
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == (
        "the authorization center cannot be reached: authorize on site under the branch's "
        "fallback procedure (R8)."
    )
    assert lines[1].startswith("  (UNAVAILABLE: ")
    assert lines[2:] == ["  " + not_recorded(journal, "local-err-dead-0001")]
    assert not journal.exists()

    # In JSON mode stdout carries the fallback, marked as not recorded.
    code, out, err = await cli(
        "--json", "--server", nothing_listening(), *me(tmp_path), "--journal", str(journal),
        *SUBMIT, "--request-id", "local-err-dead-0002",
    )  # fmt: skip
    assert code == fallback_cli.EXIT_UNREACHABLE, err
    answer = json.loads(out)
    assert answer["unreachable"] is True
    assert answer["recorded"] is False
    assert answer["journal"] == str(journal)
    assert answer["fallback"]["request_id"] == "local-err-dead-0002"
    assert ON_SITE in err
    assert not_recorded(journal, "local-err-dead-0002") in err


async def test_an_emergency_answer_with_an_unwritable_journal_says_it_is_not_recorded(
    server: RunningServer, tmp_path: Path
) -> None:
    await server.account("teller-1", [Role.TELLER], "branch-1")
    async with server.supervisor() as supervisor:
        emergency = await supervisor.declare_emergency("center network failure", ["branch-1"])
    captures: list[str] = []
    for kind, data in standard_images():
        (tmp_path / kind).write_bytes(data)
        captures += ["--image", f"{kind}={tmp_path / kind}"]
    journal = blocked_journal(tmp_path)
    code, out, err = await cli(
        "--server", server.target, *me(tmp_path), "--journal", str(journal),
        *SUBMIT, *captures, "--request-id", "local-err-emerg-0001",
    )  # fmt: skip
    assert code == 4, err
    assert f"CENTER IN EMERGENCY FALLBACK ({emergency.emergency_id})" in out
    assert "Authorize this transaction ON SITE" in out
    assert out.endswith(not_recorded(journal, "local-err-emerg-0001") + "\n")
    assert "fallback record" not in out
    # The journal could not be read for the upload before the submit either.
    assert err == (
        f"authq-teller: the journal {journal} could not be read (Not a directory): "
        "fallbacks not uploaded\n"
    )
    assert not journal.exists()


async def test_demo_images_into_a_path_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, err = await cli("demo-images", str(blocker))
    assert (code, out) == (2, "")
    assert err == f"authq-teller: demo-images: {blocker}: File exists\n"


async def test_image_out_into_a_missing_folder_or_a_folder_is_a_usage_error(
    server: RunningServer, tmp_path: Path
) -> None:
    async with server.teller() as teller:
        reply = await teller.submit(request(request_id="local-err-image-0001"))
    sha = reply.request.images[0].sha256
    missing = tmp_path / "no" / "such" / "x.jpg"
    for out_path, reason in ((missing, "No such file or directory"), (tmp_path, "Is a directory")):
        code, out, err = await cli(
            "--server", server.target, *me(tmp_path),
            "image", "local-err-image-0001", sha, "--out", str(out_path),
        )  # fmt: skip
        assert (code, out) == (2, ""), err
        assert err == f"authq-teller: --out {out_path}: cannot write it ({reason})\n"
    assert not missing.parent.exists()
