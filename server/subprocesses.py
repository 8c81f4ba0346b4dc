"""Stopping the child processes a server runs (its embedded Redis, its archiver)."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess

log = logging.getLogger(__name__)

# A child started with subprocess (the embedded Redis) or with asyncio (the archiver).
Child = subprocess.Popen[bytes] | asyncio.subprocess.Process


async def terminate(process: Child, what: str, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within the timeout."""
    if _exit_code(process) is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout_s):
            await _wait(process)
    except TimeoutError:
        log.warning("%s did not stop in %.0fs: killing it", what, timeout_s)
        process.kill()
        await _wait(process)


def _exit_code(process: Child) -> int | None:
    return process.poll() if isinstance(process, subprocess.Popen) else process.returncode


async def _wait(process: Child) -> None:
    if isinstance(process, subprocess.Popen):
        await asyncio.to_thread(process.wait)
    else:
        await process.wait()
