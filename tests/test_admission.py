"""The admission ceiling (server/api/admission.py): with a server started with small
limits, calls held in flight (image uploads left open, an authorizer's Next waiting on
an empty queue, logins waiting for the thread pool) fill it; the next call is refused
RESOURCE_EXHAUSTED at once with the message naming the limit, and once the held calls
end (normally, by error, by the client cancelling) calls pass again and the gauges
read 0. The teller client tries a submit refused at capacity again, within bounds."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from authq import reconnect, wire
from authq.reconnect import CapacityBackoff, is_at_capacity
from authq.refusals import Refusal, refusal_of
from authq.v1 import auth_pb2, authorizer_pb2, common_pb2, supervisor_pb2, teller_pb2
from authq.v1 import common_pb2 as cpb
from authq.v1 import teller_pb2 as tpb

from server.accounts.model import Role
from server.api import admission
from server.api.admission import AT_CAPACITY, Admission
from server.metrics.registry import ServerMetrics
from server.settings import Settings, SettingsError
from teller_client import cli, fallback_cli, synthetic
from teller_client.client import TellerClient, upload_chunks
from teller_client.journal import Journal
from tests.conftest import PASSWORD, RunningServer, StartServer
from tests.helpers import request, until
from tests.test_metrics import scrape, value

SUBMIT = "/authq.v1.TellerService/Submit"
NEXT = "/authq.v1.AuthorizerService/Next"
SESSION = "/authq.v1.TellerService/Session"
LOGIN = "/authq.v1.AuthService/Login"
UPLOAD = "/authq.v1.TellerService/UploadImage"
REFUSED = "authq_calls_refused_at_capacity_total"


@dataclasses.dataclass
class HeldUpload:
    """An UploadImage call that has sent its first chunk and waits for ``go``."""

    call: grpc.aio.StreamUnaryCall[cpb.ImageChunk, cpb.ImageRef]
    go: asyncio.Event


def held_upload(teller: TellerClient, seed: int, *, wrong_hash: bool = False) -> HeldUpload:
    data = synthetic.image_for_kind("ID_FRONT", seed=seed)
    chunks = upload_chunks("ID_FRONT", data)
    if wrong_hash:  # the server finds out once the upload ends: INVALID_ARGUMENT
        chunks[0].header.sha256 = wire.sha256_hex(data + b"other")
    go = asyncio.Event()

    async def stream() -> AsyncIterator[cpb.ImageChunk]:
        yield chunks[0]
        await go.wait()
        for chunk in chunks[1:]:
            yield chunk

    return HeldUpload(teller.stub.UploadImage(stream(), metadata=teller.metadata), go)


async def refusal(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_calls_past_the_ceiling_are_refused_until_held_ones_end_every_way(
    start_server: StartServer,
) -> None:
    server = await start_server(max_calls_in_flight=3, metrics_listen="127.0.0.1:0")
    gate = server.runtime.admission
    async with server.teller() as teller:
        normal, failing, cancelled = (
            held_upload(teller, 1),
            held_upload(teller, 2, wrong_hash=True),
            held_upload(teller, 3),
        )
        await until(lambda: gate.calls_in_flight == 3)
        refused = await refusal(teller.stub.Submit(request(), metadata=teller.metadata))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.details() == (
            "the center is at capacity: 3 calls in flight, the most it takes "
            "(max_calls_in_flight); try again in a moment, or authorize on site if it "
            "lasts (R8)"
        )
        assert is_at_capacity(refused)
        assert refusal_of(refused) == Refusal(
            "CENTER_AT_CAPACITY", {"setting": "max_calls_in_flight", "limit": "3"}
        )
        samples = await scrape(server)
        assert value(samples, "authq_calls_in_flight") == 3
        assert value(samples, REFUSED, method=SUBMIT) == 1

        normal.go.set()  # ends normally
        assert (await normal.call).sha256
        failing.go.set()  # ends by an error of the server
        assert (await refusal(failing.call)).code() == grpc.StatusCode.INVALID_ARGUMENT
        cancelled.call.cancel()  # the client gives up
        await until(lambda: gate.calls_in_flight == 0)

        reply = await teller.submit(request())
        assert not reply.duplicate
    samples = await scrape(server)
    assert value(samples, "authq_calls_in_flight") == 0
    assert value(samples, "authq_open_streams") == 0
    assert value(samples, REFUSED, method=SUBMIT) == 1


async def test_streams_past_the_ceiling_are_refused_and_a_closed_one_frees_its_place(
    start_server: StartServer,
) -> None:
    server = await start_server(
        max_open_streams=2, max_calls_in_flight=1, metrics_listen="127.0.0.1:0"
    )
    gate = server.runtime.admission
    async with server.teller() as teller, server.authorizer() as authorizer:
        # An idle authorizer's Next waits on the empty queue: a stream, not a call, so
        # the one call place stays free for the submits.
        waiting = asyncio.create_task(authorizer.next(timeout=60))
        async with teller.session():
            await until(lambda: gate.open_streams == 2)
            samples = await scrape(server)
            assert value(samples, "authq_open_streams") == 2
            assert value(samples, "authq_calls_in_flight") == 0
            third = teller.stub.Session(_nothing(), metadata=teller.metadata)
            assert await third.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await third.details() == AT_CAPACITY.format(
                limit=2, what="open streams", setting="max_open_streams"
            )
            refused = await refusal(authorizer.next(timeout=5))
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # A submit is a call: the streams' ceiling does not touch it.
            assert not (await teller.submit(request())).duplicate
            # The waiting Next takes that item: it ends normally, freeing its place.
            offer = await waiting
            await until(lambda: gate.open_streams == 1)
            async with teller.session() as second:
                await until(lambda: gate.open_streams == 2)
                assert (await second.watch(offer.request.request_id)).request_id
            await until(lambda: gate.open_streams == 1)
            # A Next the client cancels while it waits gives its place back too.
            again = asyncio.create_task(authorizer.next(timeout=60))
            await until(lambda: gate.open_streams == 2)
            again.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await again
            await until(lambda: gate.open_streams == 1)
        await until(lambda: gate.open_streams == 0)
    samples = await scrape(server)
    assert value(samples, "authq_open_streams") == 0
    assert value(samples, REFUSED, method=SESSION) == 1
    assert value(samples, REFUSED, method=NEXT) == 1
    assert value(samples, REFUSED, method=SUBMIT) == 0


async def _nothing() -> AsyncIterator[tpb.TellerSessionIn]:
    await asyncio.Event().wait()
    yield tpb.TellerSessionIn()  # never reached


@contextlib.contextmanager
def blocked_thread_pool(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Holds every worker of the loop's default thread pool (where logins run
    scrypt), so that a login waits there, in flight, until the block ends."""
    release = threading.Event()
    jobs = [loop.run_in_executor(None, release.wait) for _ in range(40)]
    try:
        yield
    finally:
        release.set()
        for job in jobs:
            job.cancel()


async def test_logins_past_their_ceiling_are_refused(start_server: StartServer) -> None:
    server = await start_server(max_logins_in_flight=1, metrics_listen="127.0.0.1:0")
    gate = server.runtime.admission
    await server.account("teller-1", [Role.TELLER], "branch-1")
    first = TellerClient(server.target, "teller-1", PASSWORD)
    second = TellerClient(server.target, "teller-1", PASSWORD)
    try:
        with blocked_thread_pool(asyncio.get_running_loop()):
            held = asyncio.create_task(first.login())
            await until(lambda: gate.logins.count == 1)
            refused = await refusal(second.login())
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "1 logins in flight" in (refused.details() or "")
            assert "(max_logins_in_flight)" in (refused.details() or "")
        assert (await held).token
        await until(lambda: gate.logins.count == 0 and gate.calls_in_flight == 0)
        # A login whose client gives up while it waits gives its place back.
        with blocked_thread_pool(asyncio.get_running_loop()):
            held = asyncio.create_task(first.login())
            await until(lambda: gate.logins.count == 1)
            held.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await held
            await until(lambda: gate.logins.count == 0 and gate.calls_in_flight == 0)
        assert (await second.login()).token
    finally:
        await first.close()
        await second.close()
    assert value(await scrape(server), REFUSED, method=LOGIN) == 1


@pytest.mark.parametrize("key", ["max_calls_in_flight", "max_open_streams", "max_logins_in_flight"])
@pytest.mark.parametrize("bad", [0, -1, "many"])
def test_settings_refuse_a_ceiling_that_is_not_a_positive_number(key: str, bad: object) -> None:
    with pytest.raises(SettingsError, match=key):
        Settings.load(overrides={key: bad})


def test_the_defaults_are_far_above_the_bench_and_a_centers_use() -> None:
    settings = Settings()
    assert settings.max_calls_in_flight >= 4 * 256  # the bench's deepest closed loop
    assert settings.max_open_streams >= 10_000  # thousands of tellers, hundreds of authorizers


def test_the_methods_named_apart_exist() -> None:
    """A name misspelt in the tables would silently count its method the default way."""
    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (auth_pb2, authorizer_pb2, common_pb2, supervisor_pb2, teller_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert methods >= admission.LONG_POLLS | admission.DOWNLOADS | admission.PASSWORD_CHECKS


def test_the_server_refuses_with_the_reason_the_clients_expect() -> None:
    assert admission.AT_CAPACITY_REASON == reconnect.AT_CAPACITY_REASON


class _Context:
    async def abort(
        self, code: grpc.StatusCode, details: str, trailing_metadata: object = ()
    ) -> None:
        raise grpc.aio.AbortError(f"{code.name}: {details}")


async def test_shedding_is_logged_when_it_starts_and_when_it_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = Admission(1, 1, 1, quiet_s=0.05)
    caplog.set_level(logging.WARNING, logger=admission.__name__)
    for _ in range(3):
        with pytest.raises(grpc.aio.AbortError):
            await gate.refuse(_Context(), SUBMIT, gate.calls)
    assert [r.getMessage() for r in caplog.records] == ["refusing new work: " + gate.calls.refusal]
    await until(lambda: len(caplog.records) == 2)
    assert caplog.records[1].getMessage().startswith("no longer at capacity: 3 call(s) refused")
    assert gate.refused == {SUBMIT: 3}
    # Refusals that go on past a check keep the period open: its checks are run here
    # by hand (the timer's own would come after an hour).
    caplog.clear()
    slow = Admission(1, 1, 1, quiet_s=3600)
    for checks in (0, 1, 1):
        with pytest.raises(grpc.aio.AbortError):
            await slow.refuse(_Context(), NEXT, slow.streams)
        for _ in range(checks):
            slow._shedding._check()
    assert [r.getMessage() for r in caplog.records][1:] == []
    slow._shedding._check()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2
    assert said[1].startswith("no longer at capacity: 3 call(s) refused")


class _TimedContext(_Context):
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def time_remaining(self) -> float | None:
        return self.remaining

    async def abort(
        self, code: grpc.StatusCode, details: str, trailing_metadata: object = ()
    ) -> None:
        self.aborted = (code, details)
        await super().abort(code, details, trailing_metadata)


@pytest.mark.parametrize("method", [SUBMIT, LOGIN, SESSION])
async def test_a_call_whose_deadline_passed_before_it_started_is_dropped_at_the_door(
    method: str,
) -> None:
    """Its caller was already told DEADLINE_EXCEEDED: a submit done now would queue a
    request its teller believes failed. (A real server reaches this when its loop is
    busier than the call's deadline; a test cannot order that.)"""
    ran: list[object] = []

    async def unary(request: object, context: object) -> str:
        ran.append(request)
        return "done"

    async def stream(requests: object, context: object) -> AsyncIterator[str]:
        ran.append(requests)
        yield "done"

    gate = Admission(8, 8, 8)
    if method == SESSION:
        handler = grpc.stream_stream_rpc_method_handler(stream)
    else:
        handler = grpc.unary_unary_rpc_method_handler(unary)
    wrapped = gate.wrap(method, handler)

    async def call(context: _TimedContext) -> list[str]:
        if method == SESSION:
            return [reply async for reply in wrapped.stream_stream("req", context)]
        return [await wrapped.unary_unary("req", context)]

    for remaining in (None, 0.001, 30.0):  # no deadline, or one not yet passed
        assert await call(_TimedContext(remaining)) == ["done"]
    assert len(ran) == 3
    for remaining in (0.0, -0.5):
        late = _TimedContext(remaining)
        with pytest.raises(grpc.aio.AbortError):
            await call(late)
        assert late.aborted == (grpc.StatusCode.DEADLINE_EXCEEDED, admission.EXPIRED)
    assert len(ran) == 3
    assert gate.expired == {method: 2}
    assert gate.calls.count == gate.streams.count == gate.logins.count == 0
    metrics = ServerMetrics()
    metrics.watch_admission(gate)
    exported = metrics.registry.get_sample_value(
        "authq_calls_dropped_expired_total", {"method": method}
    )
    assert exported == 2


# -- the teller client ----------------------------------------------------------------


class FakeTime:
    """The clock and sleep of a CapacityBackoff: a pause passes at once, after
    ``during_pause`` (what happens at the center meanwhile)."""

    def __init__(self, during_pause: Callable[[], Awaitable[None]] | None = None) -> None:
        self.now = 0.0
        self.pauses: list[float] = []
        self.during_pause = during_pause

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        if self.during_pause is not None:
            await self.during_pause()

    def backoff(self) -> CapacityBackoff:
        return CapacityBackoff(sleep=self.sleep, clock=self.clock, jitter=lambda: 0.5)


async def test_a_submit_refused_at_capacity_is_tried_again_and_lands_once(
    start_server: StartServer,
) -> None:
    server = await start_server(max_calls_in_flight=1)
    gate = server.runtime.admission
    async with server.teller() as holder, server.teller() as teller:
        held = held_upload(holder, 1)
        await until(lambda: gate.calls_in_flight == 1)

        async def the_held_call_ends() -> None:
            held.go.set()
            await held.call
            await until(lambda: gate.calls_in_flight == 0)

        time = FakeTime(the_held_call_ends)
        teller.at_capacity = time.backoff()
        submitted = request()
        reply = await teller.submit(submitted)
        assert time.pauses == [reconnect.CAPACITY_STEPS_S[0]]  # the jitter at its middle
        assert not reply.duplicate
        assert gate.refused == {SUBMIT: 1}
        view = await teller.get(submitted.request_id)
        assert [e.state for e in view.history].count(cpb.REQUEST_STATE_QUEUED) == 1
        assert (await teller.submit(submitted)).duplicate  # idempotent by request id


async def test_a_submit_refused_after_its_uploads_does_not_upload_again(
    start_server: StartServer,
) -> None:
    server = await start_server(max_calls_in_flight=1, metrics_listen="127.0.0.1:0")
    gate = server.runtime.admission
    async with server.teller() as teller:
        sent: list[bool] = []

        def fill_the_ceiling() -> None:
            # As the first Submit leaves, the one place is taken (by a call the test
            # stands for: the count is the server's own, in this process).
            if not sent:
                gate.calls.count += 1
            sent.append(True)

        async def free_it() -> None:
            gate.calls.count -= 1

        teller.at_capacity = FakeTime(free_it).backoff()
        images = [("CUSTOMER_PHOTO", synthetic.image_for_kind("CUSTOMER_PHOTO", seed=5))]
        reply = await teller.submit(request(), images, sending=fill_the_ceiling)
        assert not reply.duplicate
        assert len(sent) == 2
    assert gate.refused == {SUBMIT: 1}
    uploads = "authq_rpc_duration_seconds_count"
    assert value(await scrape(server), uploads, method=UPLOAD, code="OK") == 1


async def test_a_refusal_that_lasts_is_tried_a_bounded_number_of_times(
    start_server: StartServer,
) -> None:
    server = await start_server(max_calls_in_flight=1)
    gate = server.runtime.admission
    async with server.teller() as holder, server.teller() as teller:
        held = held_upload(holder, 1)
        await until(lambda: gate.calls_in_flight == 1)
        time = FakeTime()
        teller.at_capacity = time.backoff()
        refused = await refusal(teller.submit(request()))
        assert is_at_capacity(refused)
        assert time.pauses == list(reconnect.CAPACITY_STEPS_S)
        assert gate.refused == {SUBMIT: reconnect.CAPACITY_TRIES}
        held.go.set()
        await held.call


def _rpc_error(code: grpc.StatusCode, details: str, reason: str = "") -> grpc.aio.AioRpcError:
    """A failed call as the client sees it; with ``reason``, the refusal it carries."""
    trailing = grpc.aio.Metadata()
    if reason:
        trailing.add(*Refusal(reason).trailer(code, details))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details)


async def test_the_backoff_stays_within_the_deadline_and_leaves_other_refusals() -> None:
    time = FakeTime()
    backoff = time.backoff()
    at_capacity = _rpc_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED, AT_CAPACITY, reason="CENTER_AT_CAPACITY"
    )
    await backoff.pause(at_capacity, 1, deadline=1.0)  # 0.5 s: ends before the deadline
    with pytest.raises(grpc.aio.AioRpcError):
        await backoff.pause(at_capacity, 2, deadline=1.0)  # 1 s more would not
    assert time.pauses == [0.5]
    # grpc's own RESOURCE_EXHAUSTED (a message too large) is not cured by a retry.
    too_large = _rpc_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (9 vs. 4)"
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await backoff.pause(too_large, 1, deadline=100.0)
    # Nor is a full queue store within seconds.
    store_full = _rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", reason="STORE_FULL")
    with pytest.raises(grpc.aio.AioRpcError):
        await backoff.pause(store_full, 1, deadline=100.0)
    assert time.pauses == [0.5]
    # The jitter spreads a pause over half to one and a half times its step.
    for jitter in (0.0, 0.75):
        spread = CapacityBackoff(sleep=time.sleep, clock=time.clock, jitter=[jitter].pop)
        await spread.pause(at_capacity, 2, deadline=100.0)
    assert time.pauses == [0.5, 0.5, 1.25]


async def test_the_cli_falls_back_on_site_when_the_center_stays_at_capacity(
    start_server: StartServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = await start_server(max_calls_in_flight=1)
    gate = server.runtime.admission
    journal = tmp_path / "journal.jsonl"
    args = cli.build_parser().parse_args(
        ["--journal", str(journal), "submit", "--type", "CASH_WITHDRAWAL", "--amount",
         "12000.50", "--account", "6222020200001234", "--customer", "Zhang San",
         "--request-id", "fb-capacity-0001"]
    )  # fmt: skip
    async with server.teller() as holder, server.teller() as teller:
        held = held_upload(holder, 1)
        await until(lambda: gate.calls_in_flight == 1)
        teller.at_capacity = FakeTime().backoff()
        code = await cli.submit(teller, args, cli.submit_request(args), cli.Output(False))
        held.go.set()
        await held.call
    assert code == fallback_cli.EXIT_UNREACHABLE
    out, err = capsys.readouterr()
    assert reconnect.CAPACITY_TEXT in err
    assert fallback_cli.AT_CAPACITY_TEXT in out
    entry = Journal(journal).entries()["fb-capacity-0001"]
    assert entry.event.status_code == "RESOURCE_EXHAUSTED"
    assert "center at capacity" in fallback_cli.describe(entry)


async def test_another_command_refused_at_capacity_says_so_in_words(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(max_calls_in_flight=1)
    gate = server.runtime.admission
    async with server.teller() as holder:
        held = held_upload(holder, 1)
        await until(lambda: gate.calls_in_flight == 1)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "teller_client.cli", "--server", server.target,
            "--user", "teller-1", "--password", PASSWORD, "--state-dir", str(tmp_path),
            "show", "t-anything",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ),
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 60)
        held.go.set()
        await held.call
    assert process.returncode == 1
    said = err.decode()
    assert cli.AT_CAPACITY_TEXT in said
    assert "1 calls in flight" in said
    assert "authq-teller fallback" in said


async def test_a_server_running_normally_counts_nothing_left_over(server: RunningServer) -> None:
    async with server.teller() as teller, server.authorizer() as authorizer:
        await teller.submit(request())
        offer = await authorizer.next(timeout=10)
        async with teller.session() as session:
            await session.watch(offer.request.request_id)
    gate = server.runtime.admission
    await until(lambda: gate.calls_in_flight == 0 and gate.open_streams == 0)
    assert gate.logins.count == 0
    assert gate.refused == {}
