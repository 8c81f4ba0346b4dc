"""`passwd` on both command lines (R11): an account an administrator created, or a
password that expired, logs in only after its owner chooses a new password."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.accounts.login_lock import LoginRefused
from server.accounts.model import Role
from server.accounts.store import DAY_MS
from tests.conftest import PASSWORD, RunningServer
from tests.test_cli import run_cli

SET_BY_ADMIN = "set-by-admin-1"
CHOSEN = "chosen-by-me-22"
# (command line, account, role, branch)
PEOPLE = [
    ("teller_client.cli", "teller-9", Role.TELLER, "branch-1"),
    ("authorizer_console.cli", "auth-9", Role.AUTHORIZER, ""),
]


async def _created_by_admin(server: RunningServer, user: str, role: Role, branch: str) -> None:
    accounts = server.runtime.accounts
    if branch and not await accounts.branch_exists(branch):
        await accounts.create_branch(branch, branch)
    # As `authq-admin user create` does: the owner must choose a password first.
    await accounts.create_user(user, user, [role], SET_BY_ADMIN, branch_id=branch)


def _env(server: RunningServer, tmp_path: Path) -> dict[str, str]:
    return {"AUTHQ_SERVER": server.target, "AUTHQ_STATE_DIR": str(tmp_path / "state")}


@pytest.mark.parametrize(("module", "user", "role", "branch"), PEOPLE)
async def test_an_account_an_administrator_created_logs_in_after_passwd(
    server: RunningServer, tmp_path: Path, module: str, user: str, role: Role, branch: str
) -> None:
    await _created_by_admin(server, user, role, branch)
    env = _env(server, tmp_path)
    prog = "authq-teller" if module.startswith("teller") else "authq-authorizer"

    code, _, err = await run_cli(module, "--user", user, "--password", SET_BY_ADMIN, "login",
                                 env=env)  # fmt: skip
    assert code == 1
    assert err.strip().count("\n") == 0
    assert "set by an administrator" in err
    assert f"`{prog} passwd`" in err

    code, out, err = await run_cli(
        module, "--user", user, "--password", SET_BY_ADMIN, "passwd", "--new-password", CHOSEN,
        env=env,
    )  # fmt: skip
    assert code == 0, err
    assert f"password of {user} changed" in out
    # passwd left a login behind: the next command needs no password.
    code, out, err = await run_cli(module, "--user", user, "login", env=env)
    assert (code, out.strip()) == (0, f"logged in as {user}"), err
    code, _, err = await run_cli(module, "--user", user, "--password", CHOSEN, "login", env=env)
    assert code == 0, err


async def test_an_expired_password_is_changed_with_passwd(
    server: RunningServer, tmp_path: Path
) -> None:
    await server.account("auth-9", [Role.AUTHORIZER])
    old = (await server.runtime.accounts.get("auth-9")).password_set_ms - 91 * DAY_MS
    await server.runtime.client.hset("{authq}:acct:auth-9", "pwat", old)
    env = {**_env(server, tmp_path), "AUTHQ_PASSWORD": PASSWORD, "AUTHQ_NEW_PASSWORD": CHOSEN}

    code, _, err = await run_cli("authorizer_console.cli", "--user", "auth-9", "login", env=env)
    assert code == 1
    assert "older than 90 days" in err
    assert "`authq-authorizer passwd`" in err
    code, out, err = await run_cli("authorizer_console.cli", "--user", "auth-9", "passwd", env=env)
    assert code == 0, err
    assert "AUTHQ_PASSWORD still holds the old one" in out


async def test_passwd_says_why_the_server_refused(server: RunningServer, tmp_path: Path) -> None:
    await _created_by_admin(server, "teller-9", Role.TELLER, "branch-1")
    env = _env(server, tmp_path)

    async def passwd(current: str, new: str) -> tuple[int, str]:
        code, _, err = await run_cli(
            "teller_client.cli", "--user", "teller-9", "--password", current,
            "passwd", "--new-password", new, env=env,
        )  # fmt: skip
        assert err.strip().count("\n") == 0
        return code, err

    code, err = await passwd(SET_BY_ADMIN, "short")
    assert code == 1
    assert "new password is not accepted (a password needs at least 10 characters)" in err
    code, err = await passwd(SET_BY_ADMIN, "teller-9-is-me")
    assert code == 1
    assert "may not contain the user id" in err
    code, err = await passwd(SET_BY_ADMIN, SET_BY_ADMIN)
    assert code == 1
    assert "new password is not accepted (must differ from the old password)" in err
    code, err = await passwd("not-my-password", CHOSEN)
    assert code == 1
    assert "current password is not accepted (unknown user or wrong password)" in err
    assert "nothing was changed" in err
    # None of that changed anything: the administrator's password still works.
    code, err = await passwd(SET_BY_ADMIN, CHOSEN)
    assert code == 0, err


async def test_passwd_without_a_terminal_needs_the_new_password_given(
    server: RunningServer, tmp_path: Path
) -> None:
    await _created_by_admin(server, "teller-9", Role.TELLER, "branch-1")
    code, _, err = await run_cli(
        "teller_client.cli", "--user", "teller-9", "--password", SET_BY_ADMIN, "passwd",
        env=_env(server, tmp_path),
    )  # fmt: skip
    assert code == 2
    assert "no new password: pass --new-password, set AUTHQ_NEW_PASSWORD" in err


@pytest.mark.parametrize(("module", "user", "role", "branch"), PEOPLE)
async def test_a_locked_login_is_said_in_one_line_by_login_and_passwd(
    server: RunningServer, tmp_path: Path, module: str, user: str, role: Role, branch: str
) -> None:
    await _created_by_admin(server, user, role, branch)
    for _ in range(server.runtime.settings.login_failures_before_lock):
        with pytest.raises(LoginRefused):
            await server.runtime.accounts.login(user, "not-the-password")
    env = _env(server, tmp_path)

    code, _, err = await run_cli(module, "--user", user, "--password", SET_BY_ADMIN, "login",
                                 env=env)  # fmt: skip
    assert code == 1
    assert err.strip().count("\n") == 0
    assert f"logins as {user} are locked" in err

    code, _, err = await run_cli(
        module, "--user", user, "--password", SET_BY_ADMIN, "passwd", "--new-password", CHOSEN,
        env=env,
    )  # fmt: skip
    assert code == 1
    assert err.strip().count("\n") == 0
    assert f"logins as {user} are locked" in err
    assert "nothing was changed" in err
