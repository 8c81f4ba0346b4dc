"""Real processes only: a private redis-server for the test session (flushed before
each test) and the gRPC server on a free port, reached over real channels."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from authq import wire

from authorizer_console.client import AuthorizerClient
from server.accounts.model import Role
from server.app import Runtime, create_server
from server.embedded_redis import EmbeddedRedis
from server.errors import AlreadyExists
from server.policy.always_open import always_open_copy
from server.policy.loader import DEFAULT_POLICY
from server.settings import Settings
from server.store import connect
from teller_client.client import TellerClient
from tests.helpers import standard_images

# A suite started in the background (`cmd &` without job control) has SIGINT ignored,
# and so would every child it starts: Python then installs no Ctrl-C handler, and the
# tests that send a command line Ctrl-C would test nothing. With a handler here, each
# child starts with SIGINT as from a terminal. Not by a preexec_fn in each child: a
# fork that runs Python before exec, in a process with gRPC channels open, can abort
# in gRPC's poller (grpc/grpc#43055, seen here as exit -6).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

PASSWORD = "test-password-1"


@dataclasses.dataclass
class RunningServer:
    runtime: Runtime
    target: str

    async def account(self, user: str, roles: Iterable[Role], branch: str = "") -> None:
        """Creates the account (and its branch) unless it exists."""
        accounts = self.runtime.accounts
        if branch and not await accounts.branch_exists(branch):
            with contextlib.suppress(AlreadyExists):
                await accounts.create_branch(branch, branch)
        with contextlib.suppress(AlreadyExists):
            await accounts.create_user(
                user, user, roles, PASSWORD, branch_id=branch, must_change_password=False
            )

    @contextlib.asynccontextmanager
    async def teller(
        self, user: str = "teller-1", branch: str = "branch-1"
    ) -> AsyncIterator[TellerClient]:
        await self.account(user, [Role.TELLER], branch)
        async with TellerClient(self.target, user, PASSWORD) as client:
            yield client

    @contextlib.asynccontextmanager
    async def authorizer(self, user: str = "authorizer-1") -> AsyncIterator[AuthorizerClient]:
        await self.account(user, [Role.AUTHORIZER])
        async with AuthorizerClient(self.target, user, PASSWORD) as client:
            yield client

    @contextlib.asynccontextmanager
    async def supervisor(self, user: str = "supervisor-1") -> AsyncIterator[AuthorizerClient]:
        await self.account(user, [Role.SUPERVISOR])
        async with AuthorizerClient(self.target, user, PASSWORD) as client:
            yield client


@pytest.fixture(scope="session")
async def redis_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    embedded = EmbeddedRedis(Path(tmp_path_factory.mktemp("redis")))
    url = await embedded.start()
    yield url
    await embedded.stop()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    # The server's own client: Lua scripts run on its pipe (server/store/redis_pipe.py).
    client = connect.redis_client(redis_url, 8)
    await client.flushall()
    yield client
    await client.aclose(close_connection_pool=True)


StartServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture(scope="session")
def open_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped policy, open around the clock: a suite run at night must pass.
    The hours themselves are tested with explicit clocks (tests/test_hours_rules.py)."""
    return always_open_copy(DEFAULT_POLICY, tmp_path_factory.mktemp("policy") / "policy.toml")


@pytest.fixture
async def start_server(
    redis_client: aioredis.Redis, redis_url: str, tmp_path: Path, open_policy: Path
) -> AsyncIterator[StartServer]:
    """Starts a server on the shared Redis with the given setting overrides."""
    started: list[tuple[Runtime, object]] = []

    async def start(**overrides: object) -> RunningServer:
        settings = Settings.load(
            overrides={
                "redis_url": redis_url,
                "data_dir": tmp_path / "data",
                "policy_file": open_policy,
                # The archiver runs on the server's loop, where a test can drive it;
                # tests/test_archive_worker.py covers its own process.
                "archive_worker": False,
                **overrides,
            }
        )
        runtime = await Runtime.start(settings)
        for kind, data in standard_images():
            upload = runtime.center.begin_upload(kind, wire.sha256_hex(data), len(data))
            upload.add(data)
            await runtime.center.finish_upload(upload)
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
