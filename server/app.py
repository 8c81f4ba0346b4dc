"""Assembles a running server: Redis (embedded or external), the queue store, the
event hub, dispatcher and reaper, and the gRPC services; and takes them down in the
reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

import grpc
import redis.asyncio as aioredis
from authq import wire
from authq.v1 import (
    auth_pb2_grpc,
    authorizer_pb2_grpc,
    review_pb2_grpc,
    supervisor_pb2_grpc,
    teller_pb2_grpc,
)
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from server.accounts.store import AccountStore
from server.api.auth import AuthServicer
from server.api.authorizer import AuthorizerServicer
from server.api.identity import Authenticator
from server.api.review import OnsiteReviewServicer
from server.api.supervisor import SupervisorServicer
from server.api.teller import TellerServicer
from server.blobs import LocalBlobStore
from server.center import Center, Identity
from server.demo import DEMO_PASSWORD, seed_demo
from server.dispatch import WorkDispatcher
from server.embedded_redis import EmbeddedRedis
from server.events import EventHub
from server.images.probe import ImageLimits
from server.leases import LeaseReaper
from server.policy.loader import DEFAULT_POLICY
from server.policy.reloadable import PolicyHolder
from server.settings import Settings
from server.store.audit import AuditLog
from server.store.keys import Keys
from server.store.moves import MoveStore
from server.store.queue_store import QueueConfig, QueueStore
from server.tls import check_listen, server_credentials, tls_enabled

log = logging.getLogger(__name__)


def redis_client(url: str, pool_size: int) -> aioredis.Redis:
    # Ride out a short Redis restart (about 7 s of backoff) instead of failing the
    # call: every script is safe to retry (submit and decide recognise their own
    # retries). With an explicit pool these settings must live on the pool's
    # connections: given to Redis() they would be silently ignored.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=10),
        retry_on_error=[aioredis.ConnectionError, aioredis.TimeoutError, OSError],
    )
    return aioredis.Redis(connection_pool=pool)


@dataclass
class Runtime:
    settings: Settings
    redis_url: str
    client: aioredis.Redis
    store: QueueStore
    hub: EventHub
    dispatcher: WorkDispatcher
    reaper: LeaseReaper
    center: Center
    accounts: AccountStore
    embedded: EmbeddedRedis | None
    # The hash-chained audit trail (R15), and the pending two-person moves (R6).
    audit: AuditLog
    moves: MoveStore

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        embedded = None
        url = settings.redis_url
        if url is None:
            embedded = EmbeddedRedis(settings.data_dir / "redis")
            url = await embedded.start()
        try:
            client = redis_client(url, settings.redis_pool_size)
            await client.ping()
            keys = Keys(settings.key_prefix)
            queue_config = QueueConfig(
                lease_ms=settings.lease_ms,
                importance_step_ms=settings.importance_step_ms,
                urgency_step_ms=settings.urgency_step_ms,
                events_maxlen=settings.events_maxlen,
            )
            store = QueueStore(client, keys, queue_config)
            audit = AuditLog(client, prefix=settings.key_prefix)
            moves = MoveStore(client, keys, settings.move_confirm_window_ms, queue_config)
            # A connection of its own: XREAD BLOCK holds it. No socket timeout, or a quiet
            # stream would read as a lost connection.
            hub = EventHub(aioredis.Redis.from_url(url, socket_timeout=None), keys.events)
            dispatcher = WorkDispatcher(store)
            reaper = LeaseReaper(store)
            hub.add_listener(dispatcher.on_event)
            hub.add_listener(reaper.on_event)
            await hub.start()
            dispatcher.start()
            reaper.start()
            limits = ImageLimits(max_bytes=settings.max_image_bytes)
            blobs = LocalBlobStore(settings.data_dir / "blobs")
            center = Center(store, blobs, hub, dispatcher, limits, settings.max_images)
            center.audit = audit
            center.policy = PolicyHolder.from_file(settings.policy_file or DEFAULT_POLICY)
            accounts = AccountStore(
                client,
                keys,
                token_ttl_s=settings.token_ttl_s,
                password_max_age_days=settings.password_max_age_days,
            )
            if settings.demo:
                lines = await seed_demo(accounts)
                print(f"demo accounts (password {DEMO_PASSWORD}):", *lines, sep="\n", flush=True)
        except BaseException:
            if embedded is not None:
                await embedded.stop()
            raise
        return cls(
            settings=settings,
            redis_url=url,
            client=client,
            store=store,
            hub=hub,
            dispatcher=dispatcher,
            reaper=reaper,
            center=center,
            accounts=accounts,
            embedded=embedded,
            audit=audit,
            moves=moves,
        )

    async def stop(self) -> None:
        await self.center.flush_audit()
        await self.reaper.stop()
        await self.dispatcher.stop()
        await self.hub.stop()
        await self.client.aclose(close_connection_pool=True)
        if self.embedded is not None:
            await self.embedded.stop()


def create_server(runtime: Runtime, listen: str) -> tuple[grpc.aio.Server, int]:
    """A gRPC server with the three services, bound (port 0 picks a free port)."""
    server = grpc.aio.server(options=wire.CHANNEL_OPTIONS)
    center = runtime.center

    async def audit_refusal(identity: Identity, method: str, message: str) -> None:
        await center.record_soon(identity, method, "-", message, {})

    auth = Authenticator(runtime.accounts, on_refusal=audit_refusal)
    auth_pb2_grpc.add_AuthServiceServicer_to_server(
        AuthServicer(runtime.accounts, runtime.center), server
    )
    review_pb2_grpc.add_OnsiteReviewServiceServicer_to_server(
        OnsiteReviewServicer(runtime.center, auth), server
    )
    teller_pb2_grpc.add_TellerServiceServicer_to_server(
        TellerServicer(runtime.center, auth), server
    )
    authorizer_pb2_grpc.add_AuthorizerServiceServicer_to_server(
        AuthorizerServicer(runtime.center, runtime.settings.lease_ms, auth), server
    )
    supervisor_pb2_grpc.add_SupervisorServiceServicer_to_server(
        SupervisorServicer(
            runtime.store,
            auth,
            runtime.moves,
            runtime.audit,
            runtime.center,
            runtime.center.emergencies,
        ),
        server,
    )
    # The plaintext rule again here, for callers that skip main's early check.
    check_listen(runtime.settings, listen)
    credentials = server_credentials(runtime.settings)
    if credentials is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return server, port


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Runs until SIGINT or SIGTERM, then lets in-flight calls finish."""
    # Refuse a plaintext port off loopback, or unreadable certificates, before Redis.
    check_listen(settings)
    server_credentials(settings)
    # Signal handlers first: a SIGTERM during start-up or right after "listening"
    # must still stop gracefully (in-flight calls, then the embedded Redis).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        runtime = await Runtime.start(settings)
    except BaseException:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        raise
    try:
        server, port = create_server(runtime, settings.listen)
    except BaseException:
        await runtime.stop()
        raise
    await server.start()
    host = settings.listen.rsplit(":", 1)[0]
    transport = "TLS" if tls_enabled(settings) else "plaintext"
    if settings.require_client_cert:
        transport += ", client certificates required"
    log.info(
        "authq-server listening on %s:%d (%s; redis %s)", host, port, transport, runtime.redis_url
    )
    print(f"authq-server listening on {host}:{port} ({transport})", flush=True)
    operator = Identity("operator", origin="SIGHUP")

    def reload_policy() -> None:
        async def run() -> None:
            log.warning("%s", await runtime.center.reload_policy(operator))

        reloads.add(task := asyncio.create_task(run()))
        task.add_done_callback(reloads.discard)

    reloads: set[asyncio.Task[None]] = set()
    loop.add_signal_handler(signal.SIGHUP, reload_policy)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
        log.info(
            "stopping: letting in-flight calls finish (%.0fs grace)", settings.shutdown_grace_s
        )
        await server.stop(settings.shutdown_grace_s)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await runtime.stop()
    print("authq-server stopped", flush=True)
