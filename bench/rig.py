"""The full cycle's moving parts: teller session streams that submit and wait for the
decision, and automated authorizers on AuthorizerService.Session that take offers
(credits) and decide. Everything runs in this process, so the authorizer's decide reply
and the teller's receipt of the update are stamped on one clock."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import defaultdict

from authq.v1 import authorizer_pb2 as apb
from authq.v1 import common_pb2 as cpb

from authorizer_console.client import AuthorizerClient, AuthorizerSessionClient
from bench import workload
from bench.stats import Recorder, now
from teller_client.client import TellerClient, TellerSessionClient

FINAL = {cpb.REQUEST_STATE_APPROVED, cpb.REQUEST_STATE_REJECTED, cpb.REQUEST_STATE_CANCELLED}
CYCLE_TIMEOUT_S = 20.0


class CycleRig:
    def __init__(self, target: str, tellers: int = 4, authorizers: int = 8, credits: int = 16,
                 think_s: float = 0.0) -> None:  # fmt: skip
        self.target = target
        self.n_tellers, self.n_authorizers, self.credits = tellers, authorizers, credits
        self.think_s = think_s
        self.stack = contextlib.AsyncExitStack()
        self.tellers: list[TellerSessionClient] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.pending: set[asyncio.Task[None]] = set()  # decisions under way
        self.turn = itertools.count()
        self.finals: dict[str, asyncio.Future[float]] = {}
        self.acked_at: dict[str, float] = {}
        self.decided_at: dict[str, float] = {}
        self.seen_at: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        """Forgets the figures so far (after a warm-up)."""
        self.ack = Recorder("submit ack")
        self.decision = Recorder("decision")
        self.notify = Recorder("decision-to-teller notification")
        self.cycle = Recorder("cycle")
        self.waits: dict[int, Recorder] = defaultdict(lambda: Recorder("wait"))
        self.decisions = Recorder("decisions")  # completion times of decisions

    async def __aenter__(self) -> CycleRig:
        for i in range(self.n_tellers):
            client = await self.stack.enter_async_context(
                TellerClient(self.target, *workload.teller_login(i))
            )
            if i == 0:
                await workload.upload_standard(client)
            session = await self.stack.enter_async_context(client.session())
            self.tellers.append(session)
            self.tasks.append(asyncio.create_task(self._teller_reader(session)))
        for i in range(self.n_authorizers):
            authorizer = await self.stack.enter_async_context(
                AuthorizerClient(self.target, *workload.authorizer_login(i))
            )
            console = await self.stack.enter_async_context(authorizer.session())
            self.tasks.append(asyncio.create_task(self._authorizer(console)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        everything = [*self.tasks, *self.pending]
        for task in everything:
            task.cancel()
        for task in everything:
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.stack.aclose(), 15.0)

    async def _teller_reader(self, session: TellerSessionClient) -> None:
        while True:
            update = await session.updates.get()
            if update.state not in FINAL:
                continue
            t = now()
            rid = update.request_id
            decided = self.decided_at.pop(rid, None)
            if decided is not None:
                self.notify.add_ms((t - decided) * 1000.0, t)
            else:
                self.seen_at[rid] = t
            future = self.finals.pop(rid, None)
            if future is not None and not future.done():
                future.set_result(t)

    async def _authorizer(self, session: AuthorizerSessionClient) -> None:
        session.credit(self.credits)
        pending = self.pending
        while True:
            offer = await session.offers.get()
            t = now()
            acked = self.acked_at.get(offer.request.request_id)
            if acked is not None:
                self.waits[offer.request.importance].add(acked, t)
            task = asyncio.create_task(self._decide(session, offer))
            pending.add(task)
            task.add_done_callback(pending.discard)

    async def _decide(self, session: AuthorizerSessionClient, offer: apb.Offer) -> None:
        if self.think_s:
            await asyncio.sleep(self.think_s)
        rid = offer.request.request_id
        t0 = now()
        try:
            # The next offer is asked for in the decision's own message.
            await session.decide(rid, offer.lease.fencing_token, "approve", then_credit=1)
        except Exception:
            self.decision.errors += 1
            return
        t1 = now()
        self.decision.add(t0, t1)
        self.decisions.add(t0, t1)
        # Measured from when the decision was sent: it commits somewhere between t0
        # and the reply (t1), and the teller often hears before the reply arrives, so
        # t0 gives an upper bound that includes the decide call's own trip.
        seen = self.seen_at.pop(rid, None)
        if seen is not None:  # the teller heard before the authorizer's reply arrived
            self.notify.add_ms((seen - t0) * 1000.0, t1)
        else:
            self.decided_at[rid] = t0

    async def submit(self, request_business: str = workload.HIGH, urgent: bool = False) -> str:
        """Submits through a teller session; returns the id once acknowledged."""
        session = self.tellers[next(self.turn) % len(self.tellers)]
        request = workload.submit_request(request_business, urgent=urgent)
        rid = str(request.request_id)
        self.finals[rid] = asyncio.get_running_loop().create_future()
        t0 = now()
        await session.submit(request)
        t1 = now()
        self.ack.add(t0, t1)
        self.acked_at[rid] = t1
        return rid

    async def one_cycle(self) -> None:
        """Submit, then wait until the teller sees the decision (the load loop times it
        into ``cycle``)."""
        rid = await self.submit()
        future = self.finals.get(rid)
        if future is not None:
            await asyncio.wait_for(future, CYCLE_TIMEOUT_S)
        self.acked_at.pop(rid, None)
