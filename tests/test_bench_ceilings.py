"""The durable ceilings of bench/echo.py do the work they claim: a ceiling that skipped
its Redis script or its fsync would make every ratio in the report look better."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis

from bench.baselines import drift, durable_floor, echo_again
from bench.echo import ACK, RECORD, TAG, DurableStream, EchoClient
from bench.procs import EchoServer


async def test_durable_echo_stores_each_request_and_upload(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    chunks = [b"a" * 1000, b"b" * 500]
    with EchoServer(durable=(redis_url, tmp_path)) as echo:
        client = EchoClient(echo.target)
        try:
            replies = await asyncio.gather(*(client.store(b"x" * 256) for _ in range(3)))
            upload_reply = await client.send_chunks(chunks, durable=True)
        finally:
            await client.close()
    assert replies == [ACK] * 3
    assert upload_reply == ACK
    assert (tmp_path / "uploads.bin").read_bytes() == b"".join(chunks)
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    stored = [await redis_client.hget(f"be:req:r{i}", "d") for i in range(3)]
    assert stored == [b"x" * 256] * 3
    assert await redis_client.hget(f"be:req:{digest}", "d") == digest.encode()
    assert await redis_client.zcard("be:lane") == 4
    assert await redis_client.xlen("be:events") == 4


async def test_the_ceilings_are_measured_again_at_the_end_and_their_drift_given() -> None:
    again = await echo_again(0.3, b"\xff\xd8" + bytes(200_000))
    assert set(again) == {"unary_256", "stream_200k"}
    for figures in again.values():
        assert figures["count"] > 0
        assert figures["errors"] == 0
    start = {"unary_256": {"rate_per_s": 4000.0}, "stream_200k": {"rate_per_s": 2000.0}}
    end = {"unary_256": {"rate_per_s": 3600.0}, "stream_200k": {"rate_per_s": 2100.0}}
    assert drift(start, end) == {"unary_256": 0.9, "stream_200k": 1.05}
    assert drift(start, start) == {"unary_256": 1.0, "stream_200k": 1.0}


async def test_the_durable_stream_answers_each_record_once_the_script_stored_it(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    with EchoServer(durable=(redis_url, tmp_path)) as echo:
        client = EchoClient(echo.target)
        stream = DurableStream(client)
        try:
            # Sent together, they share messages both ways: each is answered by its tag.
            await asyncio.gather(*(stream.store() for _ in range(40)))
        finally:
            await stream.close()
            await client.close()
    assert await redis_client.zcard("be:lane") == 40
    stored: list[bytes] = []
    for i in range(40):
        record = await redis_client.hget(f"be:req:r{i}", "d")
        assert isinstance(record, bytes)
        assert len(record) == RECORD
        stored.append(record)
    tags = sorted(int.from_bytes(record[:TAG], "big") for record in stored)
    assert tags == list(range(40))
    assert stream.waiting == {}


async def test_a_durable_stream_whose_redis_is_gone_fails_its_callers(tmp_path: Path) -> None:
    with EchoServer(durable=(f"unix://{tmp_path / 'none.sock'}", tmp_path)) as echo:
        client = EchoClient(echo.target)
        stream = DurableStream(client)
        try:
            with pytest.raises((grpc.aio.AioRpcError, ConnectionError)):
                await asyncio.wait_for(stream.store(), 20.0)
        finally:
            await stream.close()
            await client.close()


async def test_the_latency_floor_stores_what_it_offers_on_the_redis_it_is_given(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    floor, latencies = await durable_floor(redis_url, tmp_path / "floor", rate=200.0,
                                           streams=3, duration_s=0.5)  # fmt: skip
    assert (floor["count"], floor["errors"], floor["offered_rate_per_s"]) == (100, 0, 200.0)
    # One record per stream to connect, then the open loop's.
    assert await redis_client.zcard("be:lane") == 103
    assert floor["p50_ms"] <= floor["p99_ms"] <= floor["max_ms"]
    assert latencies.count == 100
    # CPU per request of the echo server and this process; Redis's only when its
    # process is named (the clock ticks at 10 ms: a short run may show none).
    spent = {key for key in floor if key.endswith("_cpu_us_per_call")}
    assert spent == {"server_cpu_us_per_call", "load_cpu_us_per_call"}
    assert min(floor[key] for key in spent) >= 0
