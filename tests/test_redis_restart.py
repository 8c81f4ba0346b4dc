"""The server keeps serving through a Redis crash and restart: acknowledged requests
are still there, a call made during the outage waits it out, and a watcher picks up
where it was."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from authq.v1 import common_pb2 as cpb

from server.accounts.model import Role
from server.app import Runtime, create_server
from server.domain.states import Outcome
from server.embedded_redis import EmbeddedRedis
from server.settings import Settings
from teller_client.client import TellerClient
from tests.conftest import PASSWORD
from tests.helpers import request, standard_images


async def test_a_redis_crash_and_restart_loses_nothing(tmp_path: Path, open_policy: Path) -> None:
    redis = EmbeddedRedis(tmp_path / "redis")
    url = await redis.start()
    settings = Settings.load(
        overrides={"redis_url": url, "data_dir": tmp_path / "data", "policy_file": open_policy}
    )
    runtime = await Runtime.start(settings)
    server, port = create_server(runtime, "127.0.0.1:0")
    await server.start()
    await runtime.accounts.create_branch("branch-1", "branch 1")
    await runtime.accounts.create_user(
        "teller-1", "T", [Role.TELLER], PASSWORD, branch_id="branch-1", must_change_password=False
    )
    try:
        async with TellerClient(f"127.0.0.1:{port}", "teller-1", PASSWORD) as teller:
            await teller.upload_images(standard_images())
            acked = [(await teller.submit(request())).request.request_id for _ in range(20)]
            updates: list[cpb.RequestUpdate] = []

            async def watch() -> None:
                async for update in teller.watch(acked[0]):
                    updates.append(update)

            watcher = asyncio.create_task(watch())
            while not updates:
                await asyncio.sleep(0.01)

            assert redis.process is not None
            os.kill(redis.process.pid, signal.SIGKILL)
            redis.process.wait()
            restart = asyncio.create_task(_restart_after(redis, 0.5))
            late = await teller.submit(request())  # waits through the outage
            await restart

            for rid in [*acked, late.request.request_id]:
                assert (await teller.get(rid)).state == cpb.REQUEST_STATE_QUEUED

            claim = await runtime.store.claim("auth-1")
            assert claim is not None
            assert claim.record.request_id == acked[0]
            await runtime.store.decide(acked[0], claim.token, "auth-1", Outcome.APPROVE)
            await asyncio.wait_for(watcher, 10)
            assert [u.event for u in updates] == ["SUBMITTED", "CLAIMED", "APPROVED"]
    finally:
        await server.stop(None)
        await runtime.stop()
        await redis.stop()


async def _restart_after(redis: EmbeddedRedis, delay: float) -> None:
    await asyncio.sleep(delay)
    await redis.start()
