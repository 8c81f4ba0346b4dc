"""A Redis that refuses every write (full under its memory limit, unable to write its
disk, a read-only replica) is answered as what it is, with nothing changed, rather
than as a crash of the server; and the log says so once, not once per call."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from authq.reconnect import UNANSWERED_TEXT
from authq.refusals import Refusal, refusal_of

from server.api import status
from server.api.status import refused
from server.embedded_redis import EmbeddedRedis
from server.store.redis_pipe import _error
from teller_client import cli, fallback_cli
from teller_client.journal import Journal
from tests.conftest import StartServer
from tests.helpers import request, standard_images
from tests.test_admission import _rpc_error

FULL = (
    "the queue store is full (Redis reached its maxmemory): nothing was changed; the center "
    "takes no change until its operators give Redis more memory"
)


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[str]:
    """A Redis of the test's own, whose memory limit it may change."""
    embedded = EmbeddedRedis(tmp_path / "redis")
    yield await embedded.start()
    await embedded.stop()


async def test_a_full_redis_refuses_a_submit_which_then_lands_once(
    start_server: StartServer, own_redis: str
) -> None:
    server = await start_server(redis_url=own_redis)
    redis_client = aioredis.Redis.from_url(own_redis)
    submission = request(request_id="full-store-0001")
    async with server.teller() as teller:
        await redis_client.config_set("maxmemory", "1")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await teller.stub.Submit(submission, metadata=teller.metadata)
        finally:
            await redis_client.config_set("maxmemory", "0")
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert failure.value.details() == FULL
        assert refusal_of(failure.value) == Refusal("STORE_FULL")
        assert not await redis_client.exists(server.runtime.store.keys.request("full-store-0001"))
        # Nothing was changed: the same request goes in as new.
        reply = await teller.stub.Submit(submission, metadata=teller.metadata)
    assert reply.request.request_id == "full-store-0001"
    await redis_client.aclose()


async def test_a_teller_whose_center_cannot_store_falls_back_on_site(
    start_server: StartServer,
    own_redis: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = await start_server(redis_url=own_redis)
    redis_client = aioredis.Redis.from_url(own_redis)
    journal = tmp_path / "journal.jsonl"
    captured = []
    for kind, data in standard_images():
        path = tmp_path / f"{kind}.jpg"
        path.write_bytes(data)
        captured += ["--image", f"{kind}={path}"]
    args = cli.build_parser().parse_args(
        ["--journal", str(journal), "submit", "--type", "CASH_WITHDRAWAL", "--amount",
         "12000.50", "--account", "6222020200001234", "--customer", "Zhang San",
         "--request-id", "fb-store-0001", *captured]
    )  # fmt: skip
    async with server.teller() as teller:
        await redis_client.config_set("maxmemory", "1")
        try:
            code = await cli.submit(teller, args, cli.submit_request(args), cli.Output(False))
        finally:
            await redis_client.config_set("maxmemory", "0")
    await redis_client.aclose()
    assert code == fallback_cli.EXIT_UNREACHABLE
    assert fallback_cli.STORE_REFUSES_TEXT in capsys.readouterr().out
    entry = Journal(journal).entries()["fb-store-0001"]
    assert (entry.event.status_code, entry.event.status_reason) == (
        "RESOURCE_EXHAUSTED",
        "STORE_FULL",
    )
    assert "center cannot store requests (STORE_FULL)" in fallback_cli.describe(entry)


async def test_a_submit_the_store_refuses_is_not_tried_again(
    start_server: StartServer, own_redis: str
) -> None:
    """A read-only Redis (a replica: a failover gone wrong) takes nothing until its
    operators act, so the teller client does not spend its retries' pauses on it
    before the branch falls back on site; an UNAVAILABLE with no reason is retried,
    and the teller told so."""
    server = await start_server(redis_url=own_redis)
    redis_client = aioredis.Redis.from_url(own_redis)
    async with server.teller() as teller:
        real = teller.stub.Submit
        tries: list[str] = []

        def counted(message: Any, **kwargs: Any) -> Any:
            tries.append(message.request_id)
            return real(message, **kwargs)

        teller.stub.Submit = counted
        await redis_client.replicaof("127.0.0.1", "1")  # a primary that is not there
        try:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await teller.submit(request(request_id="read-only-0001"))
        finally:
            await redis_client.replicaof("NO", "ONE")
        assert refusal_of(failure.value) == Refusal("STORE_READ_ONLY")
        assert tries == ["read-only-0001"]
        # The same client tries again what could be a moment's loss of the center, and
        # says so first, once.
        teller.stub.Submit = _unavailable_then(real, tries, times=2)
        said: list[str] = []
        teller.at_capacity.say = said.append
        reply = await teller.submit(request(request_id="lost-twice-0001"))
    assert reply.request.request_id == "lost-twice-0001"
    assert tries == ["read-only-0001"] + ["lost-twice-0001"] * 3
    assert said == [UNANSWERED_TEXT]
    await redis_client.aclose()


def _unavailable_then(real: Any, tries: list[str], times: int) -> Any:
    def submit(message: Any, **kwargs: Any) -> Any:
        tries.append(message.request_id)
        if tries.count(message.request_id) <= times:
            raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset")
        return real(message, **kwargs)

    return submit


@pytest.mark.parametrize(
    ("code", "reason", "falls_back"),
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "STORE_FULL", True),
        (grpc.StatusCode.UNAVAILABLE, "STORE_CANNOT_PERSIST", True),
        (grpc.StatusCode.UNAVAILABLE, "STORE_READ_ONLY", True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "CENTER_AT_CAPACITY", True),
        (grpc.StatusCode.UNAVAILABLE, "", True),  # no answer at all
        # grpc's own (a message too large), and the center's refusals of the request.
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "", False),
        (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID", False),
    ],
)
def test_a_submit_falls_back_on_site_only_when_the_center_can_take_nothing(
    code: grpc.StatusCode, reason: str, falls_back: bool
) -> None:
    assert fallback_cli.falls_back(_rpc_error(code, "refused", reason)) is falls_back


# What Redis 6.2 answers (a script wraps the refusal) and what later versions and
# plain commands answer, as the Redis pipe and redis-py parse them.
IN_A_SCRIPT = "Error running script (call to f_8f42): @user_script:1: @user_script: 1: -{} "


@pytest.mark.parametrize(
    ("said", "code", "reason"),
    [
        (IN_A_SCRIPT.format("OOM") + "command not allowed when used memory > 'maxmemory'.",
         grpc.StatusCode.RESOURCE_EXHAUSTED, "STORE_FULL"),
        ("OOM command not allowed when used memory > 'maxmemory'. script: f_8f42, on "
         "@user_script:1.", grpc.StatusCode.RESOURCE_EXHAUSTED, "STORE_FULL"),
        (IN_A_SCRIPT.format("MISCONF") + "Errors writing to the AOF file: No space left on "
         "device", grpc.StatusCode.UNAVAILABLE, "STORE_CANNOT_PERSIST"),
        ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to "
         "persist to disk.", grpc.StatusCode.UNAVAILABLE, "STORE_CANNOT_PERSIST"),
        ("READONLY You can't write against a read only replica.",
         grpc.StatusCode.UNAVAILABLE, "STORE_READ_ONLY"),
        (IN_A_SCRIPT.format("READONLY") + "You can't write against a read only replica.",
         grpc.StatusCode.UNAVAILABLE, "STORE_READ_ONLY"),
    ],
)  # fmt: skip
def test_each_refusal_of_writes_is_named(said: str, code: grpc.StatusCode, reason: str) -> None:
    answer = refused(_error(redis.exceptions.ResponseError(said)))
    assert (answer.code, answer.refusal.reason) == (code, reason)
    assert "nothing was changed" in answer.message


def test_another_error_reply_is_a_fault_of_the_server() -> None:
    answer = refused(redis.exceptions.ResponseError("ERR Error running script: bad argument"))
    assert (answer.code, answer.message) == (
        grpc.StatusCode.INTERNAL,
        "internal error (ResponseError)",
    )


def test_a_store_refusing_writes_is_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(status, "clock", lambda: now[0])
    monkeypatch.setattr(status, "_store_warned", {})
    full = redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    with caplog.at_level(logging.WARNING, logger="server.api.status"):
        for _ in range(3):
            refused(full)
        now[0] += status.STORE_WARNING_EVERY_S
        refused(full)
    assert [record.getMessage() for record in caplog.records] == [
        "Redis refuses writes: command not allowed when used memory > 'maxmemory'.",
        "Redis refuses writes: command not allowed when used memory > 'maxmemory'. "
        "(2 more refused since the last warning)",
    ]
