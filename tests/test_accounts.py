"""Personal accounts, login tokens and rights (R11, R12, R13): allowed and refused."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from authq.channel import SessionCallError

from authorizer_console.client import AuthorizerClient
from server.accounts.model import Role, Status
from server.accounts.store import DAY_MS, token_digest
from server.errors import FailedPrecondition, InvalidArgument
from teller_client.client import TellerClient
from tests.conftest import PASSWORD, RunningServer
from tests.helpers import request, until


async def test_login_gives_a_token_and_a_wrong_password_gives_nothing(
    server: RunningServer,
) -> None:
    await server.account("teller-1", [Role.TELLER], "branch-1")
    async with TellerClient(server.target, "teller-1", PASSWORD) as teller:
        reply = teller.login_reply
        assert reply is not None
        assert reply.branch_id == "branch-1"
        assert reply.password_days_left == 90
        # Redis holds the token's hash only.
        assert not await server.runtime.client.exists(f"{{authq}}:token:{reply.token}")
        assert await server.runtime.client.exists(f"{{authq}}:token:{token_digest(reply.token)}")
    for user, password in (("teller-1", "wrong-password"), ("nobody-at-all", PASSWORD)):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            async with TellerClient(server.target, user, password):
                pass
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert failure.value.details() == "unknown user or wrong password"


async def test_calls_without_a_valid_token_are_unauthenticated(server: RunningServer) -> None:
    async with TellerClient(server.target, "teller-1", token="forged-token") as teller:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.submit(request())
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "log in again" in (failure.value.details() or "")


async def _attempt(call: str, client: AuthorizerClient, teller: TellerClient) -> None:
    if call == "next":
        await client.next(timeout=1)
    elif call == "overview":
        await client.overview()
    else:
        await teller.submit(request())


@pytest.mark.parametrize(
    ("role", "call"),
    [
        (Role.TELLER, "next"),
        (Role.TELLER, "overview"),
        (Role.AUTHORIZER, "submit"),
        (Role.AUTHORIZER, "overview"),
        (Role.SUPERVISOR, "next"),
        (Role.SUPERVISOR, "submit"),
    ],
)
async def test_each_role_does_only_what_its_post_needs(
    server: RunningServer, role: Role, call: str
) -> None:
    branch = "branch-1" if role is Role.TELLER else ""
    await server.account(f"user-{role.value.lower()}", [role], branch)
    async with AuthorizerClient(server.target, f"user-{role.value.lower()}", PASSWORD) as client:
        teller = TellerClient(server.target, client.user_id, token=client.token)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await _attempt(call, client, teller)
        await teller.close()
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "R13" in (failure.value.details() or "")
    assert role.value in (failure.value.details() or "")


async def test_a_supervisor_sees_the_queue(server: RunningServer) -> None:
    async with server.teller() as teller:
        await teller.submit(request())
    async with server.supervisor() as supervisor:
        assert (await supervisor.overview()).waiting == 1


async def test_disabling_an_account_revokes_its_tokens_at_once(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        await teller.submit(request())
        async with authorizer.session() as console:
            seen = server.runtime.tokens.generation
            await server.runtime.accounts.set_status("authorizer-1", Status.DISABLED)
            # Redis pushes the revocation to every server process's token cache (a
            # keyspace notification): the next call after it arrives is refused.
            await until(lambda: server.runtime.tokens.generation > seen)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await authorizer.next(timeout=1)
            assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # The open session is closed too, within the revalidation period.
            for _ in range(50):
                if console.failure is not None:
                    break
                await asyncio.sleep(0.1)
            assert console.failure is not None
            assert console.failure.code == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(SessionCallError):
                await console.decide("x" * 10, 1, "approve")
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await authorizer.login()
        assert "disabled" in (failure.value.details() or "")
        await server.runtime.accounts.set_status("authorizer-1", Status.ACTIVE)
        await authorizer.login()
        assert (await authorizer.next(timeout=5)).request.request_id


async def test_a_deregistered_account_never_acts_again(server: RunningServer) -> None:
    await server.account("leaver-1", [Role.AUTHORIZER])
    accounts = server.runtime.accounts
    await accounts.set_status("leaver-1", Status.DEREGISTERED)
    with pytest.raises(FailedPrecondition, match="R12"):
        await accounts.set_status("leaver-1", Status.ACTIVE)
    assert (await accounts.get("leaver-1")).status is Status.DEREGISTERED  # history kept
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async with AuthorizerClient(server.target, "leaver-1", PASSWORD):
            pass
    assert "deregistered" in (failure.value.details() or "")


async def test_old_and_administrator_set_passwords_must_be_changed(
    server: RunningServer,
) -> None:
    await server.account("teller-1", [Role.TELLER], "branch-1")
    old = (await server.runtime.accounts.get("teller-1")).password_set_ms - 91 * DAY_MS
    await server.runtime.client.hset("{authq}:acct:teller-1", "pwat", old)
    client = TellerClient(server.target, "teller-1", PASSWORD)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await client.login()
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "older than 90 days" in (failure.value.details() or "")
    reply = await client.change_password("a-brand-new-password")
    assert reply.token
    assert (await client.submit(request())).request.branch_id == "branch-1"

    await server.runtime.accounts.reset_password("teller-1", "temporary-password-9")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await TellerClient(server.target, "teller-1", "temporary-password-9").login()
    assert "set by an administrator" in (failure.value.details() or "")
    await client.close()


async def test_nobody_holds_conflicting_posts(server: RunningServer) -> None:
    accounts = server.runtime.accounts
    await accounts.create_branch("branch-7", "b7")
    for roles in ([Role.TELLER, Role.AUTHORIZER], [Role.ADMIN, Role.SUPERVISOR], []):
        with pytest.raises(InvalidArgument, match="roles"):
            await accounts.create_user("mixed-1", "M", roles, PASSWORD, branch_id="branch-7")
    with pytest.raises(InvalidArgument, match="at least 10"):
        await accounts.create_user("short-1", "S", [Role.TELLER], "short", branch_id="branch-7")
    created = await accounts.create_user(
        "both-1", "B", [Role.TELLER, Role.ONSITE_REVIEWER], PASSWORD, branch_id="branch-7"
    )
    assert created.roles == {Role.TELLER, Role.ONSITE_REVIEWER}
