"""Nothing lost, nothing doubled: the server and its Redis killed with SIGKILL in the
middle of a workload, then restarted on the same data directory. That holds for the
requests and for the audit trail (R15): every action they went through has exactly
one record."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from authq.channel import SessionCallError
from authq.v1 import common_pb2 as cpb

from authorizer_console.client import AuthorizerClient
from server.demo import DEMO_PASSWORD
from server.store.audit import AuditLog
from teller_client.client import TellerClient
from tests.helpers import request, standard_images
from tests.processes import free_port, redis_pid, start_server_process

LOST = (SessionCallError, grpc.aio.AioRpcError, asyncio.TimeoutError, ConnectionError)


async def test_sigkill_mid_workload_loses_and_doubles_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = {"AUTHQ_LEASE_MS": "1500"}
    process = start_server_process(data, port, env)
    acked: set[str] = set()
    decided: dict[str, str] = {}

    async def submit_forever() -> None:
        async with (
            TellerClient(target, "teller-1", DEMO_PASSWORD) as teller,
            teller.session() as session,
        ):
            await teller.upload_images(standard_images())
            for i in range(100_000):
                # One in ten uploads its captures on the session too (stored once).
                uploads = standard_images() if i % 10 == 0 else ()
                reply = await session.submit(request(request_id=f"crash-{i:06d}"), uploads)
                acked.add(reply.request.request_id)

    async def decide_forever(name: str) -> None:
        async with (
            AuthorizerClient(target, name, DEMO_PASSWORD) as client,
            client.session() as console,
        ):
            console.credit(2)
            while True:
                offer = await console.offers.get()
                rid = offer.request.request_id
                await console.decide(rid, offer.lease.fencing_token, "approve")
                decided[rid] = name
                console.credit(1)

    workers = [asyncio.create_task(submit_forever())]
    workers += [asyncio.create_task(decide_forever(f"authorizer-{n}")) for n in (1, 2)]
    while len(decided) < 150:
        await asyncio.sleep(0.05)
        for worker in workers:
            if worker.done():
                worker.result()  # a worker that died early fails the test with its error
    # Redis first, then the server: the worst order, no chance to flush anything.
    os.kill(redis_pid(data), signal.SIGKILL)
    process.send_signal(signal.SIGKILL)
    process.wait()
    for worker in workers:
        worker.cancel()
    for worker in workers:
        with contextlib.suppress(asyncio.CancelledError, *LOST):
            await worker
    # A request can be decided before its submit's reply reaches the teller: the kill
    # may then take only the acknowledgement. Such a request must survive too.
    assert len(acked) > 100
    known = acked | set(decided)

    process = start_server_process(data, port, env)
    try:
        async with TellerClient(target, "teller-1", DEMO_PASSWORD) as teller:
            states = {}
            for rid in sorted(known):
                view = await teller.get(rid)  # NOT_FOUND here would be a lost request
                states[rid] = view.state
            for rid in decided:
                assert states[rid] == cpb.REQUEST_STATE_APPROVED, rid

            # Drain what is left: leases of the killed consoles expire and return.
            async with (
                AuthorizerClient(target, "authorizer-1", DEMO_PASSWORD) as client,
                AuthorizerClient(target, "supervisor-1", DEMO_PASSWORD) as supervisor,
            ):
                overview = await supervisor.overview()
                remaining = overview.waiting + overview.claimed
                for _ in range(remaining):
                    offer = await client.next(timeout=10)
                    await client.decide(
                        offer.request.request_id, offer.lease.fencing_token, "approve"
                    )
                overview = await supervisor.overview()
                assert overview.waiting == overview.claimed == 0

            histories = {}
            for rid in sorted(known):
                view = await teller.get(rid)
                events = [entry.event for entry in view.history]
                assert view.state == cpb.REQUEST_STATE_APPROVED, rid
                assert events.count("APPROVED") == 1, (rid, events)
                assert events.count("SUBMITTED") == 1, (rid, events)
                histories[rid] = events
        await check_audit_trail(data, histories)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


async def check_audit_trail(data: Path, histories: dict[str, list[str]]) -> None:
    """Each action in the requests' histories has exactly one OK record: the ones
    done just before the kill included, whose records the killed server had not
    chained yet (the restarted one does, from the staging stream)."""
    client = aioredis.Redis(unix_socket_path=str(data / "redis" / "redis.sock"))
    try:
        log = AuditLog(client)
        for _ in range(200):  # the restarted server chains what was staged at once
            if await client.xlen(log.staged_key) == 0:
                break
            await asyncio.sleep(0.05)
        assert await client.xlen(log.staged_key) == 0
        counts: dict[tuple[str, str], int] = {}
        async for record in log.read():
            if record.entry.outcome == "OK":
                key = (record.entry.target, record.entry.action)
                counts[key] = counts.get(key, 0) + 1
        assert (await log.verify()).ok
    finally:
        await client.aclose()
    for rid, events in histories.items():
        found = {
            action: counts.get((rid, action), 0)
            for action in ("SUBMIT", "CLAIM", "LEASE_EXPIRED", "DECIDE")
        }
        expected = {
            "SUBMIT": 1,
            "CLAIM": events.count("CLAIMED"),
            "LEASE_EXPIRED": events.count("LEASE_EXPIRED"),
            "DECIDE": 1,
        }
        assert found == expected, (rid, events)
