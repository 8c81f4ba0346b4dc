"""The archiver in its own process (server/archive/worker.py): it archives what the
server decides, comes back if it dies, stops with the server, and stops by itself
when the server is gone."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from server.archive.archiver import ArchiverConfig
from server.archive.worker import ArchiveSettings
from tests.conftest import RunningServer, StartServer
from tests.processes import alive
from tests.test_archive import FAST, archived, decided


async def _gone(pid: int, within_s: float = 15) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.1)
    return False


async def worker_server(start_server: StartServer) -> RunningServer:
    return await start_server(archive_worker=True, **FAST)


async def test_the_worker_process_archives_decisions_and_stops_with_the_server(
    start_server: StartServer,
) -> None:
    server = await worker_server(start_server)
    process = server.runtime.archiver_process
    assert process is not None
    assert process.pid is not None
    pid = process.pid
    rid = await decided(server)
    marker = await archived(server.runtime, rid, within_s=20)
    assert marker.state == "APPROVED"
    # It runs at a lower CPU priority than the server: on Linux only on CPU time that
    # nothing else wants.
    assert os.getpriority(os.PRIO_PROCESS, pid) > os.getpriority(os.PRIO_PROCESS, 0)
    if hasattr(os, "SCHED_IDLE"):
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
    await process.stop()  # what Runtime.stop does first
    assert await _gone(pid)


async def test_a_worker_that_dies_is_started_again(start_server: StartServer) -> None:
    server = await worker_server(start_server)
    process = server.runtime.archiver_process
    assert process is not None
    assert process.pid is not None
    first = process.pid
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while process.pid == first and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert process.pid != first
    assert process.starts == 2
    rid = await decided(server)
    assert (await archived(server.runtime, rid, within_s=20)).state == "APPROVED"


async def test_an_orphaned_worker_stops_by_itself(server: RunningServer) -> None:
    """A server killed outright cannot stop its archiver; the archiver notices."""
    settings = server.runtime.settings
    config = ArchiveSettings(
        redis_url=server.runtime.redis_url,
        key_prefix=settings.key_prefix,
        archive_dir=str(settings.data_dir / "archive"),
        blob_dir=str(settings.data_dir / "blobs"),
        archiver=ArchiverConfig(keep_hot_s=3600, sweep_s=1, gc_interval_s=3600),
        gc_grace_s=86400,
    )
    # A parent shell starts the worker in the background, then is killed outright.
    # The shell puts its own pid ($$) in the settings: no race with the worker's start.
    head, tail = config.to_json().split('"parent_pid": 0')
    script = (
        f"{sys.executable} -m server.archive.worker '{head}\"parent_pid\": '\"$$\"'{tail}' "
        ">/dev/null & echo $!; sleep 60 >/dev/null"
    )
    shell = await asyncio.create_subprocess_exec("sh", "-c", script, stdout=asyncio.subprocess.PIPE)
    assert shell.stdout is not None
    pid = int((await shell.stdout.readline()).decode().strip())
    await asyncio.sleep(1)
    assert alive(pid)
    shell.kill()
    await shell.wait()
    assert await _gone(pid, within_s=20), "the orphaned archiver kept running"
