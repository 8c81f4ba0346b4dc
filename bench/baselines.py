"""Ceilings of this machine, measured in the same run: the bare grpc.aio echo server
(bench/echo.py) and a bare redis-server running a claim-like script from redis-py."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from authq import wire

from bench.echo import EchoClient
from bench.load import closed_loop
from bench.procs import EchoServer, cpu_seconds
from bench.stats import Recorder
from server.embedded_redis import EmbeddedRedis

IN_FLIGHT = 64
CHUNK_SIZES = (64 * 1024, 256 * 1024, 512 * 1024, 1024 * 1024)


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def _measure(
    echo: EchoServer, name: str, op: Any, duration_s: float, concurrency: int = IN_FLIGHT
) -> dict[str, Any]:
    recorder = Recorder(name)
    cpu0 = cpu_seconds(echo.pid)
    await closed_loop(op, recorder, concurrency=concurrency, duration_s=duration_s,
                      max_count=1_000_000)  # fmt: skip
    result = recorder.summary()
    result["server_cpu_us_per_call"] = round(
        (cpu_seconds(echo.pid) - cpu0) * 1e6 / max(1, recorder.count), 1
    )
    return result


async def echo_baselines(duration_s: float, image: bytes) -> dict[str, Any]:
    """Unary 256 B, unary 200 KB, the 200 KB image as a client stream of CHUNK_BYTES
    chunks, and 1 MB at each of CHUNK_SIZES (the chunk-size choice)."""
    small = b"x" * 256
    chunked = split(image, wire.CHUNK_BYTES)
    megabyte = (image * 6)[: 1024 * 1024]
    out: dict[str, Any] = {"payload_bytes": len(image), "chunk_bytes": wire.CHUNK_BYTES}
    with EchoServer() as echo:
        client = EchoClient(echo.target)
        try:
            await client.echo(small)  # connect
            out["unary_256"] = await _measure(
                echo, "echo unary 256 B", lambda: client.echo(small), duration_s
            )
            out["unary_200k"] = await _measure(
                echo, "echo unary 200 KB", lambda: client.sink(image), duration_s
            )
            out["stream_200k"] = await _measure(
                echo, "echo chunked 200 KB", lambda: client.send_chunks(chunked), duration_s
            )
            sizes: dict[str, Any] = {}
            for size in CHUNK_SIZES:
                pieces = split(megabyte, size)
                sizes[str(size)] = await _measure(
                    echo, f"1 MB as {size // 1024} KB chunks",
                    lambda pieces=pieces: client.send_chunks(pieces), duration_s / 2, 16,
                )  # fmt: skip
            out["chunk_sizes_1mb"] = sizes
        finally:
            await client.close()
    return out


# The shape of server/lua/claim.lua without authq's bookkeeping details: the best head
# among six lanes, take it, a fencing token, the lease, a history entry, an event.
CLAIM_LIKE = """
local best, best_score, best_lane
for i = 4, #KEYS do
  local head = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if head[1] and (best_score == nil or tonumber(head[2]) < best_score) then
    best, best_score, best_lane = head[1], tonumber(head[2]), KEYS[i]
  end
end
if not best then return {'EMPTY'} end
redis.call('ZREM', best_lane, best)
local token = redis.call('INCR', KEYS[2])
local req = 'bq:req:' .. best
redis.call('HINCRBY', req, 'v', 1)
redis.call('HSET', req, 'st', 'CLAIMED', 'h', ARGV[1], 'tok', token)
redis.call('ZADD', KEYS[1], token, best)
local entry = cmsgpack.pack({best, token, 'CLAIMED', ARGV[1]})
redis.call('RPUSH', 'bq:hist:' .. best, entry)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 50000, '*', 'm', entry)
return {'OK', best, token, redis.call('HGETALL', req)}
"""
LANES = [f"bq:lane:{i}" for i in range(6)]


async def _fill(client: aioredis.Redis, count: int) -> None:
    for start in range(0, count, 5000):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(count, start + 5000)):
                pipe.hset(f"bq:req:{i}", mapping={"st": "QUEUED", "v": 1, "d": b"x" * 120})
                pipe.zadd(LANES[i % 6], {str(i): i})
            await pipe.execute()


async def redis_baselines(duration_s: float, items: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="aqr-", dir="/tmp"))
    embedded = EmbeddedRedis(tmp)
    url = await embedded.start()
    out: dict[str, Any] = {}
    try:
        client = aioredis.Redis.from_url(url, max_connections=64)
        await _fill(client, items)
        script = client.register_script(CLAIM_LIKE)
        keys = ["bq:leases", "bq:fence", "bq:events", *LANES]

        async def claim() -> None:
            result = await script(keys=keys, args=["auth-1"])
            if result[0] == b"EMPTY":
                raise RuntimeError("bare redis baseline ran out of items")

        for name, concurrency in (("claim_serial", 1), ("claim_50", 50)):
            recorder = Recorder(f"redis {name}")
            redis_pid = int((tmp / "redis.pid").read_text())
            cpu0 = cpu_seconds(redis_pid)
            await closed_loop(claim, recorder, concurrency=concurrency, duration_s=duration_s,
                              max_count=items // 2 - 100)  # fmt: skip
            out[name] = recorder.summary()
            out[name]["redis_cpu_us_per_call"] = round(
                (cpu_seconds(redis_pid) - cpu0) * 1e6 / max(1, recorder.count), 1
            )
        await client.aclose()
    finally:
        await embedded.stop()
        await asyncio.to_thread(shutil.rmtree, tmp, True)
    return out
