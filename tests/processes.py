"""Starting authq-server as a real process, for tests that kill it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server_process(
    data_dir: Path,
    port: int,
    env: dict[str, str] | None = None,
    timeout_s: float = 30,
    extra_args: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """authq-server on its embedded Redis; returns once it listens. Its output goes
    to server.log beside the data directory (a pipe nobody reads could fill up)."""
    log_path = data_dir.parent / "server.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server.main",
                "--listen",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(data_dir),
                "--log-level",
                "WARNING",
                "--demo",
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if f"listening on 127.0.0.1:{port}" in log_path.read_text()[start:]:
            return process
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"authq-server did not start: {log_path.read_text()[-2000:]}")


def redis_pid(data_dir: Path) -> int:
    return int((data_dir / "redis" / "redis.pid").read_text().strip())
