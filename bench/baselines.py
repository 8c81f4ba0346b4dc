"""Ceilings of this machine, measured in the same run: the bare grpc.aio echo server
(bench/echo.py) and a bare redis-server running a claim-like script from redis-py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from authq import wire

from bench.echo import DurableStream, EchoClient
from bench.load import closed_loop, open_loop
from bench.procs import EchoServer, cpu_seconds
from bench.stats import Recorder
from server.embedded_redis import EmbeddedRedis

IN_FLIGHT = 64
CHUNK_SIZES = (64 * 1024, 256 * 1024, 512 * 1024, 1024 * 1024)


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def _measure(
    name: str, op: Any, duration_s: float, pids: dict[str, int],
    concurrency: int = IN_FLIGHT, max_count: int = 1_000_000,
) -> dict[str, Any]:  # fmt: skip
    """A closed loop's figures (``_with_cpu``)."""
    recorder = Recorder(name)
    loop = closed_loop(op, recorder, concurrency=concurrency, duration_s=duration_s,
                       max_count=max_count)  # fmt: skip
    return await _with_cpu(recorder, loop, pids)


async def _with_cpu(
    recorder: Recorder, load: Awaitable[None], pids: dict[str, int]
) -> dict[str, Any]:
    """Runs ``load`` (a loop filling ``recorder``); its figures, with
    ``<who>_cpu_us_per_call`` for each of ``pids`` and ``load_cpu_us_per_call`` for
    this process, the load generator."""
    before = {who: cpu_seconds(pid) for who, pid in pids.items()}
    await load
    result = recorder.summary()
    calls = max(1, recorder.count)
    result["load_cpu_us_per_call"] = round(recorder.load_cpu_s * 1e6 / calls, 1)
    for who, pid in pids.items():
        used = cpu_seconds(pid) - before[who]
        result[f"{who}_cpu_us_per_call"] = round(used * 1e6 / calls, 1)
    return result


@contextlib.asynccontextmanager
async def embedded_redis(prefix: str) -> AsyncIterator[tuple[str, Path, int]]:
    """A private redis-server like the server's embedded one (AOF, fsync always): its
    URL, its directory and its pid."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    embedded = EmbeddedRedis(tmp)
    try:
        url = await embedded.start()
        yield url, tmp, int((tmp / "redis.pid").read_text())
    finally:
        await embedded.stop()
        await asyncio.to_thread(shutil.rmtree, tmp, True)


async def echo_baselines(duration_s: float, image: bytes) -> dict[str, Any]:
    """Unary 256 B, unary 200 KB, the 200 KB image as a client stream of CHUNK_BYTES
    chunks, and 1 MB at each of CHUNK_SIZES (the chunk-size choice); then the same
    server's durable methods: 256 B stored by one Redis script, and the chunked 200 KB
    appended to a file, fsynced and recorded by the same script."""
    small = b"x" * 256
    chunked = split(image, wire.CHUNK_BYTES)
    megabyte = (image * 6)[: 1024 * 1024]
    out: dict[str, Any] = {"payload_bytes": len(image), "chunk_bytes": wire.CHUNK_BYTES}
    async with embedded_redis("aqe-") as (redis_url, directory, redis_pid):
        with EchoServer(durable=(redis_url, directory)) as echo:
            client = EchoClient(echo.target)
            server = {"server": echo.pid}
            durable = {"server": echo.pid, "redis": redis_pid}
            try:
                await client.echo(small)  # connect
                out["unary_256"] = await _measure(
                    "echo unary 256 B", lambda: client.echo(small), duration_s, server
                )
                out["unary_200k"] = await _measure(
                    "echo unary 200 KB", lambda: client.sink(image), duration_s, server
                )
                out["stream_200k"] = await _measure(
                    "echo chunked 200 KB", lambda: client.send_chunks(chunked), duration_s, server
                )
                sizes: dict[str, Any] = {}
                for size in CHUNK_SIZES:
                    pieces = split(megabyte, size)
                    sizes[str(size)] = await _measure(
                        f"1 MB as {size // 1024} KB chunks",
                        lambda pieces=pieces: client.send_chunks(pieces), duration_s / 2, server,
                        concurrency=16,
                    )  # fmt: skip
                out["chunk_sizes_1mb"] = sizes
                out["store_256"] = await _measure(
                    "store unary 256 B", lambda: client.store(small), duration_s, durable
                )
                out["store_stream_200k"] = await _measure(
                    "store chunked 200 KB",
                    lambda: client.send_chunks(chunked, durable=True), duration_s, durable,
                )  # fmt: skip
            finally:
                await client.close()
    return out


async def echo_again(duration_s: float, image: bytes) -> dict[str, Any]:
    """The two ceilings the ratio targets divide by, measured once more at the end of
    the run: how far the machine's pace moved meanwhile is the margin of every ratio."""
    small, chunked = b"x" * 256, split(image, wire.CHUNK_BYTES)
    with EchoServer() as echo:
        client = EchoClient(echo.target)
        server = {"server": echo.pid}
        try:
            await client.echo(small)  # connect
            return {
                "unary_256": await _measure(
                    "echo unary 256 B, again", lambda: client.echo(small), duration_s, server
                ),
                "stream_200k": await _measure(
                    "echo chunked 200 KB, again",
                    lambda: client.send_chunks(chunked), duration_s, server,
                ),
            }  # fmt: skip
        finally:
            await client.close()


async def durable_floor(
    redis_url: str, directory: Path, *, rate: float, streams: int, duration_s: float,
    redis_pid: int | None = None,
) -> tuple[dict[str, Any], Recorder]:  # fmt: skip
    """The latency floor under the half-load targets: the durable echo's StoreStream
    (one Lua script per record, answered once Redis has it on disk; batched on
    ``streams`` bidi streams, as the cycle's sessions are) driven open loop at ``rate``
    records/s against ``redis_url``. Run on the cycle's own Redis just after its
    half-load window, it has that window's AOF, rewrites and disk: a p99 at or above a
    target here is one that no design storing each request on this machine meets.
    Its CPU per request (``<who>_cpu_us_per_call``: the echo server, Redis when its
    ``redis_pid`` is given, the load generator) is what such a design spends there.
    Returns the figures and the latencies (for the plots)."""
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    with EchoServer(durable=(redis_url, directory)) as echo:
        client = EchoClient(echo.target)
        opened = [DurableStream(client) for _ in range(streams)]
        try:
            for stream in opened:  # connect, load the script
                await stream.store()
            turn = itertools.count()
            recorder = Recorder("durable echo stream, open loop")
            pids = {"server": echo.pid} | ({"redis": redis_pid} if redis_pid else {})
            loop = open_loop(lambda: opened[next(turn) % streams].store(), recorder,
                             rate=rate, duration_s=duration_s, max_count=2_000_000)  # fmt: skip
            figures = await _with_cpu(recorder, loop, pids)
        finally:
            for stream in opened:
                await stream.close()
            await client.close()
    figures["offered_rate_per_s"] = round(rate, 1)
    return figures, recorder


def drift(start: dict[str, Any], end: dict[str, Any]) -> dict[str, float]:
    """End over start, per ceiling: 1.0 is a machine as fast at the end as at the start."""
    return {key: round(end[key]["rate_per_s"] / start[key]["rate_per_s"], 3) for key in end}


CLAIM_LIKE = (Path(__file__).parent / "lua" / "claim_like.lua").read_text()
LANES = [f"bq:lane:{i}" for i in range(6)]


async def _fill(client: aioredis.Redis, count: int) -> None:
    for start in range(0, count, 5000):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(count, start + 5000)):
                pipe.hset(f"bq:req:{i}", mapping={"st": "QUEUED", "v": 1, "d": b"x" * 120})
                pipe.zadd(LANES[i % 6], {str(i): i})
            await pipe.execute()


async def redis_baselines(duration_s: float, items: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with embedded_redis("aqr-") as (url, _, redis_pid):
        client = aioredis.Redis.from_url(url, max_connections=64)
        await _fill(client, items)
        script = client.register_script(CLAIM_LIKE)
        keys = ["bq:leases", "bq:fence", "bq:events", *LANES]

        async def claim() -> None:
            result = await script(keys=keys, args=["auth-1"])
            if result[0] == b"EMPTY":
                raise RuntimeError("bare redis baseline ran out of items")

        for name, concurrency in (("claim_serial", 1), ("claim_50", 50)):
            out[name] = await _measure(
                f"redis {name}", claim, duration_s, {"redis": redis_pid},
                concurrency=concurrency, max_count=items // 2 - 100,
            )  # fmt: skip
        await client.aclose()
    return out
