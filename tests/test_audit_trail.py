"""Every action reaches the hash-chained audit trail (R15): actor, role, origin,
target and outcome, refusals included; and the chain verifies afterwards."""

from __future__ import annotations

import grpc
import pytest

from authorizer_console.client import AuthorizerClient
from server.accounts.model import Role
from server.store.audit import OUTCOME_OK, OUTCOME_REPEAT
from teller_client.client import TellerClient
from tests.conftest import PASSWORD, RunningServer
from tests.helpers import request, standard_images


async def test_actions_and_refusals_are_audited(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer("auth-9") as authorizer:
        rid = (await teller.submit(request(), standard_images())).request.request_id
        offer = await authorizer.next(timeout=5)
        await authorizer.image(rid, offer.request.images[0].sha256)
        with pytest.raises(grpc.aio.AioRpcError):
            await authorizer.decide(rid, offer.lease.fencing_token, "reject")  # no reason
        await authorizer.decide(rid, offer.lease.fencing_token, "approve")
        with pytest.raises(grpc.aio.AioRpcError):
            await teller.cancel(rid)  # decided already
    await server.runtime.center.flush_audit()
    audit = server.runtime.audit
    records = [record async for record in audit.read()]
    seen = [(r.entry.action, r.entry.actor, r.entry.outcome == "OK") for r in records]
    assert ("SUBMIT", "teller-1", True) in seen
    assert ("CLAIM", "auth-9", True) in seen
    assert ("IMAGE_VIEW", "auth-9", True) in seen
    assert ("DECIDE", "auth-9", False) in seen
    assert ("DECIDE", "auth-9", True) in seen
    assert ("CANCEL", "teller-1", False) in seen
    submit = next(r.entry for r in records if r.entry.action == "SUBMIT")
    assert submit.role == "TELLER"
    assert submit.target == rid
    assert submit.origin.startswith("ipv4:127.0.0.1")
    refused = next(
        r.entry for r in records if r.entry.action == "DECIDE" and r.entry.outcome != "OK"
    )
    assert "reason_code" in refused.outcome
    assert (await audit.verify()).ok


async def test_a_retried_call_is_audited_as_a_repeat_not_as_a_second_action(
    server: RunningServer,
) -> None:
    # A client that lost the reply sends the same call again: the scripts answer it
    # from what was done (submits and decisions are idempotent), and the trail shows
    # the retry without a second action done (R15), so nothing counts it twice.
    req = request()
    async with server.teller() as teller, server.authorizer("auth-9") as authorizer:
        first = await teller.submit(req)
        again = await teller.submit(req)
        assert again.duplicate
        assert again.request.request_id == first.request.request_id
        rid = first.request.request_id
        offer = await authorizer.next(timeout=5)
        await authorizer.decide(rid, offer.lease.fencing_token, "approve")
        await authorizer.decide(rid, offer.lease.fencing_token, "approve")
    await server.runtime.center.flush_audit()
    trail = [(r.entry.action, r.entry.outcome) async for r in server.runtime.audit.read()
             if r.entry.target == rid and r.entry.action in ("SUBMIT", "DECIDE")]  # fmt: skip
    assert trail == [
        ("SUBMIT", OUTCOME_OK),
        ("SUBMIT", OUTCOME_REPEAT),
        ("DECIDE", OUTCOME_OK),
        ("DECIDE", OUTCOME_REPEAT),
    ]


async def test_a_call_outside_ones_role_is_refused_and_audited(server: RunningServer) -> None:
    async with server.teller() as teller:
        center_side = AuthorizerClient(server.target, "teller-1", token=teller.token)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await center_side.next(timeout=2)
        await center_side.close()
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await server.runtime.center.flush_audit()
    records = [record async for record in server.runtime.audit.read()]
    refusal = next(r.entry for r in records if r.entry.action == "AuthorizerService.Next")
    assert refusal.actor == "teller-1"
    assert "R13" in refusal.outcome


async def test_logins_and_logouts_are_audited(server: RunningServer) -> None:
    await server.account("teller-1", [Role.TELLER], "branch-1")
    async with TellerClient(server.target, "teller-1", PASSWORD) as teller:
        await teller.logout()
    with pytest.raises(grpc.aio.AioRpcError):
        await TellerClient(server.target, "teller-1", "not-the-password").login()
    await server.runtime.center.flush_audit()
    records = [r.entry async for r in server.runtime.audit.read()]
    seen = [(e.action, e.actor, e.outcome == "OK") for e in records]
    assert ("LOGIN", "teller-1", True) in seen
    assert ("LOGOUT", "teller-1", True) in seen
    assert ("LOGIN", "teller-1", False) in seen
    failed = next(e for e in records if e.action == "LOGIN" and e.outcome != "OK")
    assert "wrong password" in failed.outcome
    assert failed.origin.startswith("ipv4:127.0.0.1")
