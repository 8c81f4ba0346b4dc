"""The pipelined Redis connection (server/store/redis_pipe.py): what is sent in one
event-loop turn leaves in one write and each caller gets its own reply, in order;
error replies raise what redis-py raises; a lost connection or a Redis that lost its
scripts costs no call; the event hub, which follows the stream on a pipe of its own,
tells its watchers to re-read after a lost connection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server import events
from server.api.status import status_of
from server.events import EventHub
from server.store import connect, redis_pipe
from server.store.keys import Keys
from server.store.queue_store import QueueConfig, QueueStore
from server.store.redis_pipe import PipedScript, RedisPipe, ReplyLost, shown_url
from server.store.scripts import load_script, run_all
from tests.helpers import store_submission, until
from tests.reply_cutter import ReplyCutter


@pytest.fixture
async def pipe(redis_url: str, redis_client: aioredis.Redis) -> AsyncIterator[RedisPipe]:
    pipe = RedisPipe(redis_url)
    yield pipe
    await pipe.aclose()


async def test_calls_of_one_loop_turn_share_one_write_and_keep_their_order(
    pipe: RedisPipe,
) -> None:
    await pipe.execute("PING")
    writes, commands = pipe.writes, pipe.commands
    replies = await asyncio.gather(*(pipe.execute("INCR", "counter") for _ in range(50)))
    assert replies == list(range(1, 51))
    assert pipe.commands - commands == 50
    assert pipe.writes - writes == 1


async def test_an_error_reply_fails_its_own_call_only(
    pipe: RedisPipe, redis_client: aioredis.Redis
) -> None:
    await redis_client.set("text", "not a number")
    replies: list[object] = await asyncio.gather(
        pipe.execute("SET", "a", "1"),
        pipe.execute("INCR", "text"),
        pipe.execute("GET", "a"),
        return_exceptions=True,
    )
    before, failed, after = replies
    assert before == b"OK"
    assert isinstance(failed, ResponseError)
    assert "not an integer" in str(failed)
    assert after == b"1"


async def test_a_caller_that_gives_up_leaves_the_others_their_replies(
    pipe: RedisPipe,
) -> None:
    await pipe.execute("PING")
    slow = asyncio.ensure_future(pipe.execute("ECHO", "first"))
    second = asyncio.ensure_future(pipe.execute("ECHO", "second"))
    await asyncio.sleep(0)  # both are sent
    slow.cancel()
    assert await second == b"second"
    assert await pipe.execute("ECHO", "third") == b"third"


async def test_calls_waiting_on_a_killed_connection_are_sent_again(
    pipe: RedisPipe, redis_client: aioredis.Redis
) -> None:
    own_id = await pipe.execute("CLIENT", "ID")
    # A short blocking pop holds the connection, so the calls behind it are sent but
    # not yet run when it dies.
    blocked = asyncio.ensure_future(pipe.execute("BLPOP", "never", "0.3"))
    behind = [asyncio.ensure_future(pipe.execute("INCR", "sent-again")) for _ in range(3)]
    await asyncio.sleep(0.1)
    assert await redis_client.get("sent-again") is None
    await redis_client.client_kill_filter(_id=own_id)
    # All went out again on a new connection, and each ran once.
    assert sorted(await asyncio.gather(*behind)) == [1, 2, 3]
    assert await blocked is None
    assert await redis_client.get("sent-again") == b"3"
    assert pipe.connects == 2


async def test_a_script_sent_before_the_loss_is_sent_again_only_if_a_repeat_is_safe(
    pipe: RedisPipe, redis_client: aioredis.Redis
) -> None:
    """An emergency or an account change whose reply was lost may have run: sent
    again, it would act twice. Its caller is told the outcome is unknown instead."""
    own_id = await pipe.execute("CLIENT", "ID")
    once = PipedScript(pipe, "return redis.call('INCR', KEYS[1])")
    safe = PipedScript(pipe, "return redis.call('INCR', KEYS[1])", repeat_safe=True)
    await redis_client.script_load(once.source)
    blocked = asyncio.ensure_future(pipe.execute("BLPOP", "never", "0.3"))
    behind_once = asyncio.ensure_future(once(keys=["once"]))
    behind_safe = asyncio.ensure_future(safe(keys=["safe"]))
    await asyncio.sleep(0.1)  # sent, held behind the pop
    await redis_client.client_kill_filter(_id=own_id)
    with pytest.raises(ReplyLost, match="whether it ran is unknown"):
        await behind_once
    assert await behind_safe == 1
    assert await blocked is None
    assert await redis_client.get("once") is None  # the kill came before it ran


async def test_a_script_the_loss_caught_before_it_left_is_sent_again(
    pipe: RedisPipe, redis_client: aioredis.Redis
) -> None:
    await pipe.execute("PING")
    once = PipedScript(pipe, "return redis.call('INCR', KEYS[1])")
    call = asyncio.ensure_future(once(keys=["unsent"]))
    await asyncio.sleep(0)  # the call is in the connection's buffer, not yet written
    connection = pipe._connection
    assert connection is not None
    connection._fail(ConnectionError("cut before the write"))
    assert await call == 1
    assert await redis_client.get("unsent") == b"1"
    assert pipe.connects == 2


async def test_a_closed_pipe_refuses_calls(pipe: RedisPipe) -> None:
    await pipe.execute("PING")
    await pipe.aclose()
    with pytest.raises(ConnectionError):
        await pipe.execute("PING")


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A Redis URL whose host takes no connection: its listen queue is full, so the
    kernel drops further SYNs, as a host behind a firewall that drops packets does."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        with socket.create_connection(address):  # fills the queue of one
            yield f"redis://127.0.0.1:{address[1]}/0"


async def test_a_host_that_never_answers_fails_the_call_rather_than_holding_it(
    black_hole: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a bound each connect would wait out the kernel's SYN retries (about
    two minutes), and every caller with it."""
    monkeypatch.setattr(redis_pipe, "CONNECT_TIMEOUT_S", 0.2)
    monkeypatch.setattr(redis_pipe, "RETRY_WINDOW_S", 0.5)
    pipe = RedisPipe(black_hole)
    try:
        async with asyncio.timeout(20):  # a failed test, not a hang
            with pytest.raises(ConnectionError) as failure:
                await pipe.execute("PING")
    finally:
        await pipe.aclose()
    assert "no answer to connecting within 0.2s" in str(failure.value)
    assert pipe.connects == 0


async def test_the_pooled_client_bounds_its_connects_too(black_hole: str) -> None:
    client = connect.redis_client(black_hole, 2)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_connect_timeout"] == redis_pipe.CONNECT_TIMEOUT_S
    finally:
        await client.aclose(close_connection_pool=True)


async def test_tcp_connections_to_redis_are_probed_and_bounded(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partitioned Redis host is found out in seconds, not hours: keepalive probes
    and a bound on unacknowledged data, on the pipe's sockets and the pool's."""
    tuned: list[dict[str, int]] = []
    keep_alive = redis_pipe.keep_alive

    def noted(sock: Any) -> None:
        keep_alive(sock)
        tuned.append(_keepalive_of(sock))

    monkeypatch.setattr(redis_pipe, "keep_alive", noted)
    relay = ReplyCutter(redis_url)  # forwards everything while not armed: plain TCP
    tcp_url = await relay.start()
    pipe = RedisPipe(tcp_url)
    client = connect.redis_client(tcp_url, 2)
    try:
        assert await pipe.execute("PING") == b"PONG"
        assert await client.ping()
        pooled: Any = client.connection_pool._available_connections[0]
        pooled_socket = pooled._writer.transport.get_extra_info("socket")
        expected = {"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 10, "TCP_USER_TIMEOUT": 20_000}
        assert tuned == [expected]
        assert _keepalive_of(pooled_socket) == expected
    finally:
        await pipe.aclose()
        await client.aclose(close_connection_pool=True)
        await relay.stop()


@pytest.fixture
async def relay(redis_url: str) -> AsyncIterator[ReplyCutter]:
    """Plain TCP to the tests' Redis, which can be muted: a Redis stopped (SIGSTOP) or
    with its disk frozen, whose host still acknowledges what is sent, so neither
    keepalive nor TCP_USER_TIMEOUT ends the wait."""
    relay = ReplyCutter(redis_url)
    await relay.start()
    yield relay
    await relay.stop()


async def test_a_redis_that_never_answers_fails_the_call_in_seconds(
    relay: ReplyCutter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_pipe, "REPLY_DEADLINE_S", 0.2)
    monkeypatch.setattr(redis_pipe, "RETRY_WINDOW_S", 1.0)
    pipe = RedisPipe(relay.url)
    try:
        async with asyncio.timeout(20):  # a failed test, not a hang
            assert await pipe.execute("PING") == b"PONG"
            relay.muted = True
            with pytest.raises(ReplyLost) as once:
                await pipe.execute("INCR", "n", repeat_safe=False)
            assert pipe.connects == 1
            # A call safe to repeat is sent again on new connections until the
            # retry window closes.
            with pytest.raises(ConnectionError) as repeated:
                await pipe.execute("GET", "n")
    finally:
        await pipe.aclose()
    assert "no reply from Redis within 0.2s" in str(once.value)
    assert "no reply from Redis within 0.2s" in str(repeated.value)
    assert pipe.connects >= 3


async def test_the_reply_deadline_counts_from_the_wait_not_from_the_last_reply(
    pipe: RedisPipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle connection is not a silent Redis: a call after a pause longer than the
    deadline gets its reply on the same connection."""
    monkeypatch.setattr(redis_pipe, "REPLY_DEADLINE_S", 0.2)
    assert await pipe.execute("PING") == b"PONG"
    await asyncio.sleep(0.5)
    assert await pipe.execute("PING") == b"PONG"
    assert await pipe.execute("BLPOP", "nothing", 0.1) is None  # a wait within it
    assert pipe.connects == 1


async def test_the_pooled_client_gives_up_on_a_redis_that_never_answers(
    relay: ReplyCutter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attempt waits out the reply deadline; the retry window, not redis-py's
    count of ten retries, decides when the caller hears."""
    monkeypatch.setattr(connect, "REPLY_DEADLINE_S", 0.2)
    monkeypatch.setattr(connect, "RETRY_WINDOW_S", 1.0)
    client = connect.redis_client(relay.url, 2)
    try:
        async with asyncio.timeout(20):
            assert await client.ping()
            relay.muted = True
            with pytest.raises((ConnectionError, RedisTimeoutError)):
                await client.get("n")
    finally:
        await client.aclose(close_connection_pool=True)
    assert 1 < relay.connections < redis_pipe.RETRIES + 1


def _keepalive_of(sock: Any) -> dict[str, int]:
    return {
        "SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "TCP_KEEPIDLE": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        "TCP_USER_TIMEOUT": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    }


async def test_a_redis_that_lost_its_scripts_gets_them_again(
    pipe: RedisPipe, redis_client: aioredis.Redis
) -> None:
    script = PipedScript(pipe, "return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await script(keys=["n"], args=[2]) == 2
    await redis_client.script_flush()
    writes = pipe.writes
    assert await asyncio.gather(*(script(keys=["n"], args=[1]) for _ in range(4))) == [3, 4, 5, 6]
    # Four refused by SHA in one write, sent again with the source in the next.
    assert pipe.writes - writes == 2
    assert script.calls == 5


async def test_the_server_client_runs_the_lua_scripts_on_its_pipe(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    piped = connect.redis_client(redis_url, 4)
    try:
        script = load_script(piped, "blob_gc")
        assert isinstance(script, PipedScript)
        assert script.pipe is piped.pipe
        replies = await run_all(
            PipedScript(piped.pipe, "return ARGV[1] + 0"), [([], ["1"]), ([], ["x"]), ([], ["3"])]
        )
        assert replies[0] == 1
        assert isinstance(replies[1], ResponseError)
        assert replies[2] == 3
    finally:
        await piped.aclose()
    with pytest.raises(ConnectionError):  # closed with its client
        await piped.pipe.execute("PING")


async def test_only_the_scripts_that_recognise_their_repeat_are_sent_twice(
    redis_url: str,
) -> None:
    piped = connect.redis_client(redis_url, 4)
    try:
        scripts = {name: load_script(piped, name) for name in ("submit", "claim", "decide")}
        scripts["emergency"] = load_script(piped, "emergency_declare")
        assert {name: getattr(s, "repeat_safe", None) for name, s in scripts.items()} == {
            # A claim knows its repeat by its call's nonce (tests/test_claim_repeat.py).
            "submit": True, "claim": True, "decide": True, "emergency": False,
        }  # fmt: skip
    finally:
        await piped.aclose()
    code, message = status_of(ReplyLost("Redis at x: lost"))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "whether it was made is unknown" in message


async def _kill_its_connection(redis_client: aioredis.Redis, reader: str) -> None:
    await redis_client.client_kill_filter(_id=reader)


async def _refuse_its_read(redis_client: aioredis.Redis, reader: str) -> None:
    # The -UNBLOCKED error Redis answers a blocked read with when a failover demotes it.
    assert await redis_client.client_unblock(int(reader), error=True)


@pytest.mark.parametrize(
    ("cut", "connects"),
    [
        (_kill_its_connection, 2),
        (_refuse_its_read, 1),  # the same connection: only its read was refused
    ],
)
async def test_the_event_hub_reads_on_and_resyncs_after_its_read_is_cut(
    redis_url: str,
    redis_client: aioredis.Redis,
    cut: Callable[[aioredis.Redis, str], Awaitable[None]],
    connects: int,
) -> None:
    keys = Keys("{hubtest}")
    hub = EventHub(connect.event_client(redis_url), keys.events)
    seen: list[str] = []
    resyncs: list[bool] = []
    hub.add_listener(lambda entry: seen.append(entry.request_id))
    hub.add_resync_listener(lambda: resyncs.append(True))
    store = QueueStore(redis_client, keys, QueueConfig())
    await hub.start()
    try:
        await store.submit(store_submission("hub-before-1"))
        await until(lambda: seen == ["hub-before-1"])
        assert resyncs == []
        reader = next(c["id"] for c in await redis_client.client_list() if c["cmd"] == "xread")
        await cut(redis_client, reader)
        await store.submit(store_submission("hub-after-1"))
        await until(lambda: seen == ["hub-before-1", "hub-after-1"])
        assert resyncs == [True]  # watchers were told to re-read
        assert hub.pipe.connects == connects
    finally:
        await hub.stop()


async def test_a_lingering_hub_reads_on_at_once_after_a_full_read(
    redis_url: str, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower that lingers between reads (the archiver) still keeps up with a
    stream that fills faster than one read per linger: after a full read it reads on."""
    monkeypatch.setattr(events, "READ_COUNT", 5)
    keys = Keys("{hublinger}")
    store = QueueStore(redis_client, keys, QueueConfig())
    ids = [f"linger-{i:02d}" for i in range(12)]
    for rid in ids:
        await store.submit(store_submission(rid))
    hub = EventHub(connect.event_client(redis_url), keys.events, linger_s=60.0)
    seen: list[str] = []
    hub.add_listener(lambda entry: seen.append(entry.request_id))
    # From the stream's start: a backlog of 12, read 5, 5 and 2, lingering only after
    # the short read.
    await hub.start(after=b"0-0")
    try:
        await until(lambda: seen == ids)
    finally:
        await hub.stop()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rediss://:pw@db.bank:6380/0?ssl_ca_certs=/ca.pem", "rediss://:***@db.bank:6380/0?ssl_ca_certs=/ca.pem"),
        ("redis://authq:p%40ss@db.bank/1", "redis://authq:***@db.bank/1"),
        ("redis://db.bank/0?password=pw&db=2", "redis://db.bank/0?password=***&db=2"),
        ("rediss://db.bank/0?ssl_keyfile=/k.pem&ssl_password=pw", "rediss://db.bank/0?ssl_keyfile=/k.pem&ssl_password=***"),
        ("unix:///var/authq/redis.sock", "unix:///var/authq/redis.sock"),
        ("redis://authq@db.bank:6379/0", "redis://authq@db.bank:6379/0"),
    ],
)  # fmt: skip
def test_a_url_is_shown_without_its_secrets(url: str, shown: str) -> None:
    assert shown_url(url) == shown
