"""The fast paths keep the guarantees: the verified-token cache gives way to a revocation
at once, submits that share one write (store/redis_pipe.py) each get their own
answer, idempotency and error, and commands packed by hiredis are the bytes redis-py
would send. What every offer creates leaves no garbage for the collector's pauses."""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import replace
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from authq import wire
from authq.channel import SessionCallError
from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb
from redis.asyncio.connection import UnixDomainSocketConnection
from redis.exceptions import DataError
from redis.typing import EncodableT

from server.accounts.model import Account, Qualification, Role, Status
from server.accounts.store import AccountStore, token_digest
from server.api.token_cache import TokenCache
from server.dispatch import Waiter
from server.domain.records import Submission
from server.domain.states import State
from server.errors import AlreadyExists
from server.store.connect import PipedRedis, event_client, hiredis_packing, redis_client
from server.store.queue_store import Claim, NothingToClaim, QueueStore
from server.store.redis_pipe import PipedScript, RedisPipe
from tests.conftest import RunningServer
from tests.helpers import request, standard_images, store_submission, until


def _cache(server: RunningServer) -> TokenCache:
    tokens = server.runtime.tokens
    assert tokens is not None
    assert tokens.live
    return tokens


def _pipe(store: QueueStore) -> RedisPipe:
    assert isinstance(store.client, PipedRedis)  # the server's client
    return store.client.pipe


def _script(store: QueueStore, name: str) -> PipedScript:
    script = getattr(store.scripts, name)
    assert isinstance(script, PipedScript)
    return script


def _mute_notifications(tokens: TokenCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pushed messages arrive late (a busy loop, a slow Redis): only what the
    process that made the change does itself can refuse the next call."""
    monkeypatch.setattr(tokens, "_on_message", lambda message: None)


async def test_a_disabled_account_is_refused_at_once_though_its_token_is_cached(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with server.teller() as teller:
        first = request()
        await teller.submit(first)
        digest = token_digest(teller.token)
        tokens = _cache(server)
        assert tokens.get(digest) is not None  # the next call would not ask Redis
        assert (await teller.get(first.request_id)).request_id == first.request_id
        _mute_notifications(tokens, monkeypatch)
        await server.runtime.accounts.set_status("teller-1", Status.DISABLED)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.get(first.request_id)
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert tokens.get(digest) is None


async def test_a_role_taken_away_here_is_refused_at_once(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with server.teller() as teller:
        first = request()
        await teller.submit(first)
        _mute_notifications(_cache(server), monkeypatch)
        await server.runtime.accounts.set_roles("teller-1", [Role.SUPERVISOR])
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.get(first.request_id)
        assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_logout_here_ends_the_cached_token_at_once(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with server.teller() as teller:
        await teller.submit(request())
        _mute_notifications(_cache(server), monkeypatch)
        assert await server.runtime.accounts.logout(teller.token) == "teller-1"
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.submit(request())
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_logout_elsewhere_ends_the_cached_token(
    server: RunningServer, redis_client: aioredis.Redis
) -> None:
    tokens = _cache(server)
    tokens.ttl_s = 3600.0  # the entry goes by the notification, not by its age
    async with server.teller() as teller:
        await teller.submit(request())
        digest = token_digest(teller.token)
        assert tokens.get(digest) is not None
        # Another server process, or the admin tool, deletes the token in Redis: the
        # keyspace notification reaches this process a moment later.
        elsewhere = AccountStore(redis_client, server.runtime.store.keys)
        assert await elsewhere.logout(teller.token) == "teller-1"
        await until(lambda: tokens.get(digest) is None)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.submit(request())
        assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_role_taken_away_elsewhere_is_refused_once_the_change_is_published(
    server: RunningServer, redis_client: aioredis.Redis
) -> None:
    tokens = _cache(server)
    tokens.ttl_s = 3600.0  # the entry goes by the published change, not by its age
    async with server.teller() as teller:
        await teller.submit(request())
        digest = token_digest(teller.token)
        assert tokens.get(digest) is not None
        # The admin tool (another process) takes the role away: it changes only the
        # account's hash, and no token key, so no keyspace notification comes.
        elsewhere = AccountStore(redis_client, server.runtime.store.keys)
        await elsewhere.set_roles("teller-1", [Role.SUPERVISOR])
        await until(lambda: tokens.get(digest) is None)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await teller.submit(request())
        assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_tokens_expire_event_leaves_its_cached_entry(
    server: RunningServer, redis_client: aioredis.Redis
) -> None:
    # The login's SET ... EX is followed by an "expire" event on the token key. Taken
    # as a revocation, it dropped the entry the first call had just put, whenever the
    # notification arrived after that call (a flake of the role test above).
    tokens = _cache(server)
    tokens.ttl_s = 3600.0
    async with server.teller() as teller:
        await teller.submit(request())
        digest = token_digest(teller.token)
        assert tokens.get(digest) is not None
        before = tokens.generation
        keys = server.runtime.store.keys
        await redis_client.expire(keys.token(digest), 3600)
        # A token key that ends after it: its notification comes after the expire's.
        marker = keys.token("0" * 64)
        await redis_client.set(marker, "nobody")
        await redis_client.delete(marker)
        await until(lambda: tokens.generation > before)
        assert tokens.get(digest) is not None
        assert tokens.generation == before + 1


async def test_an_expired_token_key_is_dropped_from_the_cache(server: RunningServer) -> None:
    async with server.teller() as teller:
        await teller.submit(request())
        tokens = _cache(server)
        digest = token_digest(teller.token)
        key = server.runtime.store.keys.token(digest)
        await server.runtime.client.pexpire(key, 1)
        # The expiry reaches us as a pushed notification, not by asking Redis.
        for _ in range(200):
            if tokens.get(digest) is None:
                break
            await asyncio.sleep(0.01)
        assert tokens.get(digest) is None


def _account() -> Account:
    return Account(
        user_id="teller-9",
        name="teller-9",
        branch_id="branch-1",
        roles=frozenset({Role.TELLER}),
        status=Status.ACTIVE,
        password_set_ms=0,
        must_change_password=False,
        qualification=Qualification(),
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_cache_keeps_an_entry_only_for_its_ttl(server: RunningServer) -> None:
    clock = FakeClock()
    cache = TokenCache(
        server.runtime.client, "{authq}:token:", "{authq}:account-changes", ttl_s=2.0, clock=clock
    )
    cache.live = True
    cache.put("d1", _account(), cache.generation)
    clock.now += 1.9
    assert cache.get("d1") == _account()
    clock.now += 0.2
    assert cache.get("d1") is None


async def test_a_lookup_overtaken_by_a_revocation_is_not_kept(server: RunningServer) -> None:
    cache = TokenCache(server.runtime.client, "{authq}:token:", "{authq}:account-changes")
    cache.live = True
    started = cache.generation  # a lookup reads Redis now...
    cache.revoke("d1")  # ...a revocation is pushed before its answer is in
    cache.put("d1", _account(), started)
    assert cache.get("d1") is None
    assert len(cache) == 0


async def test_a_change_to_an_account_forgets_its_tokens_only(server: RunningServer) -> None:
    cache = TokenCache(server.runtime.client, "{authq}:token:", "{authq}:account-changes")
    cache.live = True
    other = replace(_account(), user_id="teller-8")
    cache.put("d1", _account(), cache.generation)
    cache.put("d2", _account(), cache.generation)
    cache.put("d3", other, cache.generation)
    started = cache.generation  # a lookup of teller-9 reads Redis now...
    cache.account_changed("teller-9")  # ...and the account changes before its answer
    assert cache.get("d1") is None
    assert cache.get("d2") is None
    assert cache.get("d3") == other
    cache.put("d1", _account(), started)
    assert cache.get("d1") is None


async def test_nothing_is_served_while_the_feed_is_not_live(server: RunningServer) -> None:
    cache = TokenCache(server.runtime.client, "{authq}:token:", "{authq}:account-changes")
    cache.put("d1", _account(), cache.generation)
    assert cache.get("d1") is None
    cache.live = True
    cache.put("d1", _account(), cache.generation)
    assert cache.get("d1") is not None
    await cache.stop()  # never started: stopping still empties it
    assert not cache.live
    assert len(cache) == 0


async def test_the_feed_goes_live_and_follows_token_deletes_and_account_changes(
    server: RunningServer,
) -> None:
    keys = server.runtime.store.keys
    client = server.runtime.client
    cache = TokenCache(client, keys.token(""), keys.account_changes)
    await cache.start()
    try:
        assert await cache.wait_live()
        cache.put("abc", _account(), cache.generation)
        await client.set(keys.token("abc"), "teller-9")
        assert cache.get("abc") is not None  # a SET is no revocation
        await client.delete(keys.token("abc"))
        await until(lambda: cache.get("abc") is None)
        other = replace(_account(), user_id="teller-8")
        cache.put("d1", _account(), cache.generation)
        cache.put("d2", other, cache.generation)
        await client.publish(keys.account_changes, "teller-9")
        await until(lambda: cache.get("d1") is None)
        assert cache.get("d2") == other
    finally:
        await cache.stop()


# -- submits sharing one pipeline -----------------------------------------------------


async def test_concurrent_submits_share_a_pipeline_and_keep_their_own_answers(
    server: RunningServer,
) -> None:
    store = server.runtime.store
    await store.submit(store_submission("batch-dup-1"))
    await store.submit(store_submission("batch-conflict-1"))
    writes, calls_before = _pipe(store).writes, _script(store, "submit").calls
    fresh = [store_submission(f"batch-new-{i}") for i in range(30)]
    calls = [
        *fresh,
        store_submission("batch-dup-1"),  # a retry: the stored request, duplicate
        store_submission("batch-conflict-1", memo="other content"),  # refused alone
    ]
    results = await asyncio.gather(
        *(store.submit(submission) for submission in calls), return_exceptions=True
    )
    # All were handed over before the first went out: one write for 32 submits.
    assert _script(store, "submit").calls - calls_before == 32
    assert _pipe(store).writes - writes == 1
    for submission, result in zip(fresh, results[:30], strict=True):
        assert not isinstance(result, BaseException)
        record, duplicate = result
        assert record.submission.request_id == submission.request_id
        assert not duplicate
        assert (await store.get(submission.request_id)).version == 1
    dup = results[30]
    assert not isinstance(dup, BaseException)
    assert dup[1] is True
    assert dup[0].submission.request_id == "batch-dup-1"
    assert isinstance(results[31], AlreadyExists)
    assert "batch-conflict-1" in str(results[31])


async def test_a_batch_survives_a_redis_that_lost_its_scripts(server: RunningServer) -> None:
    store = server.runtime.store
    await store.client.script_flush()
    writes = _pipe(store).writes
    results = await asyncio.gather(
        *(store.submit(store_submission(f"noscript-{i}")) for i in range(5))
    )
    assert [record.submission.request_id for record, _ in results] == [
        f"noscript-{i}" for i in range(5)
    ]
    # Refused by SHA together, then sent with the source together.
    assert _pipe(store).writes - writes == 2


async def test_a_session_burst_answers_each_submit_on_its_own(server: RunningServer) -> None:
    async with server.teller() as teller:
        stored = request()
        await teller.submit(stored)
        conflicting = tpb.SubmitRequest()
        conflicting.CopyFrom(stored)
        conflicting.transaction.memo = "different content"
        fresh = [request() for _ in range(20)]
        bad_type = request()
        bad_type.transaction.business_type = "NO_SUCH_TYPE"
        async with teller.session() as session:
            outcomes = await asyncio.gather(
                *(session.submit(message) for message in (*fresh, stored, conflicting, bad_type)),
                return_exceptions=True,
            )
    for message, outcome in zip(fresh, outcomes[:20], strict=True):
        assert isinstance(outcome, tpb.SubmitReply), outcome
        assert outcome.request.request_id == message.request_id
        assert not outcome.duplicate
        assert outcome.request.state == cpb.REQUEST_STATE_QUEUED
    retry = outcomes[20]
    assert isinstance(retry, tpb.SubmitReply)
    assert retry.duplicate
    assert retry.request.request_id == stored.request_id
    for outcome, code, words in (
        (outcomes[21], grpc.StatusCode.ALREADY_EXISTS, stored.request_id),
        (outcomes[22], grpc.StatusCode.INVALID_ARGUMENT, "transaction.business_type"),
    ):
        assert isinstance(outcome, SessionCallError), outcome
        assert outcome.code == code
        assert words in outcome.message


async def test_waiting_authorizers_are_served_together_each_with_its_own_item(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = server.runtime.store
    dispatcher = server.runtime.dispatcher
    for i in range(10):
        await store.submit(
            Submission(
                request_id=f"round-{i:04d}", branch_id="branch-1", teller_id="teller-1",
                business_type="CASH_DEPOSIT", amount_minor=100, currency="CNY", account="6222",
                customer_name="Li", memo="", fields={}, urgency=1, importance=2, images=(),
            )
        )  # fmt: skip
        await asyncio.sleep(0.002)  # distinct submission times: a definite queue order
    claim = _script(store, "claim")
    calls = claim.calls
    # The write each claim leaves in (those sent in one loop turn share it).
    write_of_claim: list[int] = []
    sent = PipedScript.__call__

    async def recording(script: PipedScript, keys: Any = (), args: Any = ()) -> Any:
        if script is claim:
            write_of_claim.append(_pipe(store).writes)
        return await sent(script, keys, args)

    monkeypatch.setattr(PipedScript, "__call__", recording)
    # Ten authorizers start waiting at once: rounds of 1, 2, 4 and 3 claims, each one
    # write, in line order.
    claims = await asyncio.gather(*(dispatcher.next_item(f"auth-{i}") for i in range(10)))
    assert [c.record.request_id for c in claims] == [f"round-{i:04d}" for i in range(10)]
    assert len({c.token for c in claims}) == 10
    assert claim.calls - calls == 10
    rounds = [write_of_claim.count(write) for write in sorted(set(write_of_claim))]
    assert rounds == [1, 2, 4, 3]


async def test_a_claim_says_whether_anything_is_left_behind(server: RunningServer) -> None:
    store = server.runtime.store
    await server.runtime.dispatcher.stop()  # this test claims by hand
    await store.submit(store_submission("left-0001"))
    await store.submit(store_submission("left-0002"))
    first = await store.claim("auth-1")
    second = await store.claim("auth-2")
    assert first is not None
    assert second is not None
    assert first.more_waiting
    assert not second.more_waiting
    assert await store.claim("auth-3") is None


async def test_an_authorizer_back_on_an_empty_queue_costs_no_claim_until_work_comes(
    server: RunningServer,
) -> None:
    store = server.runtime.store
    dispatcher = server.runtime.dispatcher
    await store.submit(store_submission("empty-0001"))
    first = await dispatcher.next_item("auth-1")
    assert first.record.request_id == "empty-0001"
    assert not first.more_waiting
    calls = _script(store, "claim").calls
    waiting = asyncio.create_task(dispatcher.next_item("auth-2"))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    assert _script(store, "claim").calls == calls  # the queue was seen empty, nothing came
    await store.submit(store_submission("empty-0002"))
    second = await asyncio.wait_for(waiting, 10)
    assert second.record.request_id == "empty-0002"
    assert _script(store, "claim").calls == calls + 1


async def test_a_claim_that_finds_the_queue_empty_stops_claims_until_work_comes(
    server: RunningServer,
) -> None:
    store = server.runtime.store
    dispatcher = server.runtime.dispatcher
    # The item is queued (its event says there may be work) but taken elsewhere
    # before any authorizer waits here.
    await store.submit(store_submission("gone-0001"))
    assert await store.claim("auth-9") is not None
    assert await store.claim_or_nothing("auth-9") == NothingToClaim(more_waiting=False)
    await asyncio.sleep(0.3)  # the QUEUED event has reached the dispatcher
    calls = _script(store, "claim").calls
    first = asyncio.create_task(dispatcher.next_item("auth-1"))
    await asyncio.sleep(0.3)
    assert _script(store, "claim").calls == calls + 1  # it looked once and found nothing
    second = asyncio.create_task(dispatcher.next_item("auth-2"))
    await asyncio.sleep(0.3)
    assert _script(store, "claim").calls == calls + 1  # no second look at an empty queue
    await store.submit(store_submission("gone-0002"))
    claim = await asyncio.wait_for(first, 10)
    assert claim.record.request_id == "gone-0002"
    assert not second.done()
    assert _script(store, "claim").calls == calls + 2
    second.cancel()


async def test_an_item_queued_while_a_claim_finds_nothing_is_offered(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = server.runtime.store
    dispatcher = server.runtime.dispatcher
    claim_or_nothing = store.claim_or_nothing
    empty_seen = asyncio.Event()
    answer = asyncio.Event()

    async def answered_late(*args: Any, **kwargs: Any) -> Claim | NothingToClaim:
        result = await claim_or_nothing(*args, **kwargs)
        if not answer.is_set():
            empty_seen.set()
            await answer.wait()
        return result

    monkeypatch.setattr(store, "claim_or_nothing", answered_late)
    queued = asyncio.Event()
    server.runtime.hub.add_listener(
        lambda entry: queued.set() if entry.state is State.QUEUED else None
    )
    waiting = asyncio.create_task(dispatcher.next_item("auth-1"))
    # Its claim finds the queue empty; the item's event reaches the dispatcher (a
    # listener before this one) while that answer is still on its way.
    await asyncio.wait_for(empty_seen.wait(), 10)
    await store.submit(store_submission("late-0001"))
    await asyncio.wait_for(queued.wait(), 10)
    answer.set()
    claim = await asyncio.wait_for(waiting, 10)
    assert claim.record.request_id == "late-0001"


async def test_claims_do_not_wake_a_reaper_already_due_sooner(server: RunningServer) -> None:
    store = server.runtime.store
    reaper = server.runtime.reaper
    await server.runtime.dispatcher.stop()
    for i in range(4):
        await store.submit(store_submission(f"reap-{i:04d}"))
    assert await store.claim("auth-0") is not None  # the reaper now sleeps until its lease
    await asyncio.sleep(0.3)
    rounds = 0
    reap_due = reaper._reap_due

    async def counted() -> float | None:
        nonlocal rounds
        rounds += 1
        return await reap_due()

    reaper._reap_due = counted  # type: ignore[method-assign]
    for i in range(1, 4):
        assert await store.claim(f"auth-{i}") is not None  # each lease ends later
    await asyncio.sleep(0.5)
    assert rounds == 0
    # A lease ending sooner than the reaper's wake-up does wake it.
    reaper._sleeping_until = time.monotonic() + 3600
    await store.submit(store_submission("reap-late"))
    assert await store.claim("auth-9") is not None
    await asyncio.sleep(0.5)
    assert rounds == 1


async def test_image_facts_are_cached_for_their_ttl_only(server: RunningServer) -> None:
    checker = server.runtime.center.images
    assert checker is not None
    checker.facts_ttl_s = 0.5
    (_kind, data), *_ = standard_images()
    sha = wire.sha256_hex(data)
    await checker.verdict(sha)
    (facts,) = await checker.facts([sha])
    assert facts is not None
    assert facts.check == "OK"
    # Redis forgets the blob (as the blob GC does): a submit within the TTL still
    # sees what was read, and one after it asks Redis again.
    key = server.runtime.store.keys.blob(sha)
    saved = await server.runtime.client.hgetall(key)
    await server.runtime.client.delete(key)
    assert await checker.facts([sha]) == [facts]
    await asyncio.sleep(0.6)
    assert await checker.facts([sha]) == [None]
    await server.runtime.client.hset(key, mapping=dict(saved.items()))


async def test_a_decision_can_ask_for_the_next_offer_in_the_same_message(
    server: RunningServer,
) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        rids = [(await teller.submit(request())).request.request_id for _ in range(3)]
        async with authorizer.session() as console:
            console.credit(1)
            offer = await asyncio.wait_for(console.offers.get(), 5)
            assert offer.request.request_id == rids[0]
            update = await console.decide(
                rids[0], offer.lease.fencing_token, "approve", then_credit=1
            )
            assert update.state == cpb.REQUEST_STATE_APPROVED
            offer = await asyncio.wait_for(console.offers.get(), 5)
            assert offer.request.request_id == rids[1]
            # A refused decision (a stale token) frees the seat all the same.
            with pytest.raises(SessionCallError) as refused:
                await console.decide(rids[1], offer.lease.fencing_token + 99, "approve",
                                     then_credit=1)  # fmt: skip
            assert refused.value.code == grpc.StatusCode.ABORTED
            assert (await asyncio.wait_for(console.offers.get(), 5)).request.request_id == rids[2]
            # Only with a decision or release: alone it is refused, naming the field.
            with pytest.raises(SessionCallError) as alone:
                await console.request(credit=1, then_credit=1)
            assert alone.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "then_credit" in alone.value.message


# Arguments of the kinds our scripts send: text (non-ASCII too), bytes (msgpack),
# integers, negative and float scores, and a command name of two words.
PACKED_ARGS: list[tuple[EncodableT, ...]] = [
    ("EVALSHA", "a" * 40, 2, "{authq}:req:1", "{authq}:lane", b"\x00\xff\x93", 12345, -7),
    ("SET", "k", "ĉu é ü 授权", 1.5, 0.1, 1e20, -2.25),
    ("SCRIPT LOAD", "return 1"),
    ("XADD", b"stream", b"*", b"m", bytearray(b"ba"), memoryview(b"mv")),
]


@pytest.mark.parametrize("args", PACKED_ARGS)
def test_hiredis_packing_sends_the_bytes_redis_py_would(args: tuple[EncodableT, ...]) -> None:
    pytest.importorskip("hiredis")
    base = UnixDomainSocketConnection(path="/nonexistent")
    packing = hiredis_packing(UnixDomainSocketConnection)(path="/nonexistent")
    assert type(packing).pack_command is not UnixDomainSocketConnection.pack_command
    assert b"".join(packing.pack_command(*args)) == b"".join(base.pack_command(*args))
    assert b"".join(packing.pack_commands([args, args])) == b"".join(
        base.pack_commands([args, args])
    )


def test_a_value_redis_cannot_hold_is_refused_by_the_hiredis_packing_too() -> None:
    pytest.importorskip("hiredis")
    packing = hiredis_packing(UnixDomainSocketConnection)(path="/nonexistent")
    with pytest.raises(DataError):
        packing.pack_command("SET", "k", None)  # type: ignore[arg-type]


async def test_the_server_clients_pack_with_hiredis_and_work(redis_url: str) -> None:
    pytest.importorskip("hiredis")
    client = redis_client(redis_url, pool_size=2)
    events = event_client(redis_url)
    try:
        assert client.connection_pool.connection_class.__name__.startswith("Hiredis")
        await client.set("{authq-test}:packing", "授权 ü")
        assert await events.execute("GET", "{authq-test}:packing") == "授权 ü".encode()
        # The pipe (hiredis.pack_command) encodes as redis-py does.
        await client.pipe.execute("SET", "{authq-test}:packing", "授权 ü")
        assert await client.get("{authq-test}:packing") == "授权 ü".encode()
    finally:
        await client.delete("{authq-test}:packing")
        await client.aclose(close_connection_pool=True)
        await events.aclose()


async def test_an_offered_waiter_is_freed_without_the_garbage_collector(
    server: RunningServer,
) -> None:
    """A waiter and its delivery callback form no reference cycle: one per offer
    would be left for the collector's full passes, which stall the event loop."""
    async with server.teller() as teller, server.authorizer() as authorizer:
        rids = {(await teller.submit(request())).request.request_id for _ in range(3)}
        gc.collect()
        gc.disable()
        try:
            async with authorizer.session() as console:
                console.credit(3)
                offers = [await asyncio.wait_for(console.offers.get(), 5) for _ in range(3)]
                assert {offer.request.request_id for offer in offers} == rids
                await asyncio.sleep(0.05)  # the dispatcher's round ends
                assert [o for o in gc.get_objects() if isinstance(o, Waiter)] == []
        finally:
            gc.enable()
