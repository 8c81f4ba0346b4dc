"""`make demo`: a live center on one machine. Starts authq-server (--demo, its own data
directory, embedded Redis), then authq-sim (tellers at four branches, one simulated
authorizer slower than the tellers, so work is left for the human), then the console
windows (an authorizer and a supervisor); when the last window closes, or on Ctrl-C,
it stops the simulator and then the server.

Without a display the console cannot open: it says so and shows the queue as text
(the supervisor's live stream) until Ctrl-C.

The children run in their own process group, so a Ctrl-C reaches only this launcher,
which stops them in order (consoles, simulator, server: nobody talks to a server that
is already gone). On Linux they also get SIGTERM if the launcher dies unannounced
(authorizer_console/die_with_parent.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import grpc
from authq.channel import SessionCallError
from authq.v1 import supervisor_pb2 as spb

from authorizer_console import die_with_parent
from authorizer_console.client import AuthorizerClient
from authorizer_console.item_view import duration

DEMO_PASSWORD = "authq-demo-pass"
PREFERRED_PORT = 50051
# Written into a data directory this launcher created: --fresh deletes only those.
MARKER = ".authq-demo"
STOP_GRACE_S = 10.0


class Stop(Exception):
    """SIGTERM or SIGHUP: end the demo as Ctrl-C does."""


@dataclass(frozen=True, slots=True)
class Plan:
    data_dir: Path
    port: int
    console_user: str = "authorizer-2"
    supervisor_user: str = "supervisor-1"
    # The simulated authorizers are authorizer-1..N: the human's account is another.
    sim_authorizers: int = 1
    think_s: float = 40.0
    review_s: float = 8.0
    speed: float = 1.0
    duration_s: float | None = None
    # Replaces the console windows (tests): argv with {server} and {user} filled in.
    console_command: tuple[str, ...] = ()
    text_every_s: float = 5.0
    python: str = sys.executable

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def pick_port(preferred: int = PREFERRED_PORT) -> int:
    """The preferred port when nothing listens there, else a free one."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port on 127.0.0.1")


def has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY"))


def prepare_data_dir(data_dir: Path, fresh: bool) -> None:
    if fresh and data_dir.exists():
        if not (data_dir / MARKER).exists():
            raise RuntimeError(
                f"--fresh: {data_dir} was not made by the demo ({MARKER} missing); not deleting it"
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).touch()


@dataclass
class Demo:
    """The processes of one demo, stopped in reverse order of start."""

    plan: Plan
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def _spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
        command, environment = list(argv), {**os.environ, **(env or {})}
        if sys.platform == "linux":
            # Through die_with_parent, which becomes the command (same pid): a launcher
            # killed with SIGKILL must not leave a server and its Redis running.
            command = [self.plan.python, "-m", die_with_parent.MODULE, *command]
            environment[die_with_parent.PARENT_ENV] = str(os.getpid())
        log = open(self.plan.data_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        with log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                process_group=0,
            )
        self.started.append((name, process))
        return process.pid

    def log_path(self, name: str) -> Path:
        return self.plan.data_dir / f"{name}.log"

    def start_server(self, timeout_s: float = 60.0) -> int:
        log = self.log_path("server")
        offset = log.stat().st_size if log.exists() else 0
        pid = self._spawn(
            "server",
            [
                self.plan.python, "-m", "server.main", "--demo",
                "--listen", self.plan.target,
                "--data-dir", str(self.plan.data_dir),
                "--log-level", "WARNING",
            ],
        )  # fmt: skip
        process = self.started[-1][1]
        ready = f"listening on {self.plan.target}"
        deadline = time.monotonic() + timeout_s
        while True:
            text = log.read_text(errors="replace")[offset:]
            if ready in text:
                # The server's own start-up lines name the demo accounts: show them here.
                for line in text.splitlines():
                    if not line.startswith(("demo policy", "authq-server listening")):
                        print(line, flush=True)
                return pid
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"authq-server did not start (see {log}):\n"
                    + "\n".join(text.splitlines()[-15:])
                )
            time.sleep(0.1)

    def start_simulator(self) -> int:
        plan = self.plan
        duration_s = plan.duration_s if plan.duration_s is not None else 24 * 3600.0
        return self._spawn(
            "simulator",
            [
                plan.python, "-m", "teller_client.simulator",
                "--server", plan.target,
                "--authorizers", str(plan.sim_authorizers),
                "--think", str(plan.think_s),
                "--review", str(plan.review_s),
                "--speed", str(plan.speed),
                "--duration", str(duration_s),
            ],
            env={"AUTHQ_PASSWORD": DEMO_PASSWORD},
        )  # fmt: skip

    def console_argv(self, user: str) -> list[str]:
        if self.plan.console_command:
            fill = {"server": self.plan.target, "user": user}
            return [part.format(**fill) for part in self.plan.console_command]
        return [
            self.plan.python, "-m", "authorizer_console.tk_app",
            "--server", self.plan.target, "--user", user, "--login",
        ]  # fmt: skip

    def start_consoles(self) -> list[subprocess.Popen[bytes]]:
        users = [self.plan.console_user]
        if self.plan.supervisor_user:
            users.append(self.plan.supervisor_user)
        consoles = []
        for user in users:
            # The password travels in the environment, not on a command line `ps` shows.
            self._spawn(
                f"console-{user}", self.console_argv(user), {"AUTHQ_PASSWORD": DEMO_PASSWORD}
            )
            consoles.append(self.started[-1][1])
        return consoles

    def stop(self) -> None:
        """Consoles first, then the simulator, the server last (it stops its Redis)."""
        for name, process in reversed(self.started):
            if process.poll() is None:
                # SIGINT is what each program treats as "stop cleanly" (the server lets
                # calls in flight finish and shuts its Redis down).
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGINT)
                try:
                    process.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    print(
                        f"demo: {name} did not stop in {STOP_GRACE_S:.0f} s; killing it", flush=True
                    )
                    process.kill()
                    process.wait()
        self.started.clear()


def wait_for_consoles(consoles: Sequence[subprocess.Popen[bytes]], duration_s: float | None) -> int:
    """Until every console window is closed (or the duration ends): the first non-zero
    exit code, else 0."""
    deadline = None if duration_s is None else time.monotonic() + duration_s
    while any(c.poll() is None for c in consoles):
        if deadline is not None and time.monotonic() > deadline:
            return 0
        time.sleep(0.2)
    return next((c.returncode for c in consoles if c.returncode), 0)


# -- the text view, without a display ------------------------------------------------


def snapshot_line(snapshot: spb.QueueSnapshot) -> str:
    """One line per report: depth, oldest wait, rate, authorizers, waiting per branch."""
    o = snapshot.overview
    branches = ", ".join(f"{b.branch_id} {b.waiting}" for b in o.by_branch) or "-"
    return (
        f"{time.strftime('%H:%M:%S')}  waiting {o.waiting}  claimed {o.claimed}  "
        f"supplement {o.needs_supplement}  oldest {duration(o.oldest_wait_ms)}  "
        f"decisions/min {snapshot.decisions_last_minute}  authorizers "
        f"{snapshot.active_authorizers} active {snapshot.away_authorizers} away  "
        f"by branch: {branches}"
    )


async def text_view(plan: Plan) -> None:
    """The supervisor's live stream as one line every few seconds; reconnects."""
    while True:
        try:
            async with AuthorizerClient(plan.target, plan.supervisor_user, DEMO_PASSWORD) as client:
                last = 0.0
                async for snapshot in client.watch_queue():
                    if time.monotonic() - last >= plan.text_every_s:
                        last = time.monotonic()
                        print(snapshot_line(snapshot), flush=True)
        except (grpc.aio.AioRpcError, SessionCallError) as exc:
            print(f"demo: supervisor stream: {exc}; retrying", flush=True)
        await asyncio.sleep(2)


async def _bounded(plan: Plan) -> None:
    if plan.duration_s is None:
        await text_view(plan)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(plan.duration_s):
            await text_view(plan)


# -- the command -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m authorizer_console.demo",
        description="A live demo center: server, simulated branches, console windows.",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("var/demo"))
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start from an empty queue (deletes the demo's data dir)",
    )
    parser.add_argument(
        "--port", type=int, default=0, help=f"default {PREFERRED_PORT}, or a free one if taken"
    )
    parser.add_argument("--user", default="authorizer-2", help="the console's authorizer account")
    parser.add_argument(
        "--supervisor", default="supervisor-1", help="the supervisor view's account ('' for none)"
    )
    parser.add_argument(
        "--sim-authorizers", type=int, default=1, help="simulated authorizers (authorizer-1..N)"
    )
    parser.add_argument(
        "--think", type=float, default=40.0, help="a teller's mean seconds per request"
    )
    parser.add_argument(
        "--review", type=float, default=8.0, help="a simulated authorizer's mean seconds"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="divides both think times")
    parser.add_argument("--duration", type=float, help="end the demo after this many seconds")
    parser.add_argument("--console-command", default="", help=argparse.SUPPRESS)
    parser.add_argument("--text-every", type=float, default=5.0, help=argparse.SUPPRESS)
    return parser


def plan_from(args: argparse.Namespace) -> Plan:
    if args.speed <= 0 or args.think <= 0 or args.review <= 0:
        raise ValueError("--speed, --think and --review must be positive")
    if args.sim_authorizers < 0:
        raise ValueError("--sim-authorizers must be 0 or more")
    simulated = {f"authorizer-{n}" for n in range(1, args.sim_authorizers + 1)}
    if args.user in simulated:
        raise ValueError(f"--user {args.user} is one of the simulated authorizers: choose another")
    return Plan(
        data_dir=args.data_dir,
        port=args.port or pick_port(),
        console_user=args.user,
        supervisor_user=args.supervisor,
        sim_authorizers=args.sim_authorizers,
        think_s=args.think,
        review_s=args.review,
        speed=args.speed,
        duration_s=args.duration,
        console_command=tuple(shlex.split(args.console_command)),
        text_every_s=args.text_every,
    )


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = plan_from(args)
        prepare_data_dir(plan.data_dir, args.fresh)
    except (ValueError, RuntimeError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    windows = has_display() or bool(plan.console_command)
    if not windows:
        print(
            "demo: no display ($DISPLAY is unset), so the console windows cannot open. "
            "Running the server and the simulator with the supervisor's queue as text "
            "instead; Ctrl-C stops everything.",
            flush=True,
        )
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    demo = Demo(plan)
    code = 0
    try:
        server_pid = demo.start_server()
        print(
            f"demo: server pid {server_pid} on {plan.target}, data in {plan.data_dir}", flush=True
        )
        sim_pid = demo.start_simulator()
        print(
            f"demo: simulator pid {sim_pid}: 8 tellers at branch-1..4, "
            f"{plan.sim_authorizers} simulated authorizer(s); log {demo.log_path('simulator')}",
            flush=True,
        )
        if windows:
            consoles = demo.start_consoles()
            pids = " ".join(str(c.pid) for c in consoles)
            print(
                f"demo: console pid(s) {pids}: {plan.console_user} (password {DEMO_PASSWORD})"
                + (
                    f" and the supervisor view ({plan.supervisor_user})"
                    if plan.supervisor_user
                    else ""
                )
                + "; close the windows or press Ctrl-C to end the demo",
                flush=True,
            )
            code = wait_for_consoles(consoles, plan.duration_s)
        else:
            asyncio.run(_bounded(plan))
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        code = 1
    except (KeyboardInterrupt, Stop):
        print("\ndemo: stopping", flush=True)
        code = 130
    finally:
        # A second Ctrl-C while stopping must not leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        demo.stop()
    print("demo: stopped", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
