"""While dispatching keeps failing (Redis away or refusing writes), the dispatcher
tries again every 0.2 s but says so sparingly: the first failure with its traceback,
then a short line at most every STILL_FAILING_EVERY_S, and one line when it works
again."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from authq import wire

from server import dispatch
from server.app import Runtime
from server.embedded_redis import EmbeddedRedis
from server.settings import Settings
from tests.conftest import RunningServer
from tests.helpers import standard_images, store_submission, until


def _dispatch_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == dispatch.__name__]


def _saying(records: list[logging.LogRecord], text: str) -> list[logging.LogRecord]:
    return [r for r in records if text in r.getMessage()]


async def test_a_lasting_failure_is_told_once_then_briefly_then_its_end(
    server: RunningServer,
    redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = server.runtime.store
    images = server.runtime.center.images
    assert images is not None
    for _, data in standard_images():  # the server's own uploads, checked before
        await images.verdict(wire.sha256_hex(data))
    await store.submit(store_submission("outage-0001"))
    failures = 0
    claim = store.claim_or_nothing

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        try:
            return await claim(*args, **kwargs)
        except Exception:
            failures += 1
            raise

    monkeypatch.setattr(store, "claim_or_nothing", counted)
    monkeypatch.setattr(dispatch, "STILL_FAILING_EVERY_S", 3600.0)
    caplog.set_level(logging.INFO, logger=dispatch.__name__)
    # Redis answers, and refuses every write at once (NOREPLICAS: it is to write only
    # with a replica in sync, and has none), so the dispatcher fails every 0.2 s.
    await redis_client.config_set("min-replicas-to-write", 1)
    try:
        taker = asyncio.create_task(server.runtime.dispatcher.next_item("auth-1"))
        await until(lambda: failures >= 8)
        records = _dispatch_records(caplog)
        assert len(records) == 1, [r.getMessage() for r in records]
        assert records[0].exc_info is not None  # the first, with its traceback
        # Due again at every failure from now on: each is a short line.
        monkeypatch.setattr(dispatch, "STILL_FAILING_EVERY_S", 0.0)
        await until(lambda: len(_dispatch_records(caplog)) >= 3)
        for record in _dispatch_records(caplog)[1:]:
            assert record.exc_info is None
            assert re.search(r"still failing after \d+ s", record.getMessage())
    finally:
        await redis_client.config_set("min-replicas-to-write", 0)
    got = await asyncio.wait_for(taker, 10)
    assert got.record.request_id == "outage-0001"
    # Said once: the rounds after it are no news.
    await store.submit(store_submission("outage-0002"))
    more = await asyncio.wait_for(server.runtime.dispatcher.next_item("auth-2"), 10)
    assert more.record.request_id == "outage-0002"
    records = _dispatch_records(caplog)
    assert len(_saying(records, "works again")) == 1
    assert sum(r.exc_info is not None for r in records) == 1


async def test_a_redis_stopped_and_restarted_is_told_once_and_its_return_once(
    tmp_path: Path, open_policy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis = EmbeddedRedis(tmp_path / "redis")
    url = await redis.start()
    settings = Settings.load(
        overrides={
            "redis_url": url,
            "data_dir": tmp_path / "data",
            "policy_file": open_policy,
            "archive_worker": False,
        }
    )
    runtime = await Runtime.start(settings)
    caplog.set_level(logging.INFO, logger=dispatch.__name__)
    try:
        await runtime.store.submit(store_submission("outage-0002"))
        assert redis.process is not None
        os.kill(redis.process.pid, signal.SIGKILL)
        redis.process.wait()
        taker = asyncio.create_task(runtime.dispatcher.next_item("auth-1"))
        # A claim rides out about 7 s of outage (the pipe's retries) before it fails.
        await until(lambda: bool(_dispatch_records(caplog)), 30)
        await redis.start()
        got = await asyncio.wait_for(taker, 30)
        assert got.record.request_id == "outage-0002"
        records = _dispatch_records(caplog)
        assert sum(r.exc_info is not None for r in records) == 1
        assert len(_saying(records, "works again")) == 1
    finally:
        await runtime.stop()
        await redis.stop()
