"""Stopping the child processes a server runs (its embedded Redis, its archiver)."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess

log = logging.getLogger(__name__)


async def terminate(process: subprocess.Popen[bytes], what: str, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within the timeout."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(process.wait, timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop in %.0fs: killing it", what, timeout_s)
        process.kill()
        await asyncio.to_thread(process.wait)
