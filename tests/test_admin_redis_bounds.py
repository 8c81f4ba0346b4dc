"""authq-admin reaches Redis with the server's bounds (server/store/connect.py): a
connect that gets no answer fails in CONNECT_TIMEOUT_S, a reply is awaited at most
REPLY_DEADLINE_S, and a TCP connection is probed while idle, so that a Redis behind a
firewall or a host gone quiet fails the command in seconds instead of leaving the
operator waiting for minutes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from server.admin import cli
from server.store.redis_pipe import CONNECT_TIMEOUT_S, KEEPALIVE_OPTIONS, REPLY_DEADLINE_S


@contextlib.contextmanager
def _unanswering_listener() -> Iterator[int]:
    """A port whose accept queue is full, so the kernel drops further connection
    attempts, as a firewall does: a connect waits for its SYN retries."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            yield port


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every connection pool made while the test runs (redis-py's pools are untyped)."""
    made: list[Any] = []
    init = aioredis.ConnectionPool.__init__

    def recording(self: aioredis.ConnectionPool, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(aioredis.ConnectionPool, "__init__", recording)
    return made


async def test_a_redis_that_does_not_answer_fails_the_command_in_seconds(
    pools: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with _unanswering_listener() as port:
        code = await asyncio.to_thread(
            cli.main, ["--redis-url", f"redis://127.0.0.1:{port}/0", "user", "list"]
        )
    assert code == 2
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in capsys.readouterr().err
    # How soon it failed is the bench's kind of figure; the bounds it failed by are these.
    [pool] = pools
    connection = pool.make_connection()
    assert connection.socket_connect_timeout == CONNECT_TIMEOUT_S
    assert connection.socket_timeout == REPLY_DEADLINE_S
    # An idle connection to a host that went away is found dead in seconds.
    assert connection.socket_keepalive
    assert connection.socket_keepalive_options == KEEPALIVE_OPTIONS


async def test_the_embedded_redis_socket_is_reached_with_the_same_bounds(
    redis_client: aioredis.Redis, redis_url: str, pools: list[Any]
) -> None:
    # A Unix socket takes no keepalive settings: given them, every command would fail.
    code = await asyncio.to_thread(cli.main, ["--redis-url", redis_url, "user", "list"])
    assert code == 0
    [pool] = pools
    connection = pool.make_connection()
    assert connection.socket_connect_timeout == CONNECT_TIMEOUT_S
    assert connection.socket_timeout == REPLY_DEADLINE_S
