"""The metric objects of one server process, on a private CollectorRegistry (so tests
and several runtimes in one process never share or collide on the global one).

Names follow the Prometheus conventions: seconds, ``_total`` on counters (added by the
client library). The ``authq_center_*`` counters are center-wide, not per process:
see server/metrics/event_counter.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from server import background

# Unary calls: a submit acknowledges in a few ms; an image upload (fsync) takes longer.
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Streams live from a one-shot Watch (seconds) to a workstation's shift-long session.
STREAM_BUCKETS = (0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 4 * 3600.0, 12 * 3600.0)
# A round trip to Redis on the same host is well under a millisecond when healthy.
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0)

# How late the event loop runs a ready timer: under a millisecond when it has time to
# spare, tens of milliseconds when it is the bottleneck (server/metrics/loop_lag.py).
LOOP_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

PRIORITY_LABELS = ("importance", "urgency")


def _counted_by(
    name: str, documentation: str, label: str, counts: Mapping[str, int]
) -> CounterMetricFamily:
    """A counter family read from a plain mapping the process keeps: one sample per key."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, count in sorted(counts.items()):
        family.add_metric([key], count)
    return family


class LoopRestarts(Collector):
    """The restarts server/background.py counts, read at each scrape."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield _counted_by(
            "authq_background_loop_restarts",
            "Restarts of a background loop of this process (lease reaper, dispatcher, "
            "event hub, ...) after its body failed, by loop. Each failure is logged; a "
            "count that keeps rising is a loop that never runs long.",
            "loop",
            background.RESTARTS,
        )


class AdmissionCounts(Protocol):
    """What the admission ceiling counts (server/api/admission.py)."""

    @property
    def calls_in_flight(self) -> int: ...

    @property
    def open_streams(self) -> int: ...

    @property
    def refused(self) -> Mapping[str, int]: ...

    @property
    def expired(self) -> Mapping[str, int]: ...


class AdmissionGauges(Collector):
    """The admission ceiling's counts, read at each scrape: the calls themselves only
    change plain integers."""

    def __init__(self, counts: AdmissionCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily(
            "authq_calls_in_flight",
            "Unary and client-streaming calls (and image downloads) running now; new ones "
            "are refused RESOURCE_EXHAUSTED at max_calls_in_flight.",
            value=self.counts.calls_in_flight,
        )
        yield GaugeMetricFamily(
            "authq_open_streams",
            "Session streams, watches and waiting Next calls open now; new ones are "
            "refused RESOURCE_EXHAUSTED at max_open_streams.",
            value=self.counts.open_streams,
        )
        yield _counted_by(
            "authq_calls_refused_at_capacity",
            "Calls and streams refused RESOURCE_EXHAUSTED at an admission ceiling "
            "(max_calls_in_flight, max_open_streams, max_logins_in_flight), by method.",
            "method",
            self.counts.refused,
        )
        yield _counted_by(
            "authq_calls_dropped_expired",
            "Calls dropped DEADLINE_EXCEEDED before their handler ran, their deadline "
            "passed while they waited for the server, by method.",
            "method",
            self.counts.expired,
        )


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpc_seconds = Histogram(
            "authq_rpc_duration_seconds",
            "Unary and client-streaming gRPC calls: time from the call reaching the "
            "servicer to its answer, by method and status code.",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.stream_seconds = Histogram(
            "authq_rpc_stream_duration_seconds",
            "Server-streaming gRPC calls (Watch, sessions): how long each stream lasted, "
            "by method and the status code it ended with (the count is streams ended).",
            ["method", "code"],
            buckets=STREAM_BUCKETS,
            registry=r,
        )
        self.redis_seconds = Histogram(
            "authq_redis_roundtrip_seconds",
            "Round trip of a PING to the queue's Redis, timed by the metrics sampler.",
            buckets=REDIS_BUCKETS,
            registry=r,
        )
        self.loop_lag_seconds = Histogram(
            "authq_event_loop_lag_seconds",
            "How late this process's event loop ran a timer (metrics_loop_lag_tick_s): how long "
            "a request arriving then waited for the one thread that runs every handler. "
            "Lags under 1 ms are not resolved.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.queue_waiting = Gauge(
            "authq_queue_waiting",
            "Requests waiting in the queue, per priority lane.",
            PRIORITY_LABELS,
            registry=r,
        )
        self.queue_head_wait = Gauge(
            "authq_queue_head_wait_seconds",
            "How long the longest-waiting request of each priority lane has waited since "
            "it joined the queue (0 for an empty lane).",
            PRIORITY_LABELS,
            registry=r,
        )
        self.queue_oldest_wait = Gauge(
            "authq_queue_oldest_wait_seconds",
            "How long the longest-waiting request has waited since it joined the queue.",
            registry=r,
        )
        self.requests_by_state = Gauge(
            "authq_requests",
            "Requests per state, as the queue counts them.",
            ["state"],
            registry=r,
        )
        self.emergencies_active = Gauge(
            "authq_emergencies_active",
            "Emergency fallback periods in force (R8).",
            registry=r,
        )
        self.emergency_center_wide = Gauge(
            "authq_emergency_center_wide",
            "1 while a center-wide emergency is in force: every branch falls back.",
            registry=r,
        )
        self.emergency_branches = Gauge(
            "authq_emergency_branches",
            "Branches named by the branch-scoped emergencies in force.",
            registry=r,
        )
        self.archive_backlog = Gauge(
            "authq_archive_backlog",
            "Ended requests not archived yet. The archiver runs on CPU time the server "
            "leaves: it grows during a peak and should fall back to 0 after it.",
            registry=r,
        )
        self.claims = Counter(
            "authq_center_claims",
            "Claims of the whole center (every server process counts every one).",
            registry=r,
        )
        self.decisions = Counter(
            "authq_center_decisions",
            "Decisions of the whole center, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.lease_expiries = Counter(
            "authq_center_lease_expiries",
            "Claims whose lease ran out, returning the item to the queue (center-wide).",
            registry=r,
        )
        self.events = Counter(
            "authq_center_events",
            "Every queue transition of the whole center, by event.",
            ["event"],
            registry=r,
        )
        self.sample_errors = Counter(
            "authq_metrics_sample_errors",
            "Samples of the queue state that failed (Redis unreachable, say).",
            registry=r,
        )
        self.last_sample = Gauge(
            "authq_metrics_last_sample_timestamp_seconds",
            "When the queue gauges were last refreshed (Redis time).",
            registry=r,
        )
        r.register(LoopRestarts())

    def watch_admission(self, counts: AdmissionCounts) -> None:
        """Exports the admission ceiling's counts (once per registry)."""
        self.registry.register(AdmissionGauges(counts))

    def watch_durability(self, durable: Callable[[], bool]) -> None:
        """Exports the durability watch's last reading (once per registry): the log
        says it once, an alert can hold it (server/store/redis_requirements.py)."""
        gauge = Gauge(
            "authq_redis_durable",
            "1 while Redis keeps what it acknowledges (appendonly yes, appendfsync always, "
            "no evicting maxmemory-policy), read every minute; 0 from a change that "
            "loses acknowledged requests until it is fixed.",
            registry=self.registry,
        )
        gauge.set_function(lambda: float(durable()))
