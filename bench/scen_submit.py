"""Submit only: 0, 1 or 3 images of ~200 KB, on the unary form (UploadImage + Submit)
and on the session stream (TellerService.Session), optionally from several client
processes at once."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import uvloop

from bench import workload
from bench.load import closed_loop, open_loop, quiet_collector
from bench.procs import AuthqServer
from bench.stats import CpuSample, Recorder, cpu_per_1000, now
from teller_client.client import TellerClient

SESSIONS = 4


@dataclass(frozen=True)
class SubmitLoad:
    target: str
    form: str  # "unary" | "session"
    images: int
    concurrency: int
    duration_s: float
    max_count: int
    start_at: float = 0.0
    worker: int = 0


async def submit_load(load: SubmitLoad) -> Recorder:
    recorder = Recorder(f"submit {load.form} {load.images} img")
    if load.images:
        workload.warm_images()
    delay = load.start_at - now()
    if delay > 0:
        await asyncio.sleep(delay)
    async with contextlib.AsyncExitStack() as stack:
        if load.form == "unary":
            client = await stack.enter_async_context(
                TellerClient(load.target, *workload.teller_login(load.worker))
            )
            await workload.upload_standard(client)

            async def op() -> None:
                await client.submit(
                    workload.submit_request(uploaded=load.images), workload.images(load.images)
                )

            await closed_loop(op, recorder, concurrency=load.concurrency,
                              duration_s=load.duration_s, max_count=load.max_count)  # fmt: skip
            return recorder
        sessions = []
        for i in range(SESSIONS):
            teller = await stack.enter_async_context(
                TellerClient(load.target, *workload.teller_login(load.worker + i))
            )
            await workload.upload_standard(teller)
            sessions.append(await stack.enter_async_context(teller.session()))
        turn = iter(range(1 << 62))

        async def session_op() -> None:
            session = sessions[next(turn) % len(sessions)]
            await session.submit(
                workload.submit_request(uploaded=load.images), workload.images(load.images)
            )

        await closed_loop(session_op, recorder, concurrency=load.concurrency,
                          duration_s=load.duration_s, max_count=load.max_count)  # fmt: skip
    return recorder


async def _cpu_at(server: AuthqServer, at: float) -> CpuSample:
    await asyncio.sleep(max(0.0, at - now()))
    return server.cpu()


def _in_child(load: SubmitLoad) -> Recorder:
    quiet_collector()
    return uvloop.run(submit_load(load))


async def run_submit(
    server: AuthqServer, load: SubmitLoad, processes: int = 1
) -> tuple[dict[str, Any], Recorder]:
    """Runs the load from ``processes`` client processes (1: this process)."""
    if processes == 1:  # warm the server and this client up; not measured
        await submit_load(SubmitLoad(load.target, load.form, load.images, load.concurrency,
                                     1.0, 1_000_000))  # fmt: skip
    cpu0 = server.cpu()
    if processes == 1:
        recorder = await submit_load(load)
    else:
        context = multiprocessing.get_context("spawn")
        start_at = now() + 4.0  # the children import grpc and build their images first
        first = asyncio.create_task(_cpu_at(server, start_at))
        with ProcessPoolExecutor(processes, mp_context=context) as pool:
            loop = asyncio.get_running_loop()
            parts = await asyncio.gather(*(
                loop.run_in_executor(pool, _in_child, SubmitLoad(
                    load.target, load.form, load.images, load.concurrency // processes,
                    load.duration_s, load.max_count // processes, start_at, worker))
                for worker in range(processes)
            ))  # fmt: skip
        cpu0 = await first
        recorder = Recorder(parts[0].name)
        for part in parts:
            recorder.merge(part)
    cpu1 = server.cpu()
    result = recorder.summary()
    result.update(cpu_per_1000(cpu0, cpu1, recorder.count, recorder.load_cpu_s))
    if load.images:
        # The checks run niced behind the uploads: say how far behind they were, and
        # start the next scenario once they are done.
        result["checks_pending_after"] = await server.checks_pending()
        result["checks_caught_up_s"] = await server.checks_settled()
        # What the machine sustains with every check done, not only acknowledged: the
        # uploads over the time from the first one to the last check.
        if recorder.done_at:
            busy_s = max(recorder.done_at) - min(recorder.done_at) + result["checks_caught_up_s"]
            result["checked_rate_per_s"] = round(recorder.count / max(busy_s, 1e-3), 1)
    result.update(server.rss())
    result.update(form=load.form, images=load.images, concurrency=load.concurrency,
                  client_processes=processes)  # fmt: skip
    return result, recorder


async def run_submit_open(
    server: AuthqServer, rate: float, duration_s: float
) -> tuple[dict[str, Any], Recorder]:
    """Unary submits without images on a fixed schedule (for latency at half load)."""
    recorder = Recorder("submit unary 0 img, half load")
    cpu0, mark = server.cpu(), await server.stalls_begin()
    async with TellerClient(server.target, *workload.teller_login(0)) as client:
        await workload.upload_standard(client)

        async def op() -> None:
            await client.submit(workload.submit_request())

        await open_loop(op, recorder, rate=rate, duration_s=duration_s, max_count=1_000_000)
    result = recorder.summary()
    result.update(cpu_per_1000(cpu0, server.cpu(), recorder.count, recorder.load_cpu_s))
    result.update(await server.stalls_since(mark))
    result["offered_rate_per_s"] = round(rate, 1)
    return result, recorder
