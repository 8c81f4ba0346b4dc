"""A start that fails leaves nothing behind, and says why in one line: a policy file
that does not validate is refused before anything runs (exit 2); a part failing
late in the start stops the parts already started, the embedded Redis last."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from server.app import Runtime
from server.backlog import BacklogMonitor
from server.embedded_redis import EmbeddedRedis
from server.main import main
from server.settings import Settings
from tests.processes import alive, children, command_line


def _interpreter_helper(pid: int) -> bool:
    """multiprocessing's resource tracker and fork server serve the whole interpreter
    and end with it: not a part of the runtime."""
    helpers = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
    return any(helper in command_line(pid) for helper in helpers)


def test_a_bad_policy_file_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text("this is = not [valid\n")
    data = tmp_path / "data"
    code = main(["--listen", "127.0.0.1:0", "--data-dir", str(data), "--policy", str(bad)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("authq-server: the business policy is refused: ")
    assert f"{bad}:1: not valid TOML" in err
    assert "Traceback" not in err
    assert not (data / "redis").exists()  # no redis-server was started


async def test_a_part_failing_late_stops_those_started(
    tmp_path: Path, open_policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []  # redis-server pids
    real_start = EmbeddedRedis.start

    async def remember(self: EmbeddedRedis) -> str:
        url = await real_start(self)
        assert self.process is not None
        started.append(self.process.pid)
        return url

    def refuse(self: BacklogMonitor) -> None:
        raise RuntimeError("the backlog monitor could not start")

    monkeypatch.setattr(EmbeddedRedis, "start", remember)
    # The last part to start before the runtime is handed over.
    monkeypatch.setattr(BacklogMonitor, "start", refuse)
    settings = Settings.load(overrides={"data_dir": tmp_path / "data", "policy_file": open_policy})
    assert settings.archive_worker  # the archiver's child process is among the parts
    tasks_before = asyncio.all_tasks()
    children_before = children(os.getpid())

    with pytest.raises(RuntimeError, match="the backlog monitor could not start"):
        await Runtime.start(settings)

    # The error raised is the one that failed the start, and nothing runs any more.
    [redis_pid] = started
    assert not alive(redis_pid)
    for pid in children(os.getpid()) - children_before:
        if alive(pid) and not _interpreter_helper(pid):
            raise AssertionError(
                f"child process {pid} outlived the failed start: {command_line(pid)}"
            )
    await asyncio.sleep(0)
    left = {t for t in asyncio.all_tasks() - tasks_before if not t.done()}
    assert not left, left
