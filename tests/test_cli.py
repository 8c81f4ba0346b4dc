"""The two command lines, run as a person would, against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from server.accounts.model import Role
from tests.conftest import PASSWORD, RunningServer


async def run_cli(
    module: str, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        # Never a terminal: a command missing a password must say so, not prompt.
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("module", ["teller_client.cli", "authorizer_console.cli", "server.main"])
async def test_every_command_has_help(module: str) -> None:
    code, out, _ = await run_cli(module, "--help")
    assert code == 0
    assert "usage:" in out


async def _cli_env(server: RunningServer, tmp_path: Path) -> dict[str, str]:
    await server.account("teller-1", [Role.TELLER], "branch-1")
    await server.account("authorizer-1", [Role.AUTHORIZER])
    return {
        "AUTHQ_SERVER": server.target,
        "AUTHQ_STATE_DIR": str(tmp_path / "state"),
        "AUTHQ_PASSWORD": PASSWORD,
    }


async def test_a_first_session_with_both_command_lines(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    teller = ("teller_client.cli",)
    authorizer = ("authorizer_console.cli",)
    code, out, _ = await run_cli(*teller, "demo-images", str(tmp_path / "imgs"), env=env)
    assert code == 0
    assert "id_front.jpg" in out

    code, out, err = await run_cli(
        *teller,
        "--json",
        "submit",
        "--type",
        "CASH_WITHDRAWAL",
        "--amount",
        "12000.50",
        "--account",
        "6222020200001234",
        "--customer",
        "Zhang San",
        "--image",
        f"ID_FRONT={tmp_path / 'imgs' / 'id_front.jpg'}",
        "--image",
        f"ID_BACK={tmp_path / 'imgs' / 'id_back.jpg'}",
        "--image",
        f"VOUCHER={tmp_path / 'imgs' / 'voucher.jpg'}",
        env=env,
    )
    assert code == 0, err
    submitted = json.loads(out)
    rid = submitted["request"]["requestId"]
    assert submitted["request"]["transaction"]["amount"]["minorUnits"] == "1200050"

    images_dir = tmp_path / "got"
    code, out, err = await run_cli(
        *authorizer, "next", "--images-dir", str(images_dir), "--timeout", "10", env=env
    )
    assert code == 0, err
    assert rid in out
    assert "12,000.50 CNY" in out
    assert "6222********1234" in out
    assert sorted(p.name for p in (images_dir / rid).iterdir()) == [
        "01-id_front-preview.jpg",
        "02-id_back-preview.jpg",
        "03-voucher-preview.jpg",
    ]

    # The shared image command: the holder saves a preview, the branch the original.
    front = submitted["request"]["images"][0]["sha256"]
    code, out, err = await run_cli(
        *authorizer, "image", rid, front, "--out", str(tmp_path / "front.jpg"), env=env
    )
    assert code == 0, err
    assert f"preview of {front[:12]} written to" in out
    assert (tmp_path / "front.jpg").read_bytes()[:2] == b"\xff\xd8"
    code, out, err = await run_cli(
        *teller, "image", rid, front, "--rendition", "original",
        "--out", str(tmp_path / "original.jpg"), env=env,
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "original.jpg").read_bytes() == (
        tmp_path / "imgs" / "id_front.jpg"
    ).read_bytes()

    code, out, err = await run_cli(
        *authorizer, "reject", rid, "--reason", "ID_MISMATCH", "--note", "photo differs", env=env
    )
    assert code == 0, err
    assert "REJECTED" in out

    code, out, _ = await run_cli(*teller, "watch", rid, env=env)
    assert code == 3  # decided, but not approved
    assert "ID_MISMATCH" in out
    assert "photo differs" in out


async def test_failures_exit_non_zero_with_one_line(server: RunningServer, tmp_path: Path) -> None:
    env = await _cli_env(server, tmp_path)
    code, _, err = await run_cli(
        "teller_client.cli",
        "submit",
        "--type",
        "LOTTERY",
        "--amount",
        "1",
        "--account",
        "6222020200001234",
        "--customer",
        "X",
        env=env,
    )
    assert code == 1
    assert err.strip().count("\n") == 0
    assert "INVALID_ARGUMENT" in err
    assert "business_type" in err

    code, _, err = await run_cli("teller_client.cli", "cancel", "no-such-request", env=env)
    assert code == 1
    assert "NOT_FOUND" in err

    code, _, err = await run_cli("authorizer_console.cli", "approve", "no-such-request", env=env)
    assert code == 1
    assert "NOT_FOUND" in err
    assert "no-such-request" in err

    code, _, err = await run_cli(
        "teller_client.cli",
        "submit",
        "--type",
        "CASH_DEPOSIT",
        "--amount",
        "1.234",
        "--account",
        "6222020200001234",
        "--customer",
        "X",
        env=env,
    )
    assert code == 2
    assert "more than 2 decimals" in err
