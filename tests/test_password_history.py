"""Credentials are personal and rotated (R11): a new password may be none of the
account's last five, whose hashes are kept as the current one is. Accounts stored
before the history was kept have none, and change their password as before."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from authq.v1 import auth_pb2, auth_pb2_grpc

from server.accounts.model import Role
from server.accounts.passwords import reuses
from server.accounts.store import AccountStore
from tests.conftest import PASSWORD, RunningServer

USER = "teller-h"
OWN = [f"own-password-{n}" for n in range(1, 7)]
OK = "OK"
REUSED = (
    "INVALID_ARGUMENT new_password: may not be any of the last 5 passwords of the account "
    "(R11: credentials are rotated)"
)


async def _change(server: RunningServer, old: str, new: str) -> str:
    """OK, or the refusal's status and message."""
    async with grpc.aio.insecure_channel(server.target) as channel:
        change: Any = auth_pb2_grpc.AuthServiceStub(channel).ChangePassword
        request = auth_pb2.ChangePasswordRequest(user_id=USER, old_password=old, new_password=new)
        try:
            reply = await change(request)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name} {exc.details()}"
    assert reply.token
    return OK


async def test_none_of_the_last_five_passwords_comes_back(server: RunningServer) -> None:
    await server.account(USER, [Role.TELLER], "branch-1")
    current = PASSWORD
    for new in OWN[:4]:
        assert await _change(server, current, new) == OK
        current = new
    # The last five: PASSWORD, then OWN[0] to OWN[3], the current one.
    for earlier in [PASSWORD, *OWN[:3]]:
        assert await _change(server, current, earlier) == REUSED
    assert await _change(server, current, OWN[4]) == OK
    # Six back is far enough; five back is not.
    assert await _change(server, OWN[4], PASSWORD) == OK
    assert await _change(server, PASSWORD, OWN[1]) == REUSED


async def test_an_administrators_reset_keeps_the_history(server: RunningServer) -> None:
    await server.account(USER, [Role.TELLER], "branch-1")
    assert await _change(server, PASSWORD, OWN[0]) == OK
    await server.runtime.accounts.reset_password(USER, "set-by-admin-1")
    # The user's own password, which the reset replaced, is one of the last five.
    assert await _change(server, "set-by-admin-1", OWN[0]) == REUSED
    assert await _change(server, "set-by-admin-1", PASSWORD) == REUSED
    assert await _change(server, "set-by-admin-1", OWN[1]) == OK


async def test_an_account_stored_without_a_history_keeps_working(
    server: RunningServer, redis_client: aioredis.Redis
) -> None:
    await server.account(USER, [Role.TELLER], "branch-1")
    key = server.runtime.accounts.keys.account(USER)
    # As stored before the history was kept: the current password's hash alone.
    await redis_client.hdel(key, "pwh")
    assert await redis_client.hget(key, "pw")
    same = await _change(server, PASSWORD, PASSWORD)
    assert same == "INVALID_ARGUMENT new_password: must differ from the old password"
    assert await _change(server, PASSWORD, OWN[0]) == OK
    # From its first change on, what it replaces is kept.
    assert await _change(server, OWN[0], PASSWORD) == REUSED
    assert await _change(server, OWN[0], OWN[1]) == OK


def _reads_wait_for_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever reads the account's password hashes waits until a second one has too:
    two changes at once, each reading before the other writes."""
    both_read = asyncio.Barrier(2)
    read = AccountStore._recent_hashes

    async def read_then_wait(self: AccountStore, user_id: str) -> Sequence[str]:
        hashes = await read(self, user_id)
        await both_read.wait()
        return hashes

    monkeypatch.setattr(AccountStore, "_recent_hashes", read_then_wait)


async def _kept(store: AccountStore, passwords: Sequence[str]) -> None:
    recent = await store._recent_hashes(USER)
    for password in passwords:
        assert await asyncio.to_thread(reuses, password, recent), password
    assert len(recent) == len(passwords)


async def test_two_changes_at_once_both_stay_in_the_history(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await server.account(USER, [Role.TELLER], "branch-1")
    store = server.runtime.accounts
    _reads_wait_for_each_other(monkeypatch)
    await asyncio.gather(
        store.change_password(USER, PASSWORD, OWN[0]),
        store.change_password(USER, PASSWORD, OWN[1]),
    )
    monkeypatch.undo()
    await _kept(store, [PASSWORD, OWN[0], OWN[1]])


async def test_two_resets_at_once_both_stay_in_the_history(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await server.account(USER, [Role.TELLER], "branch-1")
    store = server.runtime.accounts
    _reads_wait_for_each_other(monkeypatch)
    await asyncio.gather(
        store.reset_password(USER, "set-by-admin-1"), store.reset_password(USER, "set-by-admin-2")
    )
    monkeypatch.undo()
    await _kept(store, [PASSWORD, "set-by-admin-1", "set-by-admin-2"])
