"""Everything the live metrics need, started and stopped as one piece by the runtime:
the registry, the event counter (an EventHub listener), the RPC interceptor, the
queue sampler, the event loop's lag probe and the HTTP endpoint."""

from __future__ import annotations

import logging

from server.archive.index import ArchiveIndex
from server.events import EventHub
from server.metrics.endpoint import MetricsEndpoint
from server.metrics.event_counter import EventCounter
from server.metrics.interceptor import RpcMetricsInterceptor
from server.metrics.loop_lag import LoopLagProbe
from server.metrics.queue_sampler import QueueSampler
from server.metrics.registry import ServerMetrics
from server.store.emergencies import EmergencyStore
from server.store.queue_store import QueueStore

log = logging.getLogger(__name__)


class MetricsService:
    def __init__(
        self,
        listen: str,
        store: QueueStore,
        emergencies: EmergencyStore,
        archive: ArchiveIndex,
        interval_s: float,
        loop_lag_tick_s: float,
    ) -> None:
        self.listen = listen
        self.metrics = ServerMetrics()
        self.counter = EventCounter(self.metrics)
        self.interceptor = RpcMetricsInterceptor(self.metrics)
        self.sampler = QueueSampler(self.metrics, store, emergencies, archive, interval_s)
        self.loop_lag = LoopLagProbe(self.metrics.loop_lag_seconds, loop_lag_tick_s)
        self.endpoint: MetricsEndpoint | None = None

    @property
    def port(self) -> int:
        if self.endpoint is None:
            raise RuntimeError("the metrics endpoint is not started")
        return self.endpoint.port

    def attach(self, hub: EventHub) -> None:
        """Before hub.start(), so that no event after start-up goes uncounted."""
        hub.add_listener(self.counter.on_event)

    def start(self) -> None:
        self.endpoint = MetricsEndpoint.start(self.listen, self.metrics.registry)
        self.sampler.start()
        self.loop_lag.start()
        log.info("metrics on http://%s/metrics (port %d)", self.listen, self.endpoint.port)

    async def stop(self) -> None:
        await self.loop_lag.stop()
        await self.sampler.stop()
        if self.endpoint is not None:
            await self.endpoint.stop()
            self.endpoint = None
