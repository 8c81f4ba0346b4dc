"""Passwords and sessions against an administrator's changes (R11, R12): a password is
refused from the moment it is older than the maximum age, and its days left are rounded
up; a reset ends the sessions of the old password; and a login or ChangePassword whose
scrypt check runs while the account is disabled, deregistered or reset gets no session
and writes nothing (server/lua/session_open.lua checks the account in the step that
writes)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from authq.refusals import Refusal, refusal_of

import server.accounts.store as account_store
from authorizer_console.client import AuthorizerClient
from server.accounts.model import Role, Status
from server.accounts.passwords import REUSE_DEPTH, hash_password, verify_password
from server.accounts.store import DAY_MS, token_digest
from server.store.audit_records import StagedAudit
from server.store.keys import Keys
from server.store.queue_reads import as_text
from server.store.scripts import REPEAT_SAFE, load_script
from server.store.staging import run_audited
from teller_client.client import TellerClient
from tests.conftest import PASSWORD, RunningServer
from tests.helpers import request, until

HOUR_MS = 3_600_000
NEW_PASSWORD = "a-fresh-password-77"


async def _refused(call: Awaitable[Any], code: grpc.StatusCode) -> tuple[Refusal | None, str]:
    """The refusal the call ended with, and its message."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    assert failure.value.code() == code
    return refusal_of(failure.value), failure.value.details() or ""


def _hold(monkeypatch: pytest.MonkeyPatch, name: str) -> tuple[threading.Event, threading.Event]:
    """Holds store.<name>, which the server runs in a thread during a login or a
    password change, until released: the ~40 ms scrypt check during which an
    administrator's change can land, made as long as the test needs."""
    entered, release = threading.Event(), threading.Event()
    original = getattr(account_store, name)

    def held(*args: object) -> object:
        entered.set()
        release.wait(10)
        return original(*args)

    monkeypatch.setattr(account_store, name, held)
    return entered, release


async def _while_held(
    monkeypatch: pytest.MonkeyPatch, name: str, call: Awaitable[Any], change: Awaitable[Any]
) -> asyncio.Task[Any]:
    """Starts ``call``, makes the administrator's ``change`` while its ``name`` step is
    held, then lets it go on; the call's task, to await."""
    entered, release = _hold(monkeypatch, name)
    task = asyncio.ensure_future(call)
    try:
        await until(entered.is_set)
        await change
    finally:
        release.set()
    return task


async def _age_password(server: RunningServer, user: str, age_ms: int) -> None:
    set_ms = account_store._now_ms() - age_ms
    await server.runtime.client.hset(server.runtime.store.keys.account(user), "pwat", set_ms)


async def _tokens(server: RunningServer, user: str) -> set[str]:
    tokens = await server.runtime.client.smembers(server.runtime.store.keys.account_tokens(user))
    return {as_text(token) for token in tokens}


# -- the password's age ---------------------------------------------------------------


async def test_a_password_hours_past_the_maximum_age_must_be_changed(
    server: RunningServer,
) -> None:
    """Older than 90 days by an hour, not a whole day: refused all the same."""
    await server.account("teller-old", [Role.TELLER], "branch-1")
    await _age_password(server, "teller-old", 90 * DAY_MS + HOUR_MS)
    client = TellerClient(server.target, "teller-old", PASSWORD)
    said, message = await _refused(client.login(), grpc.StatusCode.FAILED_PRECONDITION)
    assert said == Refusal("PASSWORD_CHANGE_REQUIRED", {"user_id": "teller-old", "why": "expired"})
    assert "older than 90 days" in message
    assert await _tokens(server, "teller-old") == set()
    assert (await client.change_password(NEW_PASSWORD)).password_days_left == 90
    await client.close()


async def test_the_days_left_are_rounded_up(server: RunningServer) -> None:
    """On its last day (hours left) a password has a day left, not none."""
    await server.account("teller-last", [Role.TELLER], "branch-1")
    for age_ms, days_left in ((90 * DAY_MS - HOUR_MS, 1), (10 * DAY_MS + 12 * HOUR_MS, 80)):
        await _age_password(server, "teller-last", age_ms)
        async with TellerClient(server.target, "teller-last", PASSWORD) as teller:
            assert teller.login_reply is not None
            assert teller.login_reply.password_days_left == days_left


# -- an administrator's reset ---------------------------------------------------------


async def test_a_reset_ends_every_session_of_the_old_password(server: RunningServer) -> None:
    await server.account("teller-reset", [Role.TELLER], "branch-1")
    async with (
        TellerClient(server.target, "teller-reset", PASSWORD) as first,
        TellerClient(server.target, "teller-reset", PASSWORD) as second,
    ):
        await first.submit(request())
        tokens = [first.token, second.token]
        await server.runtime.accounts.reset_password("teller-reset", "temporary-pass-42")
        assert await _tokens(server, "teller-reset") == set()
        for token in tokens:
            assert token
            assert await server.runtime.accounts.authenticate(token) is None
        said, _ = await _refused(first.submit(request()), grpc.StatusCode.UNAUTHENTICATED)
        assert said is not None
        assert said.reason == "TOKEN_INVALID"
    account = await server.runtime.accounts.get("teller-reset")
    assert account.must_change_password


# -- a login or password change racing an administrator's change -----------------------


async def test_a_login_racing_a_disable_is_refused_and_leaves_no_token(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await server.account("teller-race", [Role.TELLER], "branch-1")
    accounts = server.runtime.accounts
    client = TellerClient(server.target, "teller-race", PASSWORD)
    login = await _while_held(monkeypatch, "verify_password", client.login(),
                              accounts.set_status("teller-race", Status.DISABLED))  # fmt: skip
    said, message = await _refused(login, grpc.StatusCode.UNAUTHENTICATED)
    assert said == Refusal("LOGIN_REFUSED")
    assert message == "account teller-race is disabled (R12)"
    assert not client.token
    assert await _tokens(server, "teller-race") == set()
    # Enabled again, the account logs in afresh: no token of the leave comes back.
    monkeypatch.undo()
    await accounts.set_status("teller-race", Status.ACTIVE)
    await client.login()
    assert await _tokens(server, "teller-race") == {
        server.runtime.store.keys.token(token_digest(client.token))
    }
    await client.close()


async def test_a_login_racing_a_reset_is_refused(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await server.account("teller-reset", [Role.TELLER], "branch-1")
    client = TellerClient(server.target, "teller-reset", PASSWORD)
    reset = server.runtime.accounts.reset_password("teller-reset", "temporary-pass-42")
    login = await _while_held(monkeypatch, "verify_password", client.login(), reset)
    said, message = await _refused(login, grpc.StatusCode.UNAUTHENTICATED)
    assert (said, message) == (Refusal("LOGIN_REFUSED"), "unknown user or wrong password")
    assert await _tokens(server, "teller-reset") == set()
    await client.close()


async def test_a_password_change_racing_deregistration_changes_nothing(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await server.account("leaver-9", [Role.AUTHORIZER])
    key = server.runtime.store.keys.account("leaver-9")
    await server.runtime.client.hset(key, "mc", "1")  # as an administrator created it
    before = await server.runtime.client.hgetall(key)
    client = AuthorizerClient(server.target, "leaver-9", PASSWORD)
    leave = server.runtime.accounts.set_status("leaver-9", Status.DEREGISTERED)
    change = await _while_held(monkeypatch, "reuses", client.change_password(NEW_PASSWORD), leave)
    said, message = await _refused(change, grpc.StatusCode.UNAUTHENTICATED)
    assert (said, message) == (Refusal("LOGIN_REFUSED"), "account leaver-9 is deregistered (R12)")
    await client.close()
    assert await server.runtime.client.hgetall(key) == {**before, b"st": b"DEREGISTERED"}
    assert await _tokens(server, "leaver-9") == set()


async def test_a_password_change_racing_a_reset_keeps_the_administrators_password(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await server.account("teller-both", [Role.TELLER], "branch-1")
    key = server.runtime.store.keys.account("teller-both")
    client = TellerClient(server.target, "teller-both", PASSWORD)
    reset = server.runtime.accounts.reset_password("teller-both", "temporary-pass-42")
    change = await _while_held(monkeypatch, "reuses", client.change_password(NEW_PASSWORD), reset)
    said, _ = await _refused(change, grpc.StatusCode.UNAUTHENTICATED)
    assert said == Refusal("LOGIN_REFUSED")
    await client.close()
    after = await server.runtime.client.hgetall(key)
    assert after[b"mc"] == b"1"
    assert verify_password("temporary-pass-42", as_text(after[b"pw"]))
    assert await _tokens(server, "teller-both") == set()


# -- the step sent again ---------------------------------------------------------------


async def test_a_session_step_sent_again_answers_as_it_did_and_changes_nothing(
    redis_client: aioredis.Redis,
) -> None:
    """The pipe sends a repeat-safe script again when its reply was lost: the second run
    finds its token's key set, answers OK and writes and stages nothing more, though the
    password it set is no longer the one verified."""
    keys = Keys()
    accounts = account_store.AccountStore(redis_client, keys)
    await accounts.create_user("auth-again", "A", [Role.AUTHORIZER], PASSWORD,
                               must_change_password=False)  # fmt: skip
    account_key = keys.account("auth-again")
    verified = as_text(await redis_client.hget(account_key, "pw"))
    new_hash = hash_password(NEW_PASSWORD)
    token_key = keys.token(token_digest("a-token"))
    step = load_script(redis_client, "session_open")
    assert "session_open" in REPEAT_SAFE
    script_keys = [account_key, keys.account_tokens("auth-again"), token_key]
    args = [verified, "auth-again", 60, new_hash, 1, REUSE_DEPTH - 1]
    first, again = StagedAudit(b"a record"), StagedAudit(b"a record")
    assert await run_audited(step, keys.audit_staged, first, list(script_keys), list(args))
    assert first.staged
    written = (await redis_client.hgetall(account_key), await redis_client.xlen(keys.audit_staged))
    result = await run_audited(step, keys.audit_staged, again, list(script_keys), list(args))
    assert [bytes(r) for r in result] == [b"OK"]
    assert again.staged
    assert written == (await redis_client.hgetall(account_key),
                       await redis_client.xlen(keys.audit_staged))  # fmt: skip
    assert written[0][b"pw"] == new_hash.encode()
    assert written[1] == 1
    assert await redis_client.get(token_key) == b"auth-again"
