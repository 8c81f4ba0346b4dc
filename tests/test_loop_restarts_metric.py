"""A background loop whose body keeps failing is started again each time (server/
background.py); the metrics endpoint counts those restarts by loop, so that an
operator sees one that never runs long."""

from __future__ import annotations

import pytest

from server import background
from server.background import BackgroundLoop
from tests.conftest import StartServer
from tests.helpers import until
from tests.test_metrics import scrape, value

RESTARTS = "authq_background_loop_restarts_total"


async def test_restarts_of_a_failing_loop_are_counted_by_loop(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background, "RESTART_FIRST_S", 0.01)
    server = await start_server(metrics_listen="127.0.0.1:0")
    samples = await scrape(server)
    # The server's loops are listed from their start, before any restart, so that an
    # alert on the counter's increase sees the first one.
    listed = {dict(labels).get("loop") for name, labels in samples if name == RESTARTS}
    assert {"work-dispatcher", "lease-reaper", "event-hub", "backlog-monitor"} <= listed
    loop = BackgroundLoop("restarts-metric-test")
    assert value(await scrape(server), RESTARTS, loop="restarts-metric-test") == 0

    async def body() -> None:
        if loop.restarts < 3:
            raise RuntimeError("keeps failing")
        while not loop.stopping:
            await loop.nap(None)

    loop.start(body)
    try:
        await until(lambda: loop.restarts == 3)
        samples = await scrape(server)
    finally:
        await loop.stop()
    assert value(samples, RESTARTS, loop="restarts-metric-test") == 3
