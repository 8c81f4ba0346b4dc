"""A background loop whose body fails is logged and started again; stop() still stops it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server import background
from server.background import BackgroundLoop
from tests.helpers import until


async def test_a_body_that_fails_is_logged_and_started_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background, "RESTART_FIRST_S", 0.01)
    loop = BackgroundLoop("flaky")
    starts: list[int] = []

    async def body() -> None:
        starts.append(len(starts))
        if len(starts) <= 2:
            raise RuntimeError(f"failure {len(starts)}")
        while not loop.stopping:
            await loop.nap(None)

    with caplog.at_level(logging.ERROR, logger="server.background"):
        loop.start(body)
        await until(lambda: len(starts) == 3)
        await loop.stop()
    assert loop.restarts == 2
    failures = [r for r in caplog.records if r.name == "server.background"]
    assert [r.getMessage() for r in failures] == [
        "flaky failed; starting it again in 0.01s",
        "flaky failed; starting it again in 0.02s",
    ]
    assert [str(r.exc_info[1]) for r in failures if r.exc_info] == ["failure 1", "failure 2"]


async def test_the_pause_doubles_while_the_body_keeps_failing(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background, "RESTART_FIRST_S", 0.001)
    monkeypatch.setattr(background, "RESTART_MAX_S", 0.004)
    loop = BackgroundLoop("failing")

    async def body() -> None:
        raise RuntimeError("always")

    with caplog.at_level(logging.ERROR, logger="server.background"):
        loop.start(body)
        await until(lambda: loop.restarts >= 5)
        await loop.stop()
    failures = [r for r in caplog.records if r.name == "server.background"]
    pauses = [r.args[1] for r in failures if isinstance(r.args, tuple)]
    assert pauses[:5] == [0.001, 0.002, 0.004, 0.004, 0.004]


async def test_a_body_that_returns_is_not_started_again() -> None:
    loop = BackgroundLoop("once")
    runs: list[bool] = []

    async def body() -> None:
        runs.append(True)

    loop.start(body)
    await until(lambda: runs == [True])
    await asyncio.sleep(0.05)
    await loop.stop()
    assert runs == [True]
    assert loop.restarts == 0


async def test_a_body_failing_as_it_is_stopped_is_not_started_again() -> None:
    loop = BackgroundLoop("stopping")
    runs: list[bool] = []

    async def body() -> None:
        runs.append(True)
        try:
            await loop.nap(None)
        finally:
            raise RuntimeError("failed on the way out")

    loop.start(body)
    await until(lambda: runs == [True])
    await loop.stop()
    assert runs == [True]
    assert loop.restarts == 0
