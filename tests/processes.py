"""Starting authq-server as a real process, for tests that kill it, and looking at
processes from /proc."""

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


def alive(pid: int) -> bool:
    """The process runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
