"""What the server requires of the Redis it runs on: a version with every command its
scripts use, and settings that keep what it acknowledges.

The scripts use commands and options of Redis 6.2 (GETDEL, SET ... GET, XADD and
XTRIM with MINID): on an older Redis they would fail on first use, each call an
internal error. So an older one is refused at start, naming its version.

A request acknowledged to a teller must survive a Redis restart, and that promise rests
on three settings of Redis, not of authq: the append-only file on, fsynced before each
answer, and no eviction of keys when memory runs short. The embedded Redis is started
so (server/embedded_redis.py); an external one is configured by its operators, and a
default Redis has the file off. So the server reads the settings when it starts and
refuses a Redis that would lose acknowledged requests, unless told that losing them is
acceptable (a test system); and it reads them again while it runs, since CONFIG SET
can change them on a live Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
import redis.exceptions

from server.background import BackgroundLoop
from server.store.queue_reads import as_text

log = logging.getLogger(__name__)

# How often a running server reads the settings again.
RECHECK_S = 60.0


# The oldest Redis with every command and option the scripts use.
MIN_VERSION = (6, 2)


class RedisUnfit(Exception):
    """The Redis at start is too old, or does not keep what it acknowledges; the message
    says what and how to fix it."""


@dataclass(frozen=True, slots=True)
class Required:
    setting: str
    wanted: str
    why: str


REQUIRED = (
    Required("appendonly", "yes", "changes are written to the append-only file"),
    Required("appendfsync", "always", "each change is on disk before Redis answers"),
)
# With a memory limit, any other policy evicts keys (a waiting request among them)
# rather than refuse the write that needs the memory.
EVICTION = Required("maxmemory-policy", "noeviction", "no key is dropped when memory is full")
# What is read: the settings above, and whether there is a memory limit at all.
READ = (*(required.setting for required in (*REQUIRED, EVICTION)), "maxmemory")


def problems_in(config: Mapping[str, str]) -> list[str]:
    """What in Redis's settings (CONFIG GET's answer) loses acknowledged changes."""
    found = []
    wanted = list(REQUIRED)
    if config.get("maxmemory", "0") != "0":
        wanted.append(EVICTION)
    for required in wanted:
        value = config.get(required.setting)
        if value is None:
            found.append(f"{required.setting} is not reported, {required.wanted} is needed")
        elif value.lower() != required.wanted:
            found.append(f"{required.setting} is {value}, not {required.wanted} ({required.why})")
    return found


async def problems(client: aioredis.Redis) -> list[str]:
    """What in the Redis behind ``client`` loses acknowledged changes; a Redis that will
    not tell (CONFIG refused) is a problem too, since nothing then shows it is safe."""
    config: dict[str, str] = {}
    try:
        for setting in READ:
            answer = await client.config_get(setting)
            config.update({as_text(key): as_text(value) for key, value in answer.items()})
    except redis.exceptions.ResponseError as exc:
        return [f"its settings cannot be read (CONFIG GET: {exc})"]
    return problems_in(config)


def version_problem(version: str) -> str | None:
    """Why a Redis of ``version`` (INFO's redis_version) is too old, or None."""
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return f"its version {version!r} cannot be read; {_shown(MIN_VERSION)} or later is needed"
    if major_minor >= MIN_VERSION:
        return None
    return (
        f"it is Redis {version}: the scripts use commands of Redis {_shown(MIN_VERSION)} "
        "(GETDEL, SET ... GET, MINID); upgrade it"
    )


def _shown(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def refusal(where: str, found: list[str]) -> str:
    return (
        f"the Redis at {where} would lose requests it has acknowledged: "
        + "; ".join(found)
        + ". Configure it so (README: Configuration), or set accept_volatile_redis = "
        "true in the config file to run on it anyway (a test system only)"
    )


async def check_at_start(client: aioredis.Redis, where: str, accept_volatile: bool) -> bool:
    """Whether the Redis is durable. One too old raises RedisUnfit; one that is not
    durable too, or with ``accept_volatile`` is logged."""
    too_old = version_problem(as_text((await client.info("server")).get("redis_version", "")))
    if too_old:
        raise RedisUnfit(f"the Redis at {where} cannot serve authq: {too_old}")
    found = await problems(client)
    if found and not accept_volatile:
        raise RedisUnfit(refusal(where, found))
    if found:
        log.warning("running on a volatile Redis (accept_volatile_redis): %s", "; ".join(found))
    return not found


class DurabilityWatch:
    """Reads the settings again every RECHECK_S while the server runs. A Redis that
    stops keeping what it acknowledges (CONFIG SET appendonly no) is logged as an error
    once, when it starts, with what changed, and once more when it is fixed: the
    operators' alert. ``durable`` is the last reading (for the metrics endpoint)."""

    def __init__(
        self, client: aioredis.Redis, durable: bool, interval_s: float = RECHECK_S
    ) -> None:
        self.client = client
        self.interval_s = interval_s
        self.durable = durable
        self.loop = BackgroundLoop("redis-durability")

    def start(self) -> None:
        self.loop.start(self._run)

    async def stop(self) -> None:
        await self.loop.stop()

    async def check(self) -> None:
        try:
            found = await problems(self.client)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return  # Redis away: the outage is reported where calls fail.
        if found and self.durable:
            log.error(
                "Redis no longer keeps what it acknowledges: %s. Requests acknowledged "
                "from now on are lost if Redis stops; fix its settings",
                "; ".join(found),
            )
        elif not found and not self.durable:
            log.warning("Redis keeps what it acknowledges again")
        self.durable = not found

    async def _run(self) -> None:
        while not self.loop.stopping:
            await self.loop.nap(self.interval_s)
            if not self.loop.stopping:
                await self.check()
