"""An item whose image check cannot finish (the blob store out of reach) holds up
nobody: its claim is held for a pause growing with its failures in a row, then put
back, while the authorizer who claimed it goes on to the items behind it. Once the
fault clears it is offered and decided as any other (server/dispatch.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from authq.v1 import common_pb2 as cpb

from server import dispatch
from server.blobs import LocalBlobStore
from server.dispatch import GateFailures
from server.domain.states import State
from server.images.checker import ImageChecker
from teller_client.client import TellerClient
from tests.conftest import RunningServer, StartServer
from tests.helpers import images, request, request_with_front, store_unchecked, until


def _checker(server: RunningServer) -> ImageChecker:
    checker = server.runtime.center.images
    assert checker is not None
    return checker


def _store_taken_away(server: RunningServer, aside: Path) -> Callable[[], None]:
    """Takes the whole blob store away, as an unmounted share would; returns what
    brings it back."""
    blobs = server.runtime.center.blobs
    assert isinstance(blobs, LocalBlobStore)
    moved = aside / blobs.root.name
    blobs.root.rename(moved)

    def restore() -> None:
        moved.rename(blobs.root)

    return restore


async def _submitted_unchecked(
    server: RunningServer, teller: TellerClient, seed: int
) -> tuple[str, str]:
    """Submits a request whose ID front was stored but never checked, so the gate must
    read its bytes; waits for the checks of its other images (written to the store,
    which must be there for them). Returns the request's id and the front's sha256."""
    ((_kind, data),) = images("ID_FRONT", seed=seed)
    sha = await store_unchecked(server, data)
    message = request_with_front(sha)
    request_id = (await teller.submit(message)).request.request_id
    for ref in message.images:
        if ref.sha256 != sha:
            assert await _checker(server).verdict(ref.sha256) == "OK"
    return request_id, sha


def _recorded_pauses(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every pause the dispatcher holds a failed claim for, in order."""
    failures = server.runtime.dispatcher.gate_failures
    pause = failures.pause
    recorded: list[float] = []

    def recording(count: int) -> float:
        recorded.append(pause(count))
        return recorded[-1]

    monkeypatch.setattr(failures, "pause", recording)
    return recorded


async def test_the_item_behind_a_failing_image_check_is_offered_while_that_one_is_held(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Held far longer than the test: what it holds is not a race with the pause.
    monkeypatch.setattr(dispatch, "GATE_PAUSE_FIRST_S", 10.0)
    async with server.teller() as teller, server.authorizer() as authorizer:
        failing, _ = await _submitted_unchecked(server, teller, seed=31)
        behind = (await teller.submit(request())).request.request_id  # its images passed
        restore = _store_taken_away(server, tmp_path)
        try:
            offer = await authorizer.next(timeout=10)
            held = await server.runtime.store.get(failing)
        finally:
            restore()
    assert offer.request.request_id == behind
    assert held.state is State.CLAIMED  # not offered again meanwhile
    assert [e.state for e in held.history].count(State.CLAIMED) == 1


async def test_a_failing_image_check_holds_its_claim_longer_each_time_up_to_a_quarter_lease(
    start_server: StartServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server(lease_ms=2_000)  # the pauses end at 0.5 s
    pauses = _recorded_pauses(server, monkeypatch)
    async with server.teller() as teller:
        failing, _ = await _submitted_unchecked(server, teller, seed=32)
        restore = _store_taken_away(server, tmp_path)
        taker = asyncio.create_task(server.runtime.dispatcher.next_item("authorizer-1"))
        try:
            await until(lambda: len(pauses) >= 4)
            view = await teller.get(failing)
        finally:
            taker.cancel()
            restore()
    assert pauses[:4] == [0.2, 0.4, 0.5, 0.5]
    # Each claim was one failure, put back after its pause (the last may be held still).
    claims = [e for e in view.history if e.event == "CLAIMED"]
    put_back = [e for e in view.history if e.event == "RELEASED"]
    assert {e.note for e in put_back} == {dispatch.GATE_FAILED}
    assert len(claims) - len(put_back) in (0, 1)
    assert 3 <= len(put_back) <= len(pauses)


async def test_an_item_whose_image_check_failed_is_offered_and_decided_once_the_store_is_back(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses = _recorded_pauses(server, monkeypatch)
    async with server.teller() as teller, server.authorizer() as authorizer:
        failing, front = await _submitted_unchecked(server, teller, seed=33)
        restore = _store_taken_away(server, tmp_path)
        offered = asyncio.create_task(authorizer.next(timeout=30))
        try:
            await until(lambda: len(pauses) >= 2)  # failed, held, put back, failed again
        finally:
            restore()
        offer = await offered
        await authorizer.decide(failing, offer.lease.fencing_token, "approve")
        view = await teller.get(failing)
    assert offer.request.request_id == failing
    assert view.state == cpb.REQUEST_STATE_APPROVED
    assert "SUPPLEMENT_REQUESTED" not in [e.event for e in view.history]
    assert _checker(server).known(front) == "OK"


async def test_a_queue_of_items_whose_checks_fail_is_not_swept_claim_after_claim(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store away fails every item with images in turn. After the first failure the
    # authorizer claims again at once (the item behind may have none); after the second
    # it waits, here far longer than the test, so the rest stay in the queue.
    monkeypatch.setattr(dispatch, "GATE_PAUSE_FIRST_S", 10.0)
    dispatcher = server.runtime.dispatcher
    async with server.teller() as teller:
        failing = [(await _submitted_unchecked(server, teller, seed=40 + i))[0] for i in range(4)]
        restore = _store_taken_away(server, tmp_path)
        taker = asyncio.create_task(dispatcher.next_item("authorizer-1"))
        try:
            await until(lambda: dispatcher.gate_failures.streak >= 2)
            states = [(await server.runtime.store.get(rid)).state for rid in failing]
            line_pause = dispatcher.gate_failures.line_pause()
        finally:
            taker.cancel()
            restore()
    assert states == [State.CLAIMED, State.CLAIMED, State.QUEUED, State.QUEUED]
    assert line_pause == 10.0


def test_the_authorizer_waits_longer_with_each_failure_until_a_check_finishes() -> None:
    failures = GateFailures(cap_s=10.0, clock=lambda: 0.0)
    waits = []
    for rid in ("r-1", "r-2", "r-1", "r-3", "r-4"):
        failures.count(rid)
        waits.append(failures.line_pause())
    assert waits == [0.0, 0.2, 0.4, 0.8, 1.6]
    failures.forget("r-9")  # some check finished: the gate works again
    failures.count("r-1")
    assert failures.line_pause() == 0.0


def test_a_requests_failures_in_a_row_end_when_its_check_finishes_or_after_a_while() -> None:
    now = [0.0]
    failures = GateFailures(cap_s=10.0, clock=lambda: now[0])
    assert [failures.count("r-1") for _ in range(3)] == [1, 2, 3]
    failures.forget("r-1")  # admitted, or sent back to its teller
    assert failures.count("r-1") == 1
    now[0] += dispatch.GATE_FAILURES_FORGET_S + 1
    assert failures.count("r-2") == 1  # and r-1, failed long ago, is forgotten
    assert failures.count("r-1") == 1
    assert [failures.pause(n) for n in (1, 2, 3, 6, 10_000)] == [0.2, 0.4, 0.8, 6.4, 10.0]


def test_the_requests_remembered_are_bounded_the_oldest_forgotten_first() -> None:
    failures = GateFailures(cap_s=10.0, clock=lambda: 0.0)
    failures.count("oldest")
    failures.count("oldest")
    for i in range(dispatch.GATE_FAILURES_KEPT):
        failures.count(f"r-{i}")
    assert failures.count("oldest") == 1
    assert failures.count(f"r-{dispatch.GATE_FAILURES_KEPT - 1}") == 2
