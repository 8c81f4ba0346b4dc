"""The demo launcher's children die with it (Linux) without a preexec_fn: Python run
between fork and exec aborts in gRPC's poller when the launcher has a channel open
(grpc/grpc#43055). Each child asks for it itself (authorizer_console/die_with_parent.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from authorizer_console import demo, die_with_parent
from tests.test_demo_launcher import Launcher, gone, launcher_args, redis_pid

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")

# Writes the signal it gets when its parent dies, its pid, and the parent variable.
PROBE = """
import ctypes, os, sys
signal = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(signal))  # PR_GET_PDEATHSIG
variable = os.environ.get(sys.argv[2], "-")
open(sys.argv[1], "w").write(f"{signal.value} {os.getpid()} {variable}")
"""


def test_a_child_asks_for_sigterm_itself_and_no_preexec_fn_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    popen = subprocess.Popen
    options: list[dict[str, Any]] = []

    def spy(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        options.append(kwargs)
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    launcher = demo.Demo(demo.Plan(data_dir=tmp_path, port=1))
    out = tmp_path / "probe.txt"
    pid = launcher._spawn(
        "probe", [sys.executable, "-c", PROBE, str(out), die_with_parent.PARENT_ENV]
    )
    assert launcher.started[-1][1].wait(30) == 0, (tmp_path / "probe.log").read_text()
    assert [o.get("preexec_fn") for o in options] == [None]
    # The command itself, same pid, with the signal asked for; the variable not passed on.
    assert out.read_text() == f"{int(signal.SIGTERM)} {pid} -"


def test_a_child_whose_launcher_is_already_gone_does_not_start(tmp_path: Path) -> None:
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    marker = tmp_path / "started"
    child = subprocess.run(
        [sys.executable, "-m", die_with_parent.MODULE,
         sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
        env={die_with_parent.PARENT_ENV: ended.stdout.strip()},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert child.returncode == 1
    assert "is gone" in child.stderr
    assert not marker.exists()


def test_a_launcher_killed_outright_leaves_nothing_running(tmp_path: Path) -> None:
    console = [sys.executable, "-c", "import time; time.sleep(300)"]
    launcher = Launcher(launcher_args(tmp_path, console), tmp_path / "out.txt")
    try:
        launcher.wait_for("demo: console pid(s) ")
        console_pid = int(launcher.text().split("demo: console pid(s) ")[1].split(":")[0])
        pids = [*launcher.pids().values(), redis_pid(tmp_path), console_pid]
        assert len(pids) == 4, launcher.text()
    finally:
        launcher.process.kill()
        launcher.process.wait()
    # The server stops its Redis on the SIGTERM it gets.
    deadline = time.monotonic() + 30
    while not all(ended(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in pids if not ended(pid)] == [], launcher.text()


def ended(pid: int) -> bool:
    """Gone, or a zombie: orphans are reaped by whoever adopts them, if anyone does."""
    try:
        return gone(pid) or Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True
