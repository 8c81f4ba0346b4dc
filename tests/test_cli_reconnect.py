"""The command lines that wait on the center ride out a restart of it: `authq-teller
watch` says the connection was lost, tries again, and goes on following the request
when the center is back, showing what changed meanwhile, each change once;
`authq-authorizer next` goes on waiting and takes the item that arrives. Real server
processes, stopped and started again on the same data directory (and so the same
Redis) and port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

from authq.reconnect import LOST_TEXT, RESTORED_TEXT

from authorizer_console.client import AuthorizerClient
from server.demo import DEMO_PASSWORD
from teller_client.client import TellerClient
from tests.helpers import request, standard_images
from tests.processes import free_port, start_server_process

# A guard against a test that hangs, never a measure of anything.
GUARD_S = 90


class Center:
    """authq-server on one data directory, stopped and started at will."""

    def __init__(self, data: Path, port: int) -> None:
        self.data = data
        self.port = port
        self.target = f"127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, port: int | None = None) -> str:
        """Starts it (on another port if given); returns the address."""
        port = port or self.port
        self.process = start_server_process(self.data, port)
        return f"127.0.0.1:{port}"

    async def stop(self) -> None:
        """As an operator stops it (SIGTERM): calls in flight are cancelled."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(self.process.wait, 60)
            self.process = None


@asynccontextmanager
async def center(tmp_path: Path) -> AsyncIterator[Center]:
    running = Center(tmp_path / "data", free_port())
    running.start()
    try:
        yield running
    finally:
        await running.stop()


@asynccontextmanager
async def command_line(
    target: str, tmp_path: Path, *argv: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *argv, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "AUTHQ_SERVER": target, "AUTHQ_PASSWORD": DEMO_PASSWORD,
             "AUTHQ_STATE_DIR": str(tmp_path / "state")},
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def line_saying(stream: asyncio.StreamReader | None, text: str, seen: list[str]) -> None:
    """Reads lines (kept in ``seen``) until one says ``text``."""
    assert stream is not None
    async with asyncio.timeout(GUARD_S):
        while True:
            line = (await stream.readline()).decode()
            assert line, f"the stream ended before {text!r}: {seen}"
            seen.append(line)
            if text in line:
                return


async def waiting_authorizers(supervisor: AuthorizerClient) -> set[str]:
    """Those the live queue's first snapshot shows waiting for an item."""
    async with aclosing(supervisor.watch_queue()) as snapshots:
        async for snapshot in snapshots:
            return {a.authorizer_id for a in snapshot.authorizers if a.waiting}
    return set()


async def test_a_watch_goes_on_across_restarts_of_the_center(tmp_path: Path) -> None:
    async with center(tmp_path) as running:
        async with TellerClient(running.target, "teller-1", DEMO_PASSWORD) as teller:
            await teller.upload_images(standard_images())
            rid = (await teller.submit(request())).request.request_id
        watch_cmd = ("teller_client.cli", "--json", "watch", rid)
        async with command_line(running.target, tmp_path, *watch_cmd) as watch:
            assert watch.stdout is not None
            async with asyncio.timeout(GUARD_S):
                shown = [json.loads(await watch.stdout.readline())]
            assert shown[0]["event"] == "SUBMITTED"
            said: list[str] = []

            # Restarted with nothing changed: it follows the request again, and the
            # change it had shown is not shown again.
            await running.stop()
            await line_saying(watch.stderr, LOST_TEXT, said)
            running.start()
            await line_saying(watch.stderr, f"{RESTORED_TEXT}: following {rid} again", said)

            # Stopped again, and while it is away the request is taken and approved
            # (through a server on another port): it shows both once it is back.
            await running.stop()
            await line_saying(watch.stderr, LOST_TEXT, said)
            elsewhere = running.start(free_port())
            async with AuthorizerClient(elsewhere, "authorizer-1", DEMO_PASSWORD) as authorizer:
                offer = await authorizer.next(timeout=30)
                assert offer.request.request_id == rid
                await authorizer.decide(rid, offer.lease.fencing_token, "approve")
            await running.stop()
            running.start()

            out, err = await asyncio.wait_for(watch.communicate(), GUARD_S)
        said.append(err.decode())
        shown += [json.loads(line) for line in out.decode().splitlines()]
        assert watch.returncode == 0, said
        assert [update["event"] for update in shown] == ["SUBMITTED", "CLAIMED", "APPROVED"]
        assert [int(update["version"]) for update in shown] == [1, 2, 3]
        assert "Cancelling all calls" not in "".join(said)


async def test_next_goes_on_waiting_across_a_restart_of_the_center(tmp_path: Path) -> None:
    async with center(tmp_path) as running:
        next_cmd = ("authorizer_console.cli", "next", "--images-dir", str(tmp_path / "got"))
        async with command_line(running.target, tmp_path, *next_cmd) as taking:
            # Its Next has reached the center: a supervisor sees it waiting.
            async with (
                AuthorizerClient(running.target, "supervisor-1", DEMO_PASSWORD) as supervisor,
                asyncio.timeout(GUARD_S),
            ):
                while "authorizer-1" not in await waiting_authorizers(supervisor):
                    await asyncio.sleep(0.05)
            said: list[str] = []
            await running.stop()
            await line_saying(taking.stderr, LOST_TEXT, said)
            running.start()
            async with TellerClient(running.target, "teller-1", DEMO_PASSWORD) as teller:
                await teller.upload_images(standard_images())
                rid = (await teller.submit(request())).request.request_id

            out, err = await asyncio.wait_for(taking.communicate(), GUARD_S)
        said.append(err.decode())
        assert taking.returncode == 0, said
        assert f"request   {rid}" in out.decode()
        assert f"{RESTORED_TEXT}: waiting for the next item..." in said[-1]
        assert "Cancelling all calls" not in "".join(said)


async def test_ctrl_c_while_the_center_is_away_is_one_line(tmp_path: Path) -> None:
    async with center(tmp_path) as running:
        async with TellerClient(running.target, "teller-1", DEMO_PASSWORD) as teller:
            await teller.upload_images(standard_images())
            rid = (await teller.submit(request())).request.request_id
        async with command_line(
            running.target, tmp_path, "teller_client.cli", "watch", rid
        ) as watch:
            assert watch.stdout is not None
            async with asyncio.timeout(GUARD_S):
                assert b"SUBMITTED" in await watch.stdout.readline()
            said: list[str] = []
            await running.stop()
            await line_saying(watch.stderr, LOST_TEXT, said)
            watch.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(watch.communicate(), GUARD_S)
        assert watch.returncode == 130
        assert err.decode() == "authq-teller: interrupted\n"
