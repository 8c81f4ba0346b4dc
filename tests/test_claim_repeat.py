"""A claim recognises its own repeat (server/lua/claim.lua): each call carries a fresh
nonce, and a call that claims keeps "<id> <token>" under the nonce's key for a while.
So the pipe may send a claim whose reply was lost again (server/store/scripts.py
REPEAT_SAFE): the repeat answers the claim the first run made, takes no second item
and stages no second CLAIM record, or answers nothing if that claim is no longer
held."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from server.domain.states import Outcome, State
from server.store import connect, queue_store
from server.store.audit_records import AuditEntry, StagedAudit
from server.store.keys import Keys
from server.store.queue_store import (
    CLAIM_REPEAT_TTL_MS,
    Claim,
    NothingToClaim,
    QueueConfig,
    QueueStore,
)
from server.store.redis_pipe import BACKOFF, CONNECT_TIMEOUT_S, RETRIES, RETRY_WINDOW_S
from server.store.scripts import REPEAT_SAFE
from tests.helpers import store_submission
from tests.reply_cutter import ReplyCutter

PREFIX = "{claimrepeat}"
KEYS = Keys(PREFIX)


def claim_audit(actor: str = "auth-1") -> StagedAudit:
    entry = AuditEntry(actor=actor, role="AUTHORIZER", origin="ipv4:127.0.0.1:5000",
                       action="CLAIM", target="", details={},
                       at_ms=1_700_000_000_000)  # fmt: skip
    return StagedAudit(entry.pack())


async def staged_actions(client: aioredis.Redis) -> list[tuple[str, str]]:
    """(action, target) of every audit record staged so far."""
    page: Any = await client.xrange(KEYS.audit_staged)
    entries = []
    for _, fields in page:
        body = fields.get(b"b") or fields[b"p"]
        entries.append(AuditEntry.unpack(body))
    return [(e.action, e.target) for e in entries]


@pytest.fixture
def nonce(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The nonce the next claims carry: set ``nonce[0]`` to make a call a repeat of
    the one before (as the pipe sends it again) or a new one."""
    current = ["call-1"]
    monkeypatch.setattr(queue_store, "claim_nonce", lambda: current[0])
    return current


async def two_queued(store: QueueStore) -> None:
    await store.submit(store_submission("rep-1"))
    await asyncio.sleep(0.002)  # distinct submission times: a definite queue order
    await store.submit(store_submission("rep-2"))


async def state_of(store: QueueStore, request_id: str) -> State:
    return (await store.get(request_id)).state


async def test_a_repeated_claim_answers_what_it_took_and_takes_nothing_more(
    redis_client: aioredis.Redis, nonce: list[str]
) -> None:
    store = QueueStore(redis_client, KEYS, QueueConfig())
    await two_queued(store)
    first_audit = claim_audit()
    first = await store.claim("auth-1", audit=first_audit)
    assert first is not None
    assert first.record.request_id == "rep-1"
    events = await redis_client.xlen(KEYS.events)

    repeat_audit = claim_audit()
    repeat = await store.claim("auth-1", audit=repeat_audit)
    assert repeat == first  # same item, token, deadline, record and history, more-flag
    assert first_audit.staged
    assert repeat_audit.staged  # by the first run: the caller kicks the writer as usual
    assert not repeat_audit.repeat
    assert await state_of(store, "rep-2") == State.QUEUED
    held = await store.get("rep-1")
    assert (held.state, held.holder, held.token) == (State.CLAIMED, "auth-1", first.token)
    assert await staged_actions(redis_client) == [("CLAIM", "rep-1")]
    # Nothing else changed either: no event, no token drawn, no count moved.
    assert await redis_client.xlen(KEYS.events) == events
    assert await redis_client.get(KEYS.fence) == str(first.token).encode()
    assert await redis_client.hmget(KEYS.counts, ["QUEUED", "CLAIMED"]) == [b"1", b"1"]
    assert await redis_client.hget(KEYS.waiting_by_branch, "branch-1") == b"1"

    nonce[0] = "call-2"  # a new call takes the next item
    second = await store.claim("auth-1", audit=claim_audit())
    assert second is not None
    assert (second.record.request_id, second.token) == ("rep-2", first.token + 1)
    assert await staged_actions(redis_client) == [("CLAIM", "rep-1"), ("CLAIM", "rep-2")]


async def test_a_repeat_answers_the_claim_still_held_even_when_away_meanwhile(
    redis_client: aioredis.Redis, nonce: list[str]
) -> None:
    """The repeat is recognised before anything else: the first run's claim stands."""
    store = QueueStore(redis_client, KEYS, QueueConfig())
    await two_queued(store)
    first = await store.claim("auth-1")
    await store.set_away("auth-1", True)
    assert await store.claim("auth-1") == first


async def _decided(store: QueueStore, claim: Claim, nonce: list[str]) -> None:
    await store.decide("rep-1", claim.token, "auth-1", Outcome.APPROVE)


async def _released(store: QueueStore, claim: Claim, nonce: list[str]) -> None:
    await store.release("rep-1", claim.token, "auth-1", "not mine")


async def _taken_by_another(store: QueueStore, claim: Claim, nonce: list[str]) -> None:
    await store.release("rep-1", claim.token, "auth-1", "not mine")
    nonce[0] = "another-call"
    other = await store.claim("auth-2")
    assert other is not None
    assert other.record.request_id == "rep-1"
    nonce[0] = "call-1"


async def _retaken_by_itself(store: QueueStore, claim: Claim, nonce: list[str]) -> None:
    await store.release("rep-1", claim.token, "auth-1", "not mine")
    nonce[0] = "another-call"
    again = await store.claim("auth-1")
    assert again is not None
    assert (again.record.request_id, again.token) == ("rep-1", claim.token + 1)
    nonce[0] = "call-1"


async def _lapsed(store: QueueStore, claim: Claim, nonce: list[str]) -> None:
    # Its lease is over, and the reaper has not returned it to the queue yet.
    await asyncio.sleep(max(0.0, claim.lease_until_ms / 1000 - time.time()) + 0.05)


@pytest.mark.parametrize(
    "meanwhile", [_decided, _released, _taken_by_another, _retaken_by_itself, _lapsed]
)
async def test_a_repeat_after_the_claim_ended_takes_nothing(
    redis_client: aioredis.Redis,
    nonce: list[str],
    meanwhile: Callable[..., Any],
) -> None:
    lease_ms = 100 if meanwhile is _lapsed else 60_000
    store = QueueStore(redis_client, KEYS, QueueConfig(lease_ms=lease_ms))
    await two_queued(store)
    first = await store.claim("auth-1", audit=claim_audit())
    assert first is not None
    await meanwhile(store, first, nonce)
    before = {rid: await store.get(rid) for rid in ("rep-1", "rep-2")}
    staged = await staged_actions(redis_client)
    fence = await redis_client.get(KEYS.fence)

    repeat_audit = claim_audit()
    repeat = await store.claim_or_nothing("auth-1", audit=repeat_audit)
    assert repeat == NothingToClaim(more_waiting=True)
    assert not repeat_audit.staged
    assert {rid: await store.get(rid) for rid in ("rep-1", "rep-2")} == before
    assert before["rep-2"].state == State.QUEUED
    assert await staged_actions(redis_client) == staged
    assert await redis_client.get(KEYS.fence) == fence


async def test_a_claim_that_took_nothing_leaves_no_mark_and_its_repeat_runs_afresh(
    redis_client: aioredis.Redis, nonce: list[str]
) -> None:
    store = QueueStore(redis_client, KEYS, QueueConfig())
    assert await store.claim_or_nothing("auth-1") == NothingToClaim(more_waiting=False)
    assert await redis_client.exists(KEYS.claim_nonce("call-1")) == 0
    await two_queued(store)
    claim = await store.claim("auth-1")  # the same call sent again: nothing was taken
    assert claim is not None
    assert claim.record.request_id == "rep-1"


async def test_the_mark_of_a_claim_outlives_the_pipes_retries_then_expires(
    redis_client: aioredis.Redis, nonce: list[str]
) -> None:
    store = QueueStore(redis_client, KEYS, QueueConfig())
    await two_queued(store)
    claim = await store.claim("auth-1")
    assert claim is not None
    key = KEYS.claim_nonce("call-1")
    assert key.startswith(PREFIX)  # the same hash tag as every other key: one slot
    assert await redis_client.get(key) == f"rep-1 {claim.token}".encode()
    assert CLAIM_REPEAT_TTL_MS - 5_000 < await redis_client.pttl(key) <= CLAIM_REPEAT_TTL_MS
    # The last time the pipe may send it again: the last attempt starts within the
    # window (after at most one more backoff) and connects within its timeout.
    last_send_ms = 1000 * (RETRY_WINDOW_S + BACKOFF.compute(RETRIES) + CONNECT_TIMEOUT_S)
    assert 2 * last_send_ms <= CLAIM_REPEAT_TTL_MS
    assert "claim" in REPEAT_SAFE


async def test_every_claim_carries_a_fresh_nonce(redis_client: aioredis.Redis) -> None:
    store = QueueStore(redis_client, KEYS, QueueConfig())
    await two_queued(store)
    first, second = await store.claim("auth-1"), await store.claim("auth-1")
    assert first is not None
    assert second is not None
    assert [first.record.request_id, second.record.request_id] == ["rep-1", "rep-2"]
    assert queue_store.claim_nonce() != queue_store.claim_nonce()


@pytest.fixture
async def cutter(redis_url: str) -> AsyncIterator[tuple[ReplyCutter, str]]:
    proxy = ReplyCutter(redis_url)
    url = await proxy.start()
    yield proxy, url
    await proxy.stop()


async def test_a_claim_whose_reply_was_lost_is_sent_again_and_holds_its_item(
    redis_client: aioredis.Redis, cutter: tuple[ReplyCutter, str]
) -> None:
    proxy, url = cutter
    piped = connect.redis_client(url, 2)
    try:
        store = QueueStore(piped, KEYS, QueueConfig())
        # Loads the claim script into Redis's cache: the claim below goes by SHA.
        assert await store.claim_or_nothing("auth-1") == NothingToClaim(more_waiting=False)
        await two_queued(store)
        connects = piped.pipe.connects
        proxy.marker = b":claim-nonce:"
        audit = claim_audit()
        claim = await store.claim_or_nothing("auth-1", audit=audit)
        assert proxy.cuts == 1  # the script ran and its reply was lost
        assert piped.pipe.connects == connects + 1
    finally:
        await piped.aclose()
    # The caller holds the claim the first run made, and no second item was taken.
    assert isinstance(claim, Claim)
    assert claim.record.request_id == "rep-1"
    assert audit.staged
    direct = QueueStore(redis_client, KEYS, QueueConfig())
    held = await direct.get("rep-1")
    assert (held.state, held.holder, held.token) == (State.CLAIMED, "auth-1", claim.token)
    assert await state_of(direct, "rep-2") == State.QUEUED
    assert await redis_client.get(KEYS.fence) == str(claim.token).encode()
    assert await staged_actions(redis_client) == [("CLAIM", "rep-1")]
