"""The HTTP endpoint Prometheus scrapes (``GET /metrics``), on a port of its own.

prometheus_client's WSGI server runs in a daemon thread; stop() shuts it down and
closes its socket, so a stopped runtime leaves no listener behind. Like the gRPC port,
it listens only on loopback unless plaintext is allowed (``allow_plaintext``): the
exposition is plain HTTP."""

from __future__ import annotations

import asyncio
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from server.settings import Settings, SettingsError
from server.tls import is_loopback


def parse_metrics_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) -> (host, port); SettingsError naming
    the setting otherwise."""
    if listen.startswith("["):
        host, _, rest = listen[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = listen.rpartition(":")
    if not host or (":" in host and not listen.startswith("[")) or not port_text.isdigit():
        raise SettingsError(f"metrics_listen: expected HOST:PORT, got {listen!r}")
    if int(port_text) > 65535:
        raise SettingsError(f"metrics_listen: port {port_text} is out of range (0-65535)")
    return host, int(port_text)


def check_metrics_listen(settings: Settings) -> None:
    """Refuses a malformed address, or one off loopback without allow_plaintext."""
    if settings.metrics_listen is None:
        return
    parse_metrics_listen(settings.metrics_listen)
    if not settings.allow_plaintext and not is_loopback(settings.metrics_listen):
        raise SettingsError(
            f"metrics_listen: refusing to serve metrics in plaintext on "
            f"{settings.metrics_listen} (not loopback): use a loopback address or "
            "--allow-plaintext on a trusted network"
        )


class MetricsEndpoint:
    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_address[1]

    @classmethod
    def start(cls, listen: str, registry: CollectorRegistry) -> MetricsEndpoint:
        host, port = parse_metrics_listen(listen)
        server, thread = start_http_server(port, addr=host, registry=registry)
        return cls(server, thread)

    async def stop(self) -> None:
        # shutdown() blocks until serve_forever notices (up to its 0.5 s poll):
        # keep the event loop free meanwhile.
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
