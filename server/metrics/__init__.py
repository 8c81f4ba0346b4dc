"""Live Prometheus metrics of the server (issue 7): RPC latency, queue depth and
waits, claims, decisions, lease expiries, emergency state, Redis round trips,
event-loop lag."""

from server.metrics.endpoint import MetricsEndpoint, check_metrics_listen, parse_metrics_listen
from server.metrics.registry import ServerMetrics
from server.metrics.service import MetricsService

__all__ = [
    "MetricsEndpoint",
    "MetricsService",
    "ServerMetrics",
    "check_metrics_listen",
    "parse_metrics_listen",
]
