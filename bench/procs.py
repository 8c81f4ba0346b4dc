"""Processes under test: the authq server (subprocess with its embedded redis-server),
the bare echo server, and their CPU and memory as /proc reports them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import redis.asyncio as aioredis

from bench import loop_lag, redis_stalls
from bench.stats import CpuSample, now
from server.archive.index import ArchiveIndex
from server.settings import Settings
from server.store.connect import redis_client
from server.store.keys import Keys

_TICKS = os.sysconf("SC_CLK_TCK")
KEY_PREFIX = Settings().key_prefix
_PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """utime + stime of one process (its threads included), or of its ``thread``
    alone, in seconds."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    try:
        raw = stat.read_text()
    except OSError:
        return 0.0
    fields = raw.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15 of stat


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(raw.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def tree_cpu_seconds(pid: int, exclude: frozenset[int] = frozenset()) -> float:
    """CPU seconds of a process and its live descendants (the server's archiver and
    image-check workers), leaving out ``exclude`` and theirs (its embedded Redis)."""
    children = _children()
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in exclude:
            continue
        total += cpu_seconds(current)
        todo.extend(children.get(current, ()))
    return total


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except OSError:
        return 0


def _wait_for_line(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if marker in line:
            return line
        if not line and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before ready")
    raise RuntimeError(f"{proc.args!r} not ready after {timeout_s}s")


def _stop(proc: subprocess.Popen[str], timeout_s: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


T = TypeVar("T")

# Counts work a server's child processes still owe (0: caught up).
_Pending = Callable[[aioredis.Redis], Awaitable[int]]


async def _archive_backlog(client: aioredis.Redis) -> int:
    return await ArchiveIndex(client, Keys(KEY_PREFIX)).backlog()


async def _checks_pending(client: aioredis.Redis) -> int:
    keys = [key async for key in client.scan_iter(match=Keys(KEY_PREFIX).blob("*"))]
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hexists(key, "ck")
        checked = await pipe.execute()
    return sum(1 for done in checked if not done)


class AuthqServer:
    """``authq-server`` on a free loopback port with a fresh data directory: the
    embedded redis-server, AOF with appendfsync always. With ``metrics``, its
    Prometheus endpoint too, probing its event loop's lag every loop_lag.TICK_S."""

    def __init__(self, config: dict[str, int] | None = None, *, metrics: bool = False) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="aqb-", dir="/tmp"))
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.config: dict[str, int | float | str] = dict(config or {})
        self.metrics_port: int | None = None
        if metrics:
            self.metrics_port = free_port()
            self.config["metrics_listen"] = f"127.0.0.1:{self.metrics_port}"
            self.config["metrics_loop_lag_tick_s"] = loop_lag.TICK_S
        self.proc: subprocess.Popen[str] | None = None
        self.log: IO[str] | None = None
        # Exception lines the server logged (a benchmark must not hide server errors).
        self.errors: list[str] = []

    def start(self) -> AuthqServer:
        args = [
            str(Path(sys.executable).with_name("authq-server")),
            "--listen", self.target,
            "--data-dir", str(self.tmp / "data"),
            "--log-level", "WARNING",
            "--demo",
        ]  # fmt: skip
        # A deep queue is exactly what the automatic backlog emergency (R8) is for: it
        # would answer the load with on-site fallbacks. The benchmark measures the queue.
        config = {"backlog_declare_oldest_s": 0, "backlog_declare_estimated_s": 0, **self.config}
        if config:
            path = self.tmp / "authq.toml"
            body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())
            path.write_text("[server]\n" + body)
            args += ["--config", str(path)]
        self.log = (self.tmp / "server.log").open("w")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, text=True
        )
        _wait_for_line(self.proc, "listening on", 60.0)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def redis_dir(self) -> Path:
        return self.tmp / "data" / "redis"

    @property
    def redis_pid(self) -> int:
        return int((self.redis_dir / "redis.pid").read_text().strip())

    @property
    def redis_url(self) -> str:
        return f"unix://{self.redis_dir / 'redis.sock'}"

    def redis(self) -> aioredis.Redis:
        """A client like the server's: its Lua scripts run pipelined."""
        return redis_client(self.redis_url, 8)

    def cpu(self) -> CpuSample:
        """The server's CPU counts its child processes (archiver, image checks); its
        event loop's thread (the main thread, whose id is the pid) is also counted
        alone, since one thread runs every handler."""
        redis_pid = self.redis_pid
        return CpuSample(
            tree_cpu_seconds(self.pid, exclude=frozenset({redis_pid})),
            cpu_seconds(redis_pid),
            now(),
            cpu_seconds(self.pid, thread=self.pid),
        )

    async def archive_backlog(self) -> int:
        """Ended requests the archiver has not archived yet."""
        return await self._once(_archive_backlog)

    async def checks_pending(self) -> int:
        """Uploaded images whose full check (niced worker processes) has not ended."""
        return await self._once(_checks_pending)

    async def archive_settled(self, within_s: float = 120.0) -> float:
        """Waits until the archive has caught up; returns the seconds it took."""
        return await self._settled(_archive_backlog, within_s)

    async def checks_settled(self, within_s: float = 180.0) -> float:
        """Waits until every uploaded image is checked; returns the seconds it took."""
        return await self._settled(_checks_pending, within_s)

    async def _once(self, ask: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``ask`` on a client of its own, closed after."""
        client = self.redis()
        try:
            return await ask(client)
        finally:
            await client.aclose()

    async def _settled(self, pending: _Pending, within_s: float) -> float:
        client = self.redis()
        start = now()
        try:
            while await pending(client) and now() - start < within_s:  # noqa: ASYNC110
                await asyncio.sleep(0.25)
        finally:
            await client.aclose()
        return round(now() - start, 2)

    async def stalls_begin(self) -> int:
        """Starts watching what Redis stalls on (bench/redis_stalls.py)."""
        return await self._once(redis_stalls.begin)

    async def stalls_since(self, mark: int) -> dict[str, Any]:
        return await self._once(lambda client: redis_stalls.since(client, mark))

    async def loop_lag(self) -> loop_lag.LagCounts | None:
        """The event loop's lag so far (None without the metrics endpoint)."""
        if self.metrics_port is None:
            return None
        return await loop_lag.scrape(self.metrics_port)

    def rss(self) -> dict[str, int]:
        return {
            "server_rss_bytes": rss_bytes(self.pid),
            "redis_rss_bytes": rss_bytes(self.redis_pid),
        }

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None
        if self.log is not None:
            self.log.close()
            text = (self.tmp / "server.log").read_text(errors="replace")
            self.errors = [ln for ln in text.splitlines() if "Error" in ln or "ERROR" in ln]
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> AuthqServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EchoServer:
    """The bare grpc.aio echo server of bench/echo.py in its own process."""

    def __init__(self, durable: tuple[str, Path] | None = None) -> None:
        """``durable``: a Redis URL and a directory for its Store methods."""
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.durable = durable
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> EchoServer:
        extra = [self.durable[0], str(self.durable[1])] if self.durable else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.echo", str(self.port), *extra],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        _wait_for_line(self.proc, "echo listening", 30.0)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                _stop(self.proc)
