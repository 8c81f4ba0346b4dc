"""authq-admin's branch and user commands, as an operator runs them."""

from __future__ import annotations

import asyncio
import os
import sys

import redis.asyncio as aioredis

from server.accounts.model import Role, Status
from server.accounts.store import AccountStore
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
