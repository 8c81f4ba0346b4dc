"""The authorizer console and its command line when something local goes wrong: a
decision whose answer a cut connection took (the worker sends it again once
reconnected, and the console shows the decision it made), a leftover item decided
meanwhile (the console says so, not "back in the queue"), a TLS file that cannot be
read (the login says which), a --tls-cert without its key, and `next` with a
previews folder or lease book that cannot be written (the item is shown all the
same)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import Callable
from pathlib import Path

import pytest
from authq.channel import ClientTLS
from authq.v1 import authorizer_pb2 as apb
from authq.v1 import common_pb2 as cpb

from authorizer_console import tk_app
from authorizer_console.client import AuthorizerClient
from authorizer_console.console_state import ConsoleState
from authorizer_console.messages import (
    ActionDone,
    ActionRefused,
    Command,
    Connected,
    Decide,
    Event,
    LeaseLost,
    LoginFailed,
    OfferArrived,
)
from authorizer_console.worker import Worker
from server.accounts.model import Role
from tests.conftest import PASSWORD, RunningServer
from tests.helpers import request, until
from tests.test_cli import _cli_env, run_cli

AUTHORIZER = "authorizer_console.cli"


def drain(events: queue.Queue[Event]) -> list[Event]:
    got: list[Event] = []
    while not events.empty():
        got.append(events.get_nowait())
    return got


async def take(server: RunningServer, authorizer: AuthorizerClient, request_id: str) -> apb.Offer:
    async with server.teller() as teller:
        await teller.submit(request(request_id=request_id))
    offer = await authorizer.next(timeout=10)
    assert offer.request.request_id == request_id
    return offer


def console_holding(offer: apb.Offer) -> ConsoleState:
    """A console with ``offer`` open, its approval sent."""
    console = ConsoleState()
    console.handle(Connected("authorizer-1", ("AUTHORIZER",)))
    console.handle(OfferArrived(offer))
    console.key("a")
    assert console.key("Return") == [
        Decide(offer.request.request_id, offer.lease.fencing_token, "approve")
    ]
    return console


# -- a decision whose answer was lost ---------------------------------------------------


class Proxy:
    """A TCP proxy in front of the server: while ``hold`` is set, what the server
    sends is dropped (the answers are lost on the way); ``cut`` closes every
    connection."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.hold = False
        self.target = ""
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.target = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if not (down and self.hold):
                        dst.write(data)
                        await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))

    def cut(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


class Console:
    """A ConsoleState fed by a Worker, as the Tk side feeds it."""

    def __init__(self, target: str) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self.state = ConsoleState()
        self.worker = Worker(target, "authorizer-1", PASSWORD, self.events.put)
        self.seen: list[Event] = []

    def pump(self) -> None:
        for event in drain(self.events):
            self.seen.append(event)
            for command in self.state.handle(event):
                self.worker.send(command)

    async def until(self, condition: Callable[[], bool]) -> None:
        def pumped() -> bool:
            self.pump()
            return condition()

        await until(pumped, 20)

    def send(self, commands: list[Command]) -> None:
        for command in commands:
            self.worker.send(command)


async def test_a_decision_whose_answer_a_cut_connection_took_is_shown_as_made(
    server: RunningServer,
) -> None:
    """The approval reached the center and the connection dropped before its answer:
    the console says the decide failed with the connection, reconnects, sends the
    same Decide again, and closes the item as APPROVED, logged and counted, the
    center recording one decision."""
    await server.account("authorizer-1", [Role.AUTHORIZER])
    proxy = Proxy(server.target)
    await proxy.start()
    console = Console(proxy.target)
    console.worker.start()
    try:
        await console.until(lambda: console.state.connected)
        async with server.teller() as teller:
            await teller.submit(request(request_id="lost-answer-0001"))
            await console.until(lambda: console.state.item is not None)
            proxy.hold = True
            console.send(console.state.key("a"))
            console.send(console.state.key("Return"))

            async def approved() -> bool:
                view = await teller.get("lost-answer-0001")
                return view.state == cpb.REQUEST_STATE_APPROVED

            while not await approved():
                await asyncio.sleep(0.02)
            proxy.cut()  # the answer is lost with the connection
            proxy.hold = False
            await console.until(lambda: console.state.item is None)
            history = (await teller.get("lost-answer-0001")).history
    finally:
        await asyncio.to_thread(console.worker.stop)
        await proxy.stop()
    refused = [e for e in console.seen if isinstance(e, ActionRefused)]
    assert [(e.action, e.target, e.code) for e in refused] == [
        ("decide", "lost-answer-0001", "UNAVAILABLE")
    ]
    assert refused[0].message.endswith(": the decision is sent again once reconnected")
    [done] = [e for e in console.seen if isinstance(e, ActionDone)]
    assert (done.action, done.target, done.text) == ("decide", "lost-answer-0001", "APPROVED")
    assert console.state.notice.text == "lost-answer-0001: APPROVED"
    assert console.state.log[0] == "lost-answer-0001: APPROVED"
    assert console.state.decided == 1
    assert console.worker._deciding == {}
    # Decided once: the repeat added nothing to the item's history.
    assert [entry.event for entry in history].count("APPROVED") == 1


async def test_a_decision_sent_again_for_an_item_decided_otherwise_says_decided(
    server: RunningServer,
) -> None:
    """Sent again, the console's rejection finds the item APPROVED (here by another
    console of the same authorizer): the item is not held, and it was decided."""
    events: queue.Queue[Event] = queue.Queue()
    worker = Worker(server.target, "authorizer-1", PASSWORD, events.put)
    async with server.authorizer("authorizer-1") as client:
        offer = await take(server, client, "decided-else-0001")
        token = offer.lease.fencing_token
        console = console_holding(offer)
        await client.decide("decided-else-0001", token, "approve")
        worker._held["decided-else-0001"] = token
        worker._deciding["decided-else-0001"] = Decide(
            "decided-else-0001", token, "reject", "ID_MISMATCH"
        )
        orphans = dict(worker._held)
        await asyncio.wait_for(worker._leftovers(client, orphans), 10)
    assert (orphans, worker._held, worker._deciding) == ({}, {}, {})
    [lost] = drain(events)
    assert lost == LeaseLost("decided-else-0001", state="APPROVED")
    console.handle(lost)
    assert console.item is None
    assert console.notice.text == "decided-else-0001: no longer held: decided: APPROVED"


async def test_a_leftover_decided_meanwhile_says_decided_not_back_in_the_queue(
    server: RunningServer,
) -> None:
    events: queue.Queue[Event] = queue.Queue()
    worker = Worker(server.target, "authorizer-1", PASSWORD, events.put)
    async with server.authorizer("authorizer-1") as client:
        offer = await take(server, client, "leftover-0001")
        token = offer.lease.fencing_token
        console = console_holding(offer)
        await client.decide("leftover-0001", token, "ask", kinds=["VOUCHER"])
        worker._held["leftover-0001"] = token
        orphans = dict(worker._held)
        await asyncio.wait_for(worker._leftovers(client, orphans), 10)
    [lost] = drain(events)
    assert lost == LeaseLost("leftover-0001", state="NEEDS_SUPPLEMENT")
    console.handle(lost)
    assert console.notice.text == "leftover-0001: no longer held: decided: NEEDS_SUPPLEMENT"
    assert console.log[0] == console.notice.text


# -- TLS files and options ----------------------------------------------------------------


async def test_a_tls_key_that_cannot_be_read_fails_the_login_naming_it(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("not read before the key fails")
    key = tmp_path / "no-such-key.pem"
    events: queue.Queue[Event] = queue.Queue()
    worker = Worker("127.0.0.1:1", "authorizer-1", PASSWORD, events.put,
                    tls=ClientTLS(cert=cert, key=key))  # fmt: skip
    got: list[Event] = []
    worker.start()
    try:

        def failed() -> bool:
            got.extend(drain(events))
            return any(isinstance(event, LoginFailed) for event in got)

        await until(failed)
    finally:
        await asyncio.to_thread(worker.stop)
    [login] = [event for event in got if isinstance(event, LoginFailed)]
    assert login.message == f"TLS: {key}: No such file or directory"
    console = ConsoleState()
    for event in got:
        console.handle(event)
    assert console.notice.text == login.message
    assert console.connection == "login refused"


@pytest.mark.parametrize("given", [["--tls-cert", "client.pem"], ["--tls-key", "client.key"]])
def test_console_tls_cert_without_key_is_a_one_line_usage_error(
    given: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert tk_app.main(["--tls-ca", "", *given]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "authq-console: TLS client certificate and key: give both or neither\n"


# -- `next` with local files it cannot write ----------------------------------------------


async def test_next_with_an_unusable_images_dir_shows_the_item_and_keeps_it(
    server: RunningServer, tmp_path: Path
) -> None:
    env = await _cli_env(server, tmp_path)
    async with server.teller() as teller:
        await teller.submit(request(request_id="no-previews-0001"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, err = await run_cli(AUTHORIZER, "next", "--timeout", "10",
                                   "--images-dir", str(blocker), env=env)  # fmt: skip
    assert code == 0, err
    assert "no-previews-0001" in out
    assert "\nlease     token " in out
    assert "saved" not in out
    assert err.splitlines() == [
        "waiting for the next item...",
        f"authq-authorizer: previews not saved: {blocker / 'no-previews-0001'}: Not a directory",
    ]
    # The lease book has the token: the item can be decided without --token.
    code, out, err = await run_cli(AUTHORIZER, "approve", "no-previews-0001", env=env)
    assert code == 0, err
    assert "APPROVED" in out


async def test_next_with_a_lease_book_that_cannot_be_written_is_one_line(
    server: RunningServer, tmp_path: Path
) -> None:
    """The last resort in main: an OSError is one line and exit 2, after the item
    and its token were shown."""
    env = await _cli_env(server, tmp_path)
    async with server.teller() as teller:
        await teller.submit(request(request_id="no-book-0001"))
    (tmp_path / "state" / "leases-authorizer-1.json").mkdir(parents=True)
    code, out, err = await run_cli(AUTHORIZER, "next", "--timeout", "10",
                                   "--images-dir", str(tmp_path / "got"), env=env)  # fmt: skip
    assert code == 2
    assert "no-book-0001" in out
    assert "\nlease     token " in out
    lines = err.splitlines()
    assert lines[0] == "waiting for the next item..."
    assert len(lines) == 2, err
    book = tmp_path / "state" / "leases-authorizer-1.json"
    assert lines[1] == f"authq-authorizer: {book}: Is a directory"
