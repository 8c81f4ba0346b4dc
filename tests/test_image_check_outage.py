"""A check whose store calls fail (Redis away, or refusing writes) is said once and
its exception retrieved; nothing is recorded, so the image is checked again when it
is next needed (the dispatch gate asks for its verdict before any offer)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from authq import wire

from server.blobs import LocalBlobStore
from server.images.checker import OK, ImageChecker
from server.images.probe import ImageLimits
from server.store.keys import Keys
from tests.helpers import standard_images, until

KEYS = Keys("{authq-check-test}")


@pytest.fixture
async def unretrieved() -> AsyncIterator[list[dict[str, Any]]]:
    """What the loop's exception handler hears ("Task exception was never
    retrieved"), collected instead of logged."""
    loop = asyncio.get_running_loop()
    heard: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: heard.append(context))
    yield heard
    loop.set_exception_handler(previous)


def _checker(client: aioredis.Redis, tmp_path: Path) -> ImageChecker:
    checker = ImageChecker(client, KEYS, LocalBlobStore(tmp_path / "blobs"), ImageLimits(), 1)
    checker.start()
    return checker


@pytest.fixture
async def unreachable() -> AsyncIterator[aioredis.Redis]:
    # Port 1 on loopback: nothing listens there, so every call fails at once.
    client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    yield client
    await client.aclose()


async def _settled(checker: ImageChecker, heard: list[dict[str, Any]]) -> None:
    await until(lambda: not checker._running)
    await asyncio.sleep(0)  # the done callbacks run
    gc.collect()  # a task whose exception nobody retrieved complains when collected


async def test_a_check_that_cannot_read_the_store_is_logged_once_and_retrieved(
    unreachable: aioredis.Redis,
    tmp_path: Path,
    unretrieved: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    checker = _checker(unreachable, tmp_path)
    _, data = standard_images()[0]
    sha = wire.sha256_hex(data)
    try:
        with caplog.at_level(logging.INFO, logger="server.images.checker"):
            checker.schedule(sha, data, None)
            await _settled(checker, unretrieved)
    finally:
        await checker.stop()
    assert [c.get("message") for c in unretrieved] == []
    said = [r for r in caplog.records if sha[:12] in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert said[0].levelno == logging.WARNING
    assert checker.known(sha) is None  # nothing decided: checked again when needed


async def test_a_verdict_the_store_refuses_is_not_kept_and_is_checked_again(
    redis_client: aioredis.Redis,
    tmp_path: Path,
    unretrieved: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    checker = _checker(redis_client, tmp_path)
    _, data = standard_images()[0]
    sha = wire.sha256_hex(data)
    await checker.blobs.put(sha, data)  # stored at upload, before its check starts
    # Reads answer, writes are refused (NOREPLICAS), as in a MISCONF.
    await redis_client.config_set("min-replicas-to-write", 1)
    try:
        with caplog.at_level(logging.INFO, logger="server.images.checker"):
            checker.schedule(sha, data, None)
            await _settled(checker, unretrieved)
        assert [c.get("message") for c in unretrieved] == []
        said = [r for r in caplog.records if sha[:12] in r.getMessage()]
        assert len(said) == 1, [r.getMessage() for r in caplog.records]
        assert checker.known(sha) is None
        assert await redis_client.hget(KEYS.blob(sha), "ck") is None
        await redis_client.config_set("min-replicas-to-write", 0)
        # The store is back: the next one to need the verdict gets it, and it is kept.
        assert await checker.verdict(sha) == OK
        assert await redis_client.hget(KEYS.blob(sha), "ck") == OK.encode()
    finally:
        await redis_client.config_set("min-replicas-to-write", 0)
        await checker.stop()
