"""The durable ceilings of bench/echo.py do the work they claim: a ceiling that skipped
its Redis script or its fsync would make every ratio in the report look better."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import redis.asyncio as aioredis

from bench.baselines import drift, echo_again
from bench.echo import ACK, EchoClient
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
