"""Real processes only: a private redis-server for the test session (flushed before
each test) and the gRPC server on a free port, reached over real channels."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from authorizer_console.client import AuthorizerClient
from server.app import Runtime, create_server
from server.embedded_redis import EmbeddedRedis
from server.settings import Settings
from teller_client.client import TellerClient


@dataclasses.dataclass
class RunningServer:
    runtime: Runtime
    target: str

    def teller(self, user: str = "teller-1", branch: str = "branch-1") -> TellerClient:
        return TellerClient(self.target, user, branch)

    def authorizer(self, user: str = "authorizer-1") -> AuthorizerClient:
        return AuthorizerClient(self.target, user)


@pytest.fixture(scope="session")
async def redis_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    embedded = EmbeddedRedis(Path(tmp_path_factory.mktemp("redis")))
    url = await embedded.start()
    yield url
    await embedded.stop()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushall()
    yield client
    await client.aclose()


StartServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def start_server(
    redis_client: aioredis.Redis, redis_url: str, tmp_path: Path
) -> AsyncIterator[StartServer]:
    """Starts a server on the shared Redis with the given setting overrides."""
    started: list[tuple[Runtime, object]] = []

    async def start(**overrides: object) -> RunningServer:
        settings = Settings.load(
            overrides={"redis_url": redis_url, "data_dir": tmp_path / "data", **overrides}
        )
        runtime = await Runtime.start(settings)
        server, port = create_server(runtime, "127.0.0.1:0")
        await server.start()
        started.append((runtime, server))
        return RunningServer(runtime, f"127.0.0.1:{port}")

    yield start
    for runtime, server in reversed(started):
        await server.stop(None)  # type: ignore[attr-defined]
        await runtime.stop()


@pytest.fixture
async def server(start_server: StartServer) -> RunningServer:
    return await start_server()
