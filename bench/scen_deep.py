"""A deep queue: items without images loaded straight into Redis by pipelining the
server's own submit script (the same records a Submit writes), then claims (unary Next)
and decisions timed one at a time at 1,000 waiting and at the full depth; Redis memory
per waiting item from INFO; then the automated authorizers drain at depth."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from authorizer_console.client import AuthorizerClient
from bench import workload
from bench.load import closed_loop
from bench.procs import AuthqServer
from bench.redis_stalls import forks
from bench.rig import CycleRig
from bench.stats import Recorder, cpu_per_1000, now
from server.domain.records import Submission
from server.domain.routing import band_of
from server.store.keys import Keys
from server.store.queue_store import QueueConfig, QueueStore
from server.store.scripts import run_all

BATCH = 2000
EVENTS_MAXLEN = 50_000  # the server's default events_maxlen
# One claim and its decision take 4-5 ms one at a time: the claims get longer than
# one measurement step, so that their count, not the clock, ends them.
CLAIM_TIME_FACTOR = 2.5
DRAIN_WARM_UP_S = 2.0


def _submission(i: int) -> Submission:
    return Submission(
        request_id=workload.request_id("d"), branch_id=f"branch-{i % 50}",
        teller_id=f"teller-{i % 400}", business_type=workload.HIGH, amount_minor=1_250_000,
        currency="CNY", account="6222020200001234", customer_name="Bench Customer",
        memo="benchmark", fields={}, urgency=1, importance=3, images=(),
    )  # fmt: skip


async def load_items(client: aioredis.Redis, count: int) -> float:
    """Submits ``count`` items through the submit script, pipelined; returns items/s."""
    store = QueueStore(client, Keys(), QueueConfig(events_maxlen=EVENTS_MAXLEN))
    t0 = now()
    for start in range(0, count, BATCH):
        # On the client's pipe (bench/procs.py) each batch leaves in one write.
        calls = [store.submit_call(_submission(i)) for i in range(start, min(count, start + BATCH))]
        replies = await run_all(store.scripts.submit, calls)
        refused = [r for r in replies if isinstance(r, Exception) or r[0] != b"OK"]
        if refused:
            # e.g. FALLBACK while an emergency is in force: the queue is not as deep.
            raise RuntimeError(f"{len(refused)} submits not stored, first: {refused[0]!r}")
    return count / max(1e-9, now() - t0)


async def used_memory(client: aioredis.Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


async def settle(server: AuthqServer, client: aioredis.Redis, limit_s: float = 240.0) -> float:
    """Waits until the server is idle again (its event hub has read the events of the
    load: less than 10% of a core over half a second) and Redis has no AOF rewrite
    running or due. Returns the seconds waited.

    Loading grows the AOF past its rewrite threshold again and again (each rewrite
    forks Redis and writes the whole dataset, 6 s of a core at 1,000,000 items): one
    still running would share the two cores with the claims timed next, which the
    claims at 1,000 waiting never meet."""
    t0 = now()
    while now() - t0 < limit_s:
        before = server.cpu()
        await asyncio.sleep(0.5)
        after = server.cpu()
        if after.server_s - before.server_s < 0.05 and not await rewriting(client):
            break
    return round(now() - t0, 1)


async def rewriting(client: aioredis.Redis) -> bool:
    info = await client.info("persistence")
    return bool(int(info["aof_rewrite_in_progress"]) or int(info["aof_rewrite_scheduled"]))


async def timed_claims(
    target: str, redis: aioredis.Redis, count: int, duration_s: float
) -> dict[str, Any]:
    """``count`` claims and decisions one at a time, for at most ``duration_s``."""
    claim, decide = Recorder("claim"), Recorder("decision")
    forks_before = await forks(redis)
    async with AuthorizerClient(target, *workload.authorizer_login(0)) as client:
        deadline = now() + duration_s
        for _ in range(count):
            if now() > deadline:
                break
            t0 = now()
            offer = await client.next(timeout=5.0)
            t1 = now()
            claim.add(t0, t1)
            await client.decide(offer.request.request_id, offer.lease.fencing_token, "approve")
            decide.add(t1)
    # A rewrite that began meanwhile is in these figures: say so.
    return {"claim": claim.summary(), "decision": decide.summary(), "_claim": claim,
            "redis_forks": await forks(redis) - forks_before}  # fmt: skip


async def run_deep(
    server: AuthqServer, depth: int, claims: int, duration_s: float
) -> dict[str, Any]:
    out: dict[str, Any] = {"depth": depth, "claims_per_depth": claims}
    claims_s = CLAIM_TIME_FACTOR * duration_s
    client = server.redis()
    try:
        base = await used_memory(client)
        out["load_1k_per_s"] = round(await load_items(client, 1000 + claims), 1)
        await asyncio.sleep(0.5)
        out["at_1k"] = await timed_claims(server.target, client, claims, claims_s)
        out["_claim_1k"] = out["at_1k"].pop("_claim")
        mem0 = await used_memory(client)
        rest = depth - 1000
        cpu0 = server.cpu()
        forks0 = await forks(client)
        out["load_per_s"] = round(await load_items(client, rest + claims), 1)
        out["load_redis_forks"] = await forks(client) - forks0
        out["load_cpu"] = cpu_per_1000(cpu0, server.cpu(), rest + claims)
        mem1 = await used_memory(client)
        out["redis_used_memory_base"] = base
        out["redis_used_memory_full"] = mem1
        out["redis_bytes_per_item"] = round((mem1 - mem0) / (rest + claims), 1)
        out["settle_s"] = await settle(server, client)
        out["at_depth"] = await timed_claims(server.target, client, claims, claims_s)
        out["_claim_deep"] = out["at_depth"].pop("_claim")
        sample = _submission(0)
        lane = Keys().lane(sample.priority, sample.business_type, band_of(sample.amount_minor))
        waiting = await client.zcard(lane)
        out["waiting_after_claims"] = int(waiting)
        async with CycleRig(server.target, tellers=1) as rig:
            # As in the full cycle, the figures start once the streams run: in their
            # first second and a half the decisions ramped up from a quarter of the rate.
            await asyncio.sleep(DRAIN_WARM_UP_S)
            rig.reset()
            cpu0 = server.cpu()
            recorder = Recorder("drain")

            async def sleep_tick() -> None:
                await asyncio.sleep(0.05)

            await closed_loop(sleep_tick, recorder, concurrency=1, duration_s=duration_s,
                              max_count=1_000_000)  # fmt: skip
            out["drain_decisions_per_s"] = round(rig.decisions.rate(), 1)
            out["drain_decision"] = rig.decision.summary()
            out["drain_cpu"] = cpu_per_1000(
                cpu0, server.cpu(), 2 * rig.decisions.count, recorder.load_cpu_s
            )
            out["_drain"] = rig.decisions
        out.update(server.rss())
    finally:
        await client.aclose()
    return out
