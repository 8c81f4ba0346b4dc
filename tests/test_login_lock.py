"""Login throttling (R11: credentials are personal): after login_failures_before_lock
wrong passwords in a row for a user id, known or not, its Login and ChangePassword are
refused with LOGIN_LOCKED for login_lock_s, before any scrypt check; a login clears the
count, an administrator's reset or enable the lock; each lock is audited once (R15)."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from authq.refusals import Refusal, refusal_of

import server.accounts.store as account_store
from server.accounts.model import Role, Status
from server.accounts.passwords import verify_password
from server.settings import Settings, SettingsError
from teller_client.client import TellerClient
from tests.conftest import PASSWORD, RunningServer, StartServer
from tests.helpers import until

WRONG = "not-the-password-1"
LOCKED_3 = Refusal("LOGIN_LOCKED", {"seconds_left": "900"})


async def _refused(server: RunningServer, user: str, password: str) -> tuple[Refusal | None, str]:
    """The refusal of a Login as ``user`` with ``password``, and its message."""
    client = TellerClient(server.target, user, password)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await client.login()
    finally:
        await client.close()
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return refusal_of(failure.value), failure.value.details() or ""


async def _logs_in(server: RunningServer, user: str) -> None:
    async with TellerClient(server.target, user, PASSWORD) as client:
        assert client.token


def _count_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The passwords the server runs the scrypt check for, from now on."""
    checked: list[str] = []

    def counted(password: str, stored: str) -> bool:
        checked.append(password)
        return verify_password(password, stored)

    monkeypatch.setattr(account_store, "verify_password", counted)
    return checked


async def _locked(start_server: StartServer, user: str = "teller-lock") -> RunningServer:
    """A server that locks after 3 wrong passwords, and ``user`` locked on it."""
    server = await start_server(login_failures_before_lock=3)
    await server.account(user, [Role.TELLER], "branch-1")
    for _ in range(3):
        await _refused(server, user, WRONG)
    return server


async def test_the_third_wrong_password_in_a_row_locks_the_id(start_server: StartServer) -> None:
    server = await start_server(login_failures_before_lock=3)
    await server.account("teller-lock", [Role.TELLER], "branch-1")
    answers = [await _refused(server, "teller-lock", WRONG) for _ in range(3)]
    assert [said for said, _ in answers] == [Refusal("LOGIN_REFUSED")] * 2 + [LOCKED_3]
    assert answers[2][1] == (
        "logins as teller-lock are locked after 3 wrong passwords in a row: try again in "
        "900 s, or ask an administrator to reset the password (R11)"
    )


async def test_a_locked_id_refuses_the_right_password_without_checking_it(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await _locked(start_server)
    checked = _count_checks(monkeypatch)
    said, _ = await _refused(server, "teller-lock", PASSWORD)
    assert said == LOCKED_3
    assert checked == []


async def test_a_locked_id_refuses_a_password_change_without_checking_it(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await _locked(start_server)
    checked = _count_checks(monkeypatch)
    client = TellerClient(server.target, "teller-lock", PASSWORD)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await client.change_password("a-fresh-password-77")
    await client.close()
    assert refusal_of(failure.value) == LOCKED_3
    assert checked == []


async def test_wrong_old_passwords_of_a_password_change_count_too(
    start_server: StartServer,
) -> None:
    server = await start_server(login_failures_before_lock=3)
    await server.account("teller-lock", [Role.TELLER], "branch-1")
    said = []
    for _ in range(3):
        client = TellerClient(server.target, "teller-lock", WRONG)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await client.change_password("a-fresh-password-77")
        await client.close()
        said.append(refusal_of(failure.value))
    assert said == [Refusal("LOGIN_REFUSED")] * 2 + [LOCKED_3]
    assert (await _refused(server, "teller-lock", PASSWORD))[0] == LOCKED_3


async def test_an_unknown_id_is_answered_and_locked_as_a_known_one(
    start_server: StartServer,
) -> None:
    server = await start_server(login_failures_before_lock=3)
    await server.account("teller-known", [Role.TELLER], "branch-1")
    known = [await _refused(server, "teller-known", WRONG) for _ in range(4)]
    unknown = [await _refused(server, "teller-nobody", WRONG) for _ in range(4)]
    assert unknown == [(said, message.replace("teller-known", "teller-nobody"))
                       for said, message in known]  # fmt: skip
    assert unknown[-1][0] == LOCKED_3


async def test_an_unknown_ids_count_has_a_lifetime(start_server: StartServer) -> None:
    """Ids nobody holds are counted too: each key goes with its TTL, none piles up."""
    server = await start_server(login_failures_before_lock=3, login_lock_s=600)
    await _refused(server, "teller-nobody", WRONG)
    key = server.runtime.store.keys.login_failures("teller-nobody")
    assert 0 < await server.runtime.client.ttl(key) <= 600


async def test_an_id_no_account_can_have_is_not_counted(start_server: StartServer) -> None:
    """Longer than any user id: nothing to guess, and no key named by it is kept."""
    server = await start_server(login_failures_before_lock=3)
    long_id = "x" * 200
    said = [(await _refused(server, long_id, WRONG))[0] for _ in range(4)]
    assert said == [Refusal("LOGIN_REFUSED")] * 4
    assert not await server.runtime.client.exists(server.runtime.store.keys.login_failures(long_id))


async def test_a_login_before_the_limit_starts_the_count_again(
    start_server: StartServer,
) -> None:
    server = await start_server(login_failures_before_lock=3)
    await server.account("teller-lock", [Role.TELLER], "branch-1")
    for _ in range(2):
        await _refused(server, "teller-lock", WRONG)
    await _logs_in(server, "teller-lock")
    said = [(await _refused(server, "teller-lock", WRONG))[0] for _ in range(2)]
    assert said == [Refusal("LOGIN_REFUSED")] * 2
    await _logs_in(server, "teller-lock")


async def test_an_administrators_reset_ends_the_lock(start_server: StartServer) -> None:
    server = await _locked(start_server)
    await server.runtime.accounts.reset_password("teller-lock", "temporary-pass-42")
    client = TellerClient(server.target, "teller-lock", "temporary-pass-42")
    reply = await client.change_password("a-fresh-password-77")
    await client.close()
    assert reply.token


async def test_an_administrators_enable_ends_the_lock(start_server: StartServer) -> None:
    """Enabling an account that is active already is how an administrator unlocks it
    without a new password."""
    server = await _locked(start_server)
    await server.runtime.accounts.set_status("teller-lock", Status.ACTIVE)
    await _logs_in(server, "teller-lock")


async def test_other_account_changes_keep_the_lock(start_server: StartServer) -> None:
    server = await _locked(start_server, "auth-lock")
    await server.runtime.accounts.set_roles("auth-lock", [Role.TELLER])
    assert (await _refused(server, "auth-lock", PASSWORD))[0] == LOCKED_3


async def test_the_lock_ends_with_its_time(start_server: StartServer) -> None:
    server = await _locked(start_server)
    key = server.runtime.store.keys.login_failures("teller-lock")
    assert await server.runtime.client.pexpire(key, 1)
    async with asyncio.timeout(10):
        while await server.runtime.client.exists(key):
            await asyncio.sleep(0.01)
    await _logs_in(server, "teller-lock")


async def test_the_lock_is_audited_once(start_server: StartServer) -> None:
    server = await _locked(start_server)
    for password in (WRONG, PASSWORD):
        await _refused(server, "teller-lock", password)
    await server.runtime.center.flush_audit()
    assert server.runtime.audit is not None
    records = [r.entry async for r in server.runtime.audit.read()]
    locks = [e for e in records if e.action == "LOGIN_LOCK"]
    assert [(e.actor, e.target, dict(e.details)) for e in locks] == [
        ("teller-lock", "teller-lock", {"failures": 3, "lock_s": 900})
    ]
    assert locks[0].origin.startswith("ipv4:127.0.0.1")
    refused = [e.outcome for e in records if e.action == "LOGIN" and "locked" in e.outcome]
    assert len(refused) == 3  # the attempt that locked, and the two refused after it


async def test_a_lock_begun_during_the_check_refuses_the_right_password(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wrong passwords that lock the id while a right one is being checked: no session
    (session_open.lua reads the lock in the step that would open it)."""
    server = await start_server(login_failures_before_lock=3)
    await server.account("teller-race", [Role.TELLER], "branch-1")
    entered, release = threading.Event(), threading.Event()

    def held(password: str, stored: str) -> bool:
        if password == PASSWORD:
            entered.set()
            release.wait(10)
        return verify_password(password, stored)

    monkeypatch.setattr(account_store, "verify_password", held)
    login = asyncio.ensure_future(_refused(server, "teller-race", PASSWORD))
    try:
        await until(entered.is_set)
        for _ in range(3):
            await _refused(server, "teller-race", WRONG)
    finally:
        release.set()
    assert (await login)[0] == Refusal("LOGIN_LOCKED", {"seconds_left": "900"})
    tokens = server.runtime.store.keys.account_tokens("teller-race")
    assert not await server.runtime.client.exists(tokens)


async def test_a_wrong_password_landing_during_the_lock_does_not_extend_it(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its check began before the lock did: it is answered as locked, and the lock
    still ends when it was to."""
    server = await start_server(login_failures_before_lock=3)
    key = server.runtime.store.keys.login_failures("teller-late")
    entered, release = threading.Event(), threading.Event()

    def held(password: str, stored: str) -> bool:
        entered.set()
        release.wait(10)
        return verify_password(password, stored)

    monkeypatch.setattr(account_store, "verify_password", held)
    late = asyncio.ensure_future(_refused(server, "teller-late", WRONG))
    try:
        await until(entered.is_set)
        # As the failures that ran meanwhile left it: locked, 60 s to go.
        await server.runtime.client.hset(key, mapping={"n": 3, "lk": 1})
        await server.runtime.client.expire(key, 60)
    finally:
        release.set()
    said, _ = await late
    assert said is not None
    assert said.reason == "LOGIN_LOCKED"
    assert 0 < await server.runtime.client.ttl(key) <= 60


@pytest.mark.parametrize("key", ["login_failures_before_lock", "login_lock_s"])
def test_each_lock_setting_is_at_least_one(key: str) -> None:
    with pytest.raises(SettingsError, match=f"{key}: must be positive"):
        Settings.load(overrides={key: 0})
