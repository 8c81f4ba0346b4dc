"""authq-admin's branch and user commands, as an operator runs them."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from server.accounts.model import Role, Status
from server.accounts.store import AccountStore
from server.admin import cli
from server.policy.loader import DEFAULT_POLICY
from server.store.keys import Keys


async def admin(redis_url: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.admin.cli", "--redis-url", redis_url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env=dict(os.environ),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_an_operator_manages_branches_and_accounts(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    code, out, _ = await admin(redis_url, "branch", "create", "b-100", "--name", "Branch 100")
    assert code == 0
    assert "b-100 created" in out
    code, out, err = await admin(
        redis_url, "user", "create", "auth-100", "--name", "A. Uthorizer",
        "--role", "AUTHORIZER", "--password", "initial-pass-1",
        "--types", "CASH_DEPOSIT,REMITTANCE", "--ceiling", "500000.00",
    )  # fmt: skip
    assert code == 0, err
    assert "AUTHORIZER" in out
    assert "up to 500,000.00 CNY" in out

    accounts = AccountStore(redis_client, Keys())
    account = await accounts.get("auth-100")
    assert account.roles == {Role.AUTHORIZER}
    assert account.must_change_password  # an administrator's password is temporary
    assert account.qualification.ceiling_minor == 50_000_000

    code, _, err = await admin(
        redis_url, "user", "create", "mixed-100", "--name", "M", "--role", "TELLER",
        "--role", "SUPERVISOR", "--branch", "b-100", "--password", "initial-pass-1",
    )  # fmt: skip
    assert code == 1
    assert "R11" in err

    assert (await admin(redis_url, "user", "disable", "auth-100", "--reason", "leave"))[0] == 0
    assert (await accounts.get("auth-100")).status is Status.DISABLED
    code, out, _ = await admin(redis_url, "user", "list")
    assert "auth-100" in out
    assert "DISABLED" in out

    code, out, _ = await admin(redis_url, "audit", "verify")
    assert code == 0
    code, out, _ = await admin(redis_url, "audit", "show", "--json")
    actions = [line for line in out.splitlines() if line.strip()]
    assert any("ACCOUNT_CREATE" in line for line in actions)
    assert any("ACCOUNT_DISABLE" in line for line in actions)


async def test_a_bad_ceiling_is_a_usage_error_naming_the_rule(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    for ceiling in ("abc", "0.001", "nan", "inf", "-5", "1e30", "1.0000000000000000000000000001"):
        code, out, err = await admin(
            redis_url, "user", "create", "auth-15", "--name", "W", "--role", "AUTHORIZER",
            "--types", "CASH_DEPOSIT", f"--ceiling={ceiling}", "--password", "initial-pass-1",
        )  # fmt: skip
        assert code == 2, (ceiling, out, err)
        assert "Traceback" not in err
        assert "error: argument --ceiling: " in err
        assert "expected 0 (no ceiling) or a positive amount in CNY" in err
    assert await AccountStore(redis_client, Keys()).list() == []


async def test_a_large_ceiling_is_stored_and_shown_exactly(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    code, out, err = await admin(
        redis_url, "user", "create", "auth-16", "--name", "W", "--role", "AUTHORIZER",
        "--ceiling", "92233720368547758.07", "--password", "initial-pass-1",
    )  # fmt: skip
    assert code == 0, err
    assert "up to 92,233,720,368,547,758.07 CNY" in out
    account = await AccountStore(redis_client, Keys()).get("auth-16")
    assert account.qualification.ceiling_minor == 2**63 - 1


async def test_qualify_changes_what_it_is_given_and_keeps_the_rest(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    code, _, err = await admin(
        redis_url, "user", "create", "auth-19", "--name", "W", "--role", "AUTHORIZER",
        "--types", "CASH_DEPOSIT,CASH_WITHDRAWAL", "--ceiling", "500000",
        "--password", "initial-pass-1",
    )  # fmt: skip
    assert code == 0, err
    accounts = AccountStore(redis_client, Keys())
    code, out, err = await admin(redis_url, "user", "qualify", "auth-19", "--types", "CASH_DEPOSIT")
    assert code == 0, err
    assert "types CASH_DEPOSIT up to 500,000.00 CNY" in out
    code, out, err = await admin(redis_url, "user", "qualify", "auth-19", "--ceiling", "20000")
    assert code == 0, err
    qualification = (await accounts.get("auth-19")).qualification
    assert qualification.business_types == {"CASH_DEPOSIT"}
    assert qualification.ceiling_minor == 2_000_000
    code, _, err = await admin(redis_url, "user", "qualify", "auth-19")
    assert code == 1
    assert "give --types, --ceiling or both" in err
    assert (await accounts.get("auth-19")).qualification == qualification
    code, out, err = await admin(redis_url, "user", "qualify", "auth-19", "--ceiling", "0")
    assert code == 0, err
    assert (await accounts.get("auth-19")).qualification.ceiling_minor == 0


async def test_unknown_business_types_are_refused_naming_the_valid_ones(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    code, _, err = await admin(
        redis_url, "user", "create", "auth-17", "--name", "W", "--role", "AUTHORIZER",
        "--types", "FOO", "--password", "initial-pass-1",
    )  # fmt: skip
    assert code == 1
    assert "types: unknown business type 'FOO': the valid ones are ACCOUNT_ADJUSTMENT" in err
    assert (await admin(redis_url, "user", "create", "auth-11", "--name", "W", "--role",
                        "AUTHORIZER", "--password", "initial-pass-1"))[0] == 0  # fmt: skip
    code, _, err = await admin(redis_url, "user", "qualify", "auth-11", "--types", "CASH_WITHDRAWL")
    assert code == 1
    assert "unknown business type 'CASH_WITHDRAWL'" in err
    assert "CASH_WITHDRAWAL" in err
    _, out, _ = await admin(redis_url, "user", "list")
    assert "FOO" not in out
    assert "CASH_WITHDRAWL" not in out
    assert [a.user_id for a in await AccountStore(redis_client, Keys()).list()] == ["auth-11"]


async def test_the_business_types_are_those_of_the_policy_given(
    redis_client: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    shipped = DEFAULT_POLICY.read_text()
    policy.write_text(shipped.replace('code = "BATCH_PAYROLL"', 'code = "GOLD_BAR_SALE"'))
    code, _, err = await admin(
        redis_url, "--policy", str(policy), "user", "create", "auth-18", "--name", "W",
        "--role", "AUTHORIZER", "--types", "GOLD_BAR_SALE", "--password", "initial-pass-1",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = await admin(redis_url, "--policy", str(policy), "user", "qualify", "auth-18",
                               "--types", "BATCH_PAYROLL")  # fmt: skip
    assert code == 1
    assert "unknown business type 'BATCH_PAYROLL'" in err
    account = await AccountStore(redis_client, Keys()).get("auth-18")
    assert account.qualification.business_types == {"GOLD_BAR_SALE"}


async def test_help_names_the_data_dir_variable(redis_url: str) -> None:
    code, out, _ = await admin(redis_url, "--help")
    assert code == 0
    assert "$AUTHQ_DATA_DIR" in " ".join(out.split())


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _typed(monkeypatch: pytest.MonkeyPatch, *answers: str) -> list[str]:
    """Puts the command at a terminal where the operator types ``answers``; returns
    the prompts it was shown."""
    prompts: list[str] = []
    typed = iter(answers)

    def getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(typed)

    monkeypatch.setattr(sys, "stdin", _Terminal())
    monkeypatch.setattr("getpass.getpass", getpass)
    return prompts


async def test_a_prompted_password_is_asked_twice_and_must_match(
    redis_client: aioredis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    create = ["--redis-url", redis_url, "user", "create", "auth-19", "--name", "W",
              "--role", "AUTHORIZER"]  # fmt: skip
    prompts = _typed(monkeypatch, "initial-pass-1", "initial-pass-2")
    with pytest.raises(SystemExit, match="the two passwords differ"):
        await asyncio.to_thread(cli.main, create)
    assert len(prompts) == 2
    assert await AccountStore(redis_client, Keys()).list() == []

    _typed(monkeypatch, "initial-pass-1", "initial-pass-1")
    assert await asyncio.to_thread(cli.main, create) == 0
    accounts = AccountStore(redis_client, Keys())
    await accounts.change_password("auth-19", "initial-pass-1", "own-pass-19")
