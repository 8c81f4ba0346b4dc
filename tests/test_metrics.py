"""The Prometheus endpoint, scraped over HTTP while real clients drive a real server:
RPC latency by method and code, claims, decisions by outcome, lease expiries, queue
depth and waits, emergency state, Redis round trips; and its start-up rules."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.main import main
from server.metrics import ServerMetrics, check_metrics_listen, parse_metrics_listen
from server.settings import Settings, SettingsError
from tests.conftest import RunningServer, StartServer
from tests.helpers import request

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape_sync(port: int) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.headers.get("Content-Type", ""), reply.read().decode()


async def scrape(server: RunningServer) -> Samples:
    assert server.runtime.metrics is not None
    _, text = await asyncio.to_thread(_scrape_sync, server.runtime.metrics.port)
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every label set that includes ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape_until(
    server: RunningServer, done: Callable[[Samples], bool], timeout_s: float = 10.0
) -> Samples:
    """Scrapes until ``done`` holds: the counters move when the event stream reaches
    this process and the gauges at the next sample, both shortly after the call."""
    async with asyncio.timeout(timeout_s):
        while True:
            samples = await scrape(server)
            if done(samples):
                return samples
            await asyncio.sleep(0.05)


SUBMIT = "/authq.v1.TellerService/Submit"
DECIDE = "/authq.v1.AuthorizerService/Decide"
WATCH = "/authq.v1.TellerService/Watch"


async def test_the_endpoint_follows_a_real_workload(start_server: StartServer) -> None:
    server = await start_server(metrics_listen="127.0.0.1:0", metrics_interval_s=0.05)
    assert server.runtime.metrics is not None
    content_type, _ = await asyncio.to_thread(_scrape_sync, server.runtime.metrics.port)
    assert content_type.startswith("text/plain")
    before = await scrape(server)
    assert value(before, "authq_center_claims_total") == 0
    async with server.teller() as teller, server.authorizer() as authorizer:
        ids = [(await teller.submit(request(request_id=f"metrics-{i:04}"))).request.request_id
               for i in range(3)]  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError):
            await teller.submit(request(request_id="x"))  # too short: INVALID_ARGUMENT
        first = await authorizer.next(timeout=5)
        await authorizer.decide(first.request.request_id, first.lease.fencing_token, "approve")
        second = await authorizer.next(timeout=5)
        await authorizer.decide(
            second.request.request_id,
            second.lease.fencing_token,
            "reject",
            reason_code="ID_MISMATCH",
        )
        # A finished Watch stream: the teller follows the approved one to its end.
        updates = [u async for u in teller.watch(first.request.request_id)]
        assert updates[-1].event == "APPROVED"
        samples = await scrape_until(
            server,
            # A scrape runs on its own thread and may read one sample's gauges half
            # set: wait for every gauge asserted below.
            lambda s: (
                value(s, "authq_center_decisions_total", outcome="REJECT") == 1
                and total(s, "authq_queue_waiting") == 1
                and value(s, "authq_requests", state="QUEUED") == 1
                and value(s, "authq_requests", state="APPROVED") == 1
            ),
        )
    assert value(samples, "authq_center_claims_total") == 2
    assert value(samples, "authq_center_decisions_total", outcome="APPROVE") == 1
    assert value(samples, "authq_center_decisions_total", outcome="ASK_SUPPLEMENT") == 0
    assert value(samples, "authq_center_events_total", event="SUBMITTED") == 3
    # The one left waiting is of the default class of a cash withdrawal.
    assert ids[2] not in {first.request.request_id, second.request.request_id}
    waiting = [
        dict(labels)
        for (name, labels), v in samples.items()
        if name == "authq_queue_waiting" and v == 1
    ]
    assert len(waiting) == 1
    assert value(samples, "authq_queue_head_wait_seconds", **waiting[0]) >= 0
    assert value(samples, "authq_requests", state="QUEUED") == 1
    assert value(samples, "authq_requests", state="APPROVED") == 1
    # RPC latency histograms, by method and code.
    count = "authq_rpc_duration_seconds_count"
    assert value(samples, count, method=SUBMIT, code="OK") == 3
    assert value(samples, count, method=SUBMIT, code="INVALID_ARGUMENT") == 1
    assert value(samples, count, method=DECIDE, code="OK") == 2
    assert value(samples, "authq_rpc_duration_seconds_sum", method=SUBMIT, code="OK") > 0
    bucket = value(
        samples, "authq_rpc_duration_seconds_bucket", method=SUBMIT, code="OK", le="+Inf"
    )
    assert bucket == 3
    assert value(samples, "authq_rpc_stream_duration_seconds_count", method=WATCH, code="OK") == 1
    # Redis round trips: the sampler has pinged at least once.
    assert value(samples, "authq_redis_roundtrip_seconds_count") >= 1
    assert value(samples, "authq_metrics_last_sample_timestamp_seconds") > 0
    assert value(samples, "authq_emergencies_active") == 0


async def test_the_archive_backlog_shows_until_it_is_archived(start_server: StartServer) -> None:
    server = await start_server(metrics_listen="127.0.0.1:0", metrics_interval_s=0.05)
    archiver = server.runtime.archiver
    assert archiver is not None
    await archiver.stop()  # as if the archiver had no CPU time left during a peak
    async with server.teller() as teller, server.authorizer() as authorizer:
        rid = (await teller.submit(request())).request.request_id
        offer = await authorizer.next(timeout=5)
        await authorizer.decide(rid, offer.lease.fencing_token, "approve")
    store = server.runtime.store
    # What the archiver notes of every ended request it hears of.
    await store.client.zadd(store.keys.archive_ended, {rid: 1})
    await scrape_until(server, lambda s: value(s, "authq_archive_backlog") == 1)
    assert await archiver.archive(rid)
    await scrape_until(server, lambda s: value(s, "authq_archive_backlog") == 0)


async def test_lease_expiries_and_emergencies_show(start_server: StartServer) -> None:
    server = await start_server(metrics_listen="127.0.0.1:0", metrics_interval_s=0.05, lease_ms=300)
    async with (
        server.teller() as teller,
        server.authorizer() as authorizer,
        server.supervisor() as supervisor,
    ):
        await teller.submit(request())
        await authorizer.next(timeout=5)  # held, never renewed: the lease lapses
        samples = await scrape_until(
            server, lambda s: value(s, "authq_center_lease_expiries_total") == 1
        )
        assert value(samples, "authq_center_claims_total") == 1
        assert value(samples, "authq_center_events_total", event="LEASE_EXPIRED") == 1
        emergency = await supervisor.declare_emergency("branch device failure", ["branch-1"])
        samples = await scrape_until(server, lambda s: value(s, "authq_emergencies_active") == 1)
        assert value(samples, "authq_emergency_center_wide") == 0
        assert value(samples, "authq_emergency_branches") == 1
        await supervisor.declare_emergency("center network failure")
        samples = await scrape_until(server, lambda s: value(s, "authq_emergencies_active") == 2)
        assert value(samples, "authq_emergency_center_wide") == 1
        await supervisor.end_emergency(emergency.emergency_id)
        samples = await scrape_until(server, lambda s: value(s, "authq_emergencies_active") == 1)
        assert value(samples, "authq_emergency_branches") == 0


async def test_stopping_closes_the_port(start_server: StartServer) -> None:
    server = await start_server(metrics_listen="127.0.0.1:0")
    metrics = server.runtime.metrics
    assert metrics is not None
    port = metrics.port
    await scrape(server)
    await metrics.stop()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass


async def test_metrics_are_off_by_default(server: RunningServer) -> None:
    assert Settings().metrics_listen is None
    assert server.runtime.metrics is None


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_listen_addresses_parse(listen: str, expected: tuple[str, int]) -> None:
    assert parse_metrics_listen(listen) == expected


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("9464", "expected HOST:PORT"),
        ("127.0.0.1:", "expected HOST:PORT"),
        ("::1:9464", "expected HOST:PORT"),
        ("127.0.0.1:70000", "out of range"),
        ("0.0.0.0:9464", "not loopback"),
    ],
)
def test_bad_or_exposed_addresses_are_refused(listen: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as refused:
        check_metrics_listen(Settings.load(overrides={"metrics_listen": listen}))
    assert "metrics_listen" in str(refused.value)


def test_a_trusted_network_may_expose_it() -> None:
    settings = Settings.load(overrides={"metrics_listen": "0.0.0.0:9464", "allow_plaintext": True})
    check_metrics_listen(settings)


def test_the_setting_comes_from_env_and_toml(tmp_path: Path) -> None:
    env = Settings.load(env={"AUTHQ_METRICS_LISTEN": "127.0.0.1:9999"})
    assert env.metrics_listen == "127.0.0.1:9999"
    config = tmp_path / "authq.toml"
    config.write_text('[server]\nmetrics_listen = "127.0.0.1:9465"\nmetrics_interval_s = 2\n')
    loaded = Settings.load(config_file=config)
    assert (loaded.metrics_listen, loaded.metrics_interval_s) == ("127.0.0.1:9465", 2.0)
    with pytest.raises(SettingsError, match="metrics_interval_s"):
        Settings.load(overrides={"metrics_interval_s": 0})


def test_the_server_refuses_to_start_with_exposed_metrics(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--metrics-listen", "0.0.0.0:9464"]) == 2
    assert "metrics_listen" in capsys.readouterr().err


def test_the_sample_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads(
        resources.files("server.metrics").joinpath("grafana-dashboard.json").read_text("utf-8")
    )
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {
        re.sub(r"_(bucket|count|sum|total)$", "", name)
        for expr in exprs
        for name in re.findall(r"\bauthq_[a-z0-9_]+", expr)
    }
    exposed = {family.name for family in ServerMetrics().registry.collect()}
    assert used
    assert used <= exposed, used - exposed


async def test_session_streams_are_timed_when_they_end(start_server: StartServer) -> None:
    server = await start_server(metrics_listen="127.0.0.1:0", metrics_interval_s=0.05)
    session_method = "/authq.v1.TellerService/Session"
    async with server.teller() as teller:
        async with teller.session() as session:
            reply = await session.submit(request())
            assert reply.request.request_id
            during = await scrape(server)
            # Still open: no stream has ended yet, but the submit inside it counted.
            assert (
                total(during, "authq_rpc_stream_duration_seconds_count", method=session_method) == 0
            )
        samples = await scrape_until(
            server,
            lambda s: (
                total(s, "authq_rpc_stream_duration_seconds_count", method=session_method) == 1
            ),
        )
    assert value(samples, "authq_center_events_total", event="SUBMITTED") == 1
    ended = [dict(labels)["code"] for (name, labels), v in samples.items()
             if name == "authq_rpc_stream_duration_seconds_count" and v == 1]  # fmt: skip
    assert ended == ["OK"]  # the client closed its side: a clean end, not an error


async def test_a_busy_event_loop_shows_as_lag(start_server: StartServer) -> None:
    """The test shares the server's event loop: holding it for 150 ms makes every 5 ms
    tick due meanwhile late, so the ten due in its first 50 ms show as more than 100 ms
    late (less one for where the grid falls and the millisecond uvloop may wake
    early), and the lateness adds up to about 150 + 145 + ... + 0 ms."""
    server = await start_server(metrics_listen="127.0.0.1:0", metrics_loop_lag_tick_s=0.005)
    lag = "authq_event_loop_lag_seconds"
    before = await scrape_until(server, lambda s: value(s, f"{lag}_count") > 0)
    time.sleep(0.15)  # noqa: ASYNC251 (holding the loop is the point)
    # The 30 ticks due during the hold: the count grows by them at once when the loop
    # is free, and a scrape may come in between.
    after = await scrape_until(
        server, lambda s: value(s, f"{lag}_count") >= value(before, f"{lag}_count") + 30
    )
    late = [value(s, f"{lag}_count") - value(s, f"{lag}_bucket", le="0.1") for s in (before, after)]
    assert late[1] - late[0] >= 9
    assert value(after, f"{lag}_sum") - value(before, f"{lag}_sum") >= 2.0
