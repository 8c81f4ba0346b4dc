"""`make demo`'s launcher with the real server and simulator, the console windows
replaced by short-lived processes: closing the console, Ctrl-C, and no display each
end with every process it started gone (the embedded Redis included)."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authorizer_console.demo import MARKER, build_parser, plan_from, prepare_data_dir
from server.accounts.model import Role
from server.demo import CASH_BUSINESS, DEMO_BRANCHES, DEMO_USERS, seed_demo
from teller_client.simulator import DEMO_TELLERS
from tests.conftest import RunningServer
from tests.processes import free_port

# A stand-in console: logs in as the console's account and takes one item, which
# proves the server runs with the demo accounts and the simulator submits.
TAKES_ONE_ITEM = """
import asyncio, sys
from authorizer_console.client import AuthorizerClient

async def main() -> None:
    async with AuthorizerClient(sys.argv[1], sys.argv[2], "authq-demo-pass") as client:
        offer = await client.next(timeout=40)
        await client.release(offer.request.request_id, offer.lease.fencing_token, "test")

asyncio.run(main())
"""


def launcher_args(tmp_path: Path, console: list[str], *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "authorizer_console.demo",
        "--data-dir", str(tmp_path / "demo"), "--port", str(free_port()),
        "--speed", "20", "--supervisor", "",
        "--console-command", shlex.join(console), *extra,
    ]  # fmt: skip


class Launcher:
    """The launcher as a process, its output in a file read while it runs."""

    def __init__(self, args: list[str], out: Path, env: dict[str, str] | None = None) -> None:
        self.out = out
        with open(out, "wb") as sink:
            self.process = subprocess.Popen(
                args, stdout=sink, stderr=subprocess.STDOUT, env=env or dict(os.environ),
            )  # fmt: skip

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for(self, needle: str, within_s: float = 60) -> None:
        deadline = time.monotonic() + within_s
        while needle not in self.text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"never printed {needle!r}:\n{self.text()}")
            time.sleep(0.1)

    def pids(self) -> dict[str, int]:
        found = {}
        for line in self.text().splitlines():
            words = line.split()
            for name in ("server", "simulator"):
                if line.startswith(f"demo: {name} pid "):
                    found[name] = int(words[3].rstrip(":"))
        return found

    def finish(self, within_s: float = 90) -> int:
        try:
            return self.process.wait(within_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the launcher did not end:\n{self.text()}") from None


@pytest.fixture
def launchers() -> Iterator[list[Launcher]]:
    started: list[Launcher] = []
    yield started
    for launcher in started:  # a failed test must not leave a demo running
        if launcher.process.poll() is None:
            launcher.process.send_signal(signal.SIGINT)
            launcher.finish()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def assert_all_stopped(pids: list[int], launcher: Launcher) -> None:
    alive = [pid for pid in pids if not gone(pid)]
    assert not alive, f"still running: {alive}\n{launcher.text()}"


def redis_pid(tmp_path: Path) -> int:
    return int((tmp_path / "demo" / "redis" / "redis.pid").read_text().strip())


def test_closing_the_console_stops_the_simulator_and_the_server(
    tmp_path: Path, launchers: list[Launcher]
) -> None:
    console = [sys.executable, "-c", TAKES_ONE_ITEM, "{server}", "{user}"]
    launcher = Launcher(launcher_args(tmp_path, console), tmp_path / "out.txt")
    launchers.append(launcher)
    launcher.wait_for("close the windows or press Ctrl-C")
    pids = [*launcher.pids().values(), redis_pid(tmp_path)]
    assert len(pids) == 3, launcher.text()
    assert launcher.finish() == 0, launcher.text()
    assert "demo: stopped" in launcher.text()
    assert "AUTHORIZER       authorizer-1 authorizer-2" in launcher.text()
    assert_all_stopped(pids, launcher)


def test_ctrl_c_stops_everything(tmp_path: Path, launchers: list[Launcher]) -> None:
    console = [sys.executable, "-c", "import time; time.sleep(300)"]
    launcher = Launcher(launcher_args(tmp_path, console), tmp_path / "out.txt")
    launchers.append(launcher)
    launcher.wait_for("demo: console pid(s) ")
    console_pid = int(launcher.text().split("demo: console pid(s) ")[1].split(":")[0])
    pids = [*launcher.pids().values(), redis_pid(tmp_path), console_pid]
    assert all(not gone(pid) for pid in pids)
    launcher.process.send_signal(signal.SIGINT)
    assert launcher.finish() == 130, launcher.text()
    assert_all_stopped(pids, launcher)


def test_without_a_display_it_says_so_and_shows_the_queue_as_text(
    tmp_path: Path, launchers: list[Launcher]
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    args = launcher_args(tmp_path, [], "--duration", "8", "--text-every", "0.5")
    args[args.index("--supervisor") + 1] = "supervisor-1"
    launcher = Launcher(args, tmp_path / "out.txt", env)
    launchers.append(launcher)
    launcher.wait_for("demo: simulator pid")
    pids = [*launcher.pids().values(), redis_pid(tmp_path)]
    assert launcher.finish() == 0, launcher.text()
    text = launcher.text()
    assert "no display ($DISPLAY is unset)" in text
    assert "console pid" not in text
    assert "by branch: branch-" in text, text
    assert_all_stopped(pids, launcher)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_the_human_never_shares_an_account_with_a_simulated_authorizer() -> None:
    with pytest.raises(ValueError, match="authorizer-1 is one of the simulated"):
        plan_from(parse("--user", "authorizer-1", "--port", "1"))
    plan = plan_from(parse("--sim-authorizers", "0", "--user", "authorizer-1", "--port", "1"))
    assert plan.console_user == "authorizer-1"
    assert plan_from(parse("--port", "1")).console_user == "authorizer-2"


def test_fresh_deletes_only_a_directory_the_demo_made(tmp_path: Path) -> None:
    foreign = tmp_path / "var"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not the demo's")
    with pytest.raises(RuntimeError, match="not made by the demo"):
        prepare_data_dir(foreign, fresh=True)
    assert (foreign / "keep.txt").exists()
    demo = tmp_path / "demo"
    prepare_data_dir(demo, fresh=False)
    (demo / "old-queue").write_text("x")
    prepare_data_dir(demo, fresh=True)
    assert not (demo / "old-queue").exists()
    assert (demo / MARKER).exists()


def test_the_simulator_defaults_are_demo_tellers_at_four_branches() -> None:
    tellers = {u.user_id: u.branch for u in DEMO_USERS if u.role is Role.TELLER}
    assert set(DEMO_TELLERS) <= set(tellers)
    assert {tellers[t] for t in DEMO_TELLERS} == {f"branch-{n}" for n in range(1, 5)}


async def test_demo_seed_gives_authorizers_their_qualifications(server: RunningServer) -> None:
    accounts = server.runtime.accounts
    center = server.runtime.center
    lines = await seed_demo(accounts, center)
    again = await seed_demo(accounts, center)  # a restart finds them and changes nothing
    assert lines == again
    assert len(lines) == len({u.role for u in DEMO_USERS})
    cash = await accounts.get("authorizer-3")
    assert cash.qualification.business_types == CASH_BUSINESS
    assert cash.qualification.ceiling_minor == 200_000_00
    assert (await accounts.get("authorizer-1")).qualification.allows_all
    assert (await accounts.get("reviewer-4")).branch_id == "branch-4"
    # Each creation has its record, once (R15).
    await center.flush_audit()
    created = [(r.entry.action, r.entry.target, r.entry.actor, r.entry.origin)
               async for r in server.runtime.audit.read()
               if r.entry.action in ("BRANCH_CREATE", "ACCOUNT_CREATE")]  # fmt: skip
    assert sorted(created) == sorted(
        [("BRANCH_CREATE", b, "system", "demo-seed") for b, _ in DEMO_BRANCHES]
        + [("ACCOUNT_CREATE", u.user_id, "system", "demo-seed") for u in DEMO_USERS]
    )
