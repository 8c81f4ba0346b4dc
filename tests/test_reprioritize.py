"""Two-person moves up the queue (R6): request, confirm by another, lapse, refusals and
their audit records."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from authq.v1 import supervisor_pb2 as spb
from authq.v1 import supervisor_pb2_grpc

from authorizer_console.client import AuthorizerClient
from server.accounts.model import Role
from server.store.audit import AuditEntry
from teller_client.client import TellerClient
from tests.conftest import PASSWORD, RunningServer, StartServer
from tests.helpers import images, request
from tests.test_cli import run_cli

# importance from the catalog: WEALTH_PURCHASE 1, CASH_DEPOSIT 2, CASH_WITHDRAWAL 3
PLAN = [
    ("high-a-001", "CASH_WITHDRAWAL"),
    ("high-b-001", "CASH_WITHDRAWAL"),
    ("mid-a-0001", "CASH_DEPOSIT"),
    ("low-a-0001", "WEALTH_PURCHASE"),
]
LOW = "low-a-0001"
AT_REVIEW_THRESHOLD = 50_000_000  # CNY 500,000: on-site review first (R2)


async def _fill(server: RunningServer) -> None:
    async with server.teller() as teller:
        for rid, business in PLAN:
            await teller.submit(request(business, request_id=rid))


async def _claim_order(server: RunningServer, count: int) -> list[str]:
    order = []
    async with server.authorizer() as authorizer:
        for _ in range(count):
            offer = await authorizer.next(timeout=5)
            order.append(offer.request.request_id)
    return order


async def _audit(server: RunningServer, *actions: str) -> list[AuditEntry]:
    await server.runtime.center.flush_audit()
    return [
        record.entry
        async for record in server.runtime.audit.read()
        if record.entry.action in actions
    ]


async def _refused(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call  # type: ignore[misc]
    assert failure.value.code() == code, failure.value.details()
    return failure.value.details() or ""


async def test_a_confirmed_move_puts_a_low_item_ahead_of_higher_ones(
    server: RunningServer,
) -> None:
    await _fill(server)
    async with server.supervisor("supervisor-1") as first, server.supervisor("supervisor-2") as s2:
        assert (await first.position(LOW)).position == 3
        pending = await first.request_move(LOW, "branch manager: customer is waiting")
        assert pending.state == spb.MOVE_STATE_PENDING
        assert (pending.requester, pending.confirmer) == ("supervisor-1", "")
        assert pending.expires_at_ms - pending.requested_at_ms == 600_000
        # Nothing moves before the confirmation; the second supervisor sees what awaits.
        assert (await first.position(LOW)).position == 3
        listed = await s2.moves()
        assert [(m.request_id, m.requester, m.position) for m in listed.moves] == [
            (LOW, "supervisor-1", 3)
        ]
        confirmed = await s2.confirm_move(LOW)
        assert confirmed.state == spb.MOVE_STATE_CONFIRMED
        assert (confirmed.requester, confirmed.confirmer) == ("supervisor-1", "supervisor-2")
        assert (confirmed.position, confirmed.waiting) == (0, 4)
        assert (await first.position(LOW)).position == 0
        assert not (await s2.moves()).moves
    # Later work, even the most important, does not overtake the moved item.
    async with server.teller() as teller:
        await teller.submit(request("CASH_WITHDRAWAL", request_id="late-urgent", urgent=True))
    order = await _claim_order(server, 5)
    assert order[0] == LOW
    assert order[1:] == ["late-urgent", "high-a-001", "high-b-001", "mid-a-0001"]
    record = await server.runtime.store.get(LOW)
    moved = [entry for entry in record.history if entry.event == "REPRIORITIZED"]
    assert len(moved) == 1
    assert moved[0].actor == "supervisor-2"
    assert "supervisor-1" in moved[0].note


async def test_the_requester_cannot_confirm_their_own_move(server: RunningServer) -> None:
    await _fill(server)
    await server.account("director-1", [Role.DIRECTOR])
    async with server.supervisor("supervisor-1") as first:
        await first.request_move(LOW, "system warning: deadline at 15:00")
        details = await _refused(first.confirm_move(LOW), grpc.StatusCode.PERMISSION_DENIED)
        assert "R6" in details
        assert "differ" in details
        assert (await first.position(LOW)).position == 3
        # The move still awaits a second person: a director may confirm it.
        assert [m.request_id for m in (await first.moves()).moves] == [LOW]
        async with AuthorizerClient(server.target, "director-1", PASSWORD) as director:
            assert (await director.confirm_move(LOW)).confirmer == "director-1"
        assert (await first.position(LOW)).position == 0


async def test_only_waiting_items_can_be_moved(server: RunningServer) -> None:
    await _fill(server)
    async with server.supervisor("supervisor-1") as first, server.supervisor("supervisor-2") as s2:
        async with server.authorizer() as authorizer:
            offer = await authorizer.next(timeout=5)
            held = offer.request.request_id
            details = await _refused(
                first.request_move(held, "urgent"), grpc.StatusCode.FAILED_PRECONDITION
            )
            assert "CLAIMED" in details
            assert "only waiting items" in details
            # Requested while waiting, claimed before the confirmation: refused too.
            await first.request_move(LOW, "urgent")
            for _ in range(3):
                offer = await authorizer.next(timeout=5)
                if offer.request.request_id == LOW:
                    break
            assert offer.request.request_id == LOW
            details = await _refused(s2.confirm_move(LOW), grpc.StatusCode.FAILED_PRECONDITION)
            assert "CLAIMED" in details
            await authorizer.decide(LOW, offer.lease.fencing_token, "approve")
        details = await _refused(s2.confirm_move(LOW), grpc.StatusCode.FAILED_PRECONDITION)
        assert "APPROVED" in details
        details = await _refused(s2.confirm_move("high-b-001"), grpc.StatusCode.FAILED_PRECONDITION)
        assert "no move" in details


async def test_a_move_needs_a_reason_and_only_one_is_pending(server: RunningServer) -> None:
    await _fill(server)
    async with server.supervisor("supervisor-1") as first, server.supervisor("supervisor-2") as s2:
        details = await _refused(first.request_move(LOW, "  "), grpc.StatusCode.INVALID_ARGUMENT)
        assert "reason" in details
        await first.request_move(LOW, "customer complaint")
        details = await _refused(
            s2.request_move(LOW, "another reason"), grpc.StatusCode.FAILED_PRECONDITION
        )
        assert "already pending" in details
        await _refused(first.request_move("no-such-req", "x"), grpc.StatusCode.NOT_FOUND)


async def test_an_unconfirmed_move_lapses(start_server: StartServer) -> None:
    server = await start_server(move_confirm_window_ms=300)
    await _fill(server)
    async with server.supervisor("supervisor-1") as first, server.supervisor("supervisor-2") as s2:
        await first.request_move(LOW, "customer is waiting")
        await asyncio.sleep(0.5)
        details = await _refused(s2.confirm_move(LOW), grpc.StatusCode.FAILED_PRECONDITION)
        assert "lapsed after 0.3 s" in details
        assert (await first.position(LOW)).position == 3
        # Confirming again is told the same; listing shows nothing.
        details = await _refused(s2.confirm_move(LOW), grpc.StatusCode.FAILED_PRECONDITION)
        assert "lapsed" in details
        assert not (await s2.moves()).moves
        # A lapse nobody tries to confirm is found by the next move call, and a late
        # confirmation is still told that it lapsed.
        await first.request_move("mid-a-0001", "second try")
        await asyncio.sleep(0.5)
        assert not (await s2.moves()).moves
        details = await _refused(s2.confirm_move("mid-a-0001"), grpc.StatusCode.FAILED_PRECONDITION)
        assert "lapsed" in details
        # A new move of the lapsed request may be requested and confirmed.
        await first.request_move(LOW, "asked again")
        assert (await s2.confirm_move(LOW)).position == 0
    lapses = await _audit(server, "REPRIORITIZE_LAPSE")
    assert [(e.target, e.actor, e.details["requester"]) for e in lapses] == [
        (LOW, "system", "supervisor-1"),
        ("mid-a-0001", "system", "supervisor-1"),
    ]
    assert all("LAPSED" in e.outcome for e in lapses)


async def test_tellers_and_authorizers_cannot_move_requests(server: RunningServer) -> None:
    await _fill(server)
    async with server.teller() as teller:
        stub = supervisor_pb2_grpc.SupervisorServiceStub(teller.channel)
        for call in (
            stub.RequestMove(
                spb.RequestMoveRequest(request_id=LOW, reason="me first"),
                metadata=teller.metadata,
            ),
            stub.ListMoves(spb.ListMovesRequest(), metadata=teller.metadata),
        ):
            assert "R13" in await _refused(call, grpc.StatusCode.PERMISSION_DENIED)
    async with server.authorizer() as authorizer:
        details = await _refused(
            authorizer.request_move(LOW, "me first"), grpc.StatusCode.PERMISSION_DENIED
        )
        assert "R13" in details
        await _refused(authorizer.confirm_move(LOW), grpc.StatusCode.PERMISSION_DENIED)
    async with server.supervisor() as supervisor:
        assert not (await supervisor.moves()).moves
        assert (await supervisor.position(LOW)).position == 3


async def test_a_moved_item_handed_back_returns_to_its_new_place(server: RunningServer) -> None:
    await _fill(server)
    async with server.supervisor("supervisor-1") as first, server.supervisor("supervisor-2") as s2:
        await first.request_move(LOW, "customer is waiting")
        await s2.confirm_move(LOW)
        async with server.authorizer() as authorizer:
            offer = await authorizer.next(timeout=5)
            assert offer.request.request_id == LOW
            await authorizer.release(LOW, offer.lease.fencing_token, "need a break")
            assert (await first.position(LOW)).position == 0
            again = await authorizer.next(timeout=5)
            assert again.request.request_id == LOW
            assert [h.event for h in again.request.history][-4:] == [
                "REPRIORITIZED",
                "CLAIMED",
                "RELEASED",
                "CLAIMED",
            ]


@pytest.mark.parametrize("comes_back", ["released", "supplied", "confirmed on site"])
async def test_older_work_coming_back_does_not_overtake_a_moved_item(
    server: RunningServer, comes_back: str
) -> None:
    """An urgent high-importance item outside the queue when the move was confirmed
    (claimed, awaiting images, awaiting the on-site reviewer) comes back to its old
    place, which scored ahead of the moved item's class: the moved item stays first."""
    await server.account("reviewer-1", [Role.ONSITE_REVIEWER], "branch-1")
    async with (
        server.teller() as teller,
        server.authorizer() as authorizer,
        TellerClient(server.target, "reviewer-1", PASSWORD) as reviewer,
    ):
        amount = AT_REVIEW_THRESHOLD if comes_back == "confirmed on site" else 100_000
        urgent = request("CASH_WITHDRAWAL", amount_minor=amount, urgent=True)
        rid = (await teller.submit(urgent)).request.request_id
        if comes_back != "confirmed on site":
            offer = await authorizer.next(timeout=5)
            assert offer.request.request_id == rid
        if comes_back == "supplied":
            await authorizer.decide(
                rid, offer.lease.fencing_token, "ask", kinds=["CUSTOMER_PHOTO"], note="photo"
            )
        await teller.submit(request("WEALTH_PURCHASE", request_id=LOW))
        async with (
            server.supervisor("supervisor-1") as first,
            server.supervisor("supervisor-2") as second,
        ):
            await first.request_move(LOW, "customer is waiting")
            await second.confirm_move(LOW)
            if comes_back == "released":
                await authorizer.release(rid, offer.lease.fencing_token, "need a break")
            elif comes_back == "supplied":
                await teller.supply(rid, images("CUSTOMER_PHOTO", seed=7))
            else:
                checks = ["CASH_RECOUNTED", "IDENTITY_CHECKED"]
                await reviewer.review(rid, confirm=True, checks=checks)
            assert (await first.position(LOW)).position == 0
            assert (await first.position(rid)).position == 1
        offer = await authorizer.next(timeout=5)
    assert offer.request.request_id == LOW


async def test_requests_confirmations_and_refusals_are_audited(server: RunningServer) -> None:
    await _fill(server)
    async with server.supervisor("supervisor-1") as first, server.supervisor("supervisor-2") as s2:
        await _refused(first.request_move(LOW, ""), grpc.StatusCode.INVALID_ARGUMENT)
        await first.request_move(LOW, "customer is waiting")
        await _refused(first.confirm_move(LOW), grpc.StatusCode.PERMISSION_DENIED)
        await s2.confirm_move(LOW)
    entries = await _audit(server, "REPRIORITIZE_REQUEST", "REPRIORITIZE_CONFIRM")
    summary = [(e.action, e.actor, e.target, e.outcome == "OK") for e in entries]
    assert summary == [
        ("REPRIORITIZE_REQUEST", "supervisor-1", LOW, False),
        ("REPRIORITIZE_REQUEST", "supervisor-1", LOW, True),
        ("REPRIORITIZE_CONFIRM", "supervisor-1", LOW, False),
        ("REPRIORITIZE_CONFIRM", "supervisor-2", LOW, True),
    ]
    assert "reason" in entries[0].outcome
    assert entries[1].details["reason"] == "customer is waiting"
    assert "R6" in entries[2].outcome
    assert entries[3].details["requester"] == "supervisor-1"
    assert all(e.role == "SUPERVISOR" and e.origin for e in entries)
    assert (await server.runtime.audit.verify()).ok


async def test_move_confirm_and_moves_from_the_command_line(
    server: RunningServer, tmp_path: Path
) -> None:
    await _fill(server)
    for user in ("supervisor-1", "supervisor-2"):
        await server.account(user, [Role.SUPERVISOR])
    env = {
        "AUTHQ_SERVER": server.target,
        "AUTHQ_STATE_DIR": str(tmp_path / "state"),
        "AUTHQ_PASSWORD": PASSWORD,
    }
    cli = "authorizer_console.cli"
    code, out, err = await run_cli(
        cli, "--user", "supervisor-1", "move", LOW, "--reason", "VIP customer", env=env
    )
    assert code == 0, err
    assert "awaits confirmation" in out
    code, out, err = await run_cli(cli, "--user", "supervisor-2", "moves", env=env)
    assert code == 0, err
    assert LOW in out
    assert "supervisor-1" in out
    code, out, err = await run_cli(cli, "--user", "supervisor-1", "confirm", LOW, env=env)
    assert code == 1
    assert "PERMISSION_DENIED" in err
    assert "R6" in err
    code, out, err = await run_cli(cli, "--user", "supervisor-2", "confirm", LOW, env=env)
    assert code == 0, err
    assert "position 1 of 4" in out
    assert (await server.runtime.store.position(LOW))[1] == 0
