"""authq-sim: a live center for demos. Simulated tellers at several branches submit
requests with synthetic captures after realistic think times, answer supplement
requests, and (with --authorizers N) simulated authorizers work the queue with a
realistic mix: approve most, reject some with a reason, ask for images sometimes.

Bounded by --duration seconds and/or --count submissions; prints progress every few
seconds and a summary at the end (--json for a machine-readable one)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from authq.channel import DEFAULT_TARGET, ClientTLS, SessionCallError
from authq.login import add_tls_arguments
from authq.render import kind_name
from authq.v1 import common_pb2 as cpb

from authorizer_console.client import AuthorizerClient, AuthorizerSessionClient
from teller_client import synthetic
from teller_client.client import TellerClient, new_request

DEMO_PASSWORD = "authq-demo-pass"
# The accounts `authq-server --demo` seeds: two tellers at each of branch-1..4.
DEMO_TELLERS = tuple(f"teller-{n}" for n in range(1, 9))
STANDARD = ("ID_FRONT", "ID_BACK", "VOUCHER")
# (business type, weight, required images, typical amount in CNY) for direct-central
# business under the on-site review threshold.
MIX: tuple[tuple[str, int, tuple[str, ...], int], ...] = (
    ("CASH_WITHDRAWAL", 30, STANDARD, 20_000),
    ("CASH_DEPOSIT", 25, STANDARD, 30_000),
    ("CASH_TO_ACCOUNT_TRANSFER", 10, STANDARD, 50_000),
    ("REMITTANCE", 12, STANDARD, 80_000),
    ("ACCOUNT_OPEN", 8, (*STANDARD, "CUSTOMER_PHOTO"), 1_000),
    ("ACCOUNT_CLOSE", 5, STANDARD, 5_000),
    ("WEALTH_PURCHASE", 6, STANDARD, 100_000),
    ("CARD_CASH_ADVANCE", 4, STANDARD, 3_000),
)
REJECT_REASONS = ("ID_MISMATCH", "SIGNATURE_MISMATCH", "AMOUNT_MISMATCH", "DOCUMENT_MISSING")
SURNAMES = ("Zhang", "Wang", "Li", "Zhao", "Chen", "Liu", "Yang", "Huang", "Zhou", "Wu")
GIVEN = ("Wei", "Fang", "Na", "Min", "Jing", "Lei", "Yang", "Jun", "Tao", "Ming")


@dataclass
class Options:
    target: str = DEFAULT_TARGET
    password: str = DEMO_PASSWORD
    tellers: tuple[str, ...] = DEMO_TELLERS
    authorizers: tuple[str, ...] = ()
    duration_s: float | None = None
    count: int | None = None
    # Mean seconds a teller needs per request (keying, capture) and an authorizer per
    # item; --speed divides both (a test runs at 100x).
    teller_think_s: float = 20.0
    review_s: float = 6.0
    speed: float = 1.0
    seed: int | None = None
    progress_s: float = 3.0
    tls: ClientTLS | None = None
    quiet: bool = False


@dataclass
class Stats:
    submitted: int = 0
    refused: int = 0
    supplied: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    decisions_by_simulated: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return sum(self.outcomes[s] for s in ("APPROVED", "REJECTED", "CANCELLED"))

    def line(self) -> str:
        o = self.outcomes
        return (
            f"t={time.monotonic() - self.started:5.0f}s  submitted {self.submitted}  "
            f"approved {o['APPROVED']}  rejected {o['REJECTED']}  "
            f"supplements {o['SUPPLEMENT_REQUESTED']} (supplied {self.supplied})  "
            f"refused {self.refused}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "submitted": self.submitted,
            "refused": self.refused,
            "supplied": self.supplied,
            "outcomes": dict(self.outcomes),
            "decisions_by_simulated_authorizers": dict(self.decisions_by_simulated),
            "errors": dict(self.errors),
            "seconds": round(time.monotonic() - self.started, 1),
        }


class Simulation:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.stats = Stats()
        self.stop = asyncio.Event()
        self._images: dict[tuple[str, int], bytes] = {}
        self._open: set[str] = set()
        self._reserved = 0

    def think(self, mean_s: float) -> float:
        """A think time: log-normal around the mean (most are quick, a few long)."""
        value = self.rng.lognormvariate(0, 0.5) * mean_s / 1.13
        return max(0.05, value) / self.options.speed

    def capture(self, kind: str, seed: int) -> bytes:
        key = (kind, seed)
        if key not in self._images:
            self._images[key] = synthetic.image_for_kind(kind, seed=seed)
        return self._images[key]

    def _budget_left(self) -> bool:
        count = self.options.count
        return not self.stop.is_set() and (count is None or self._reserved < count)

    def _take_slot(self) -> bool:
        """Claims one of the --count submissions (tellers run side by side)."""
        if not self._budget_left():
            return False
        self._reserved += 1
        return True

    async def run(self) -> Stats:
        tasks = [asyncio.create_task(self._teller(name)) for name in self.options.tellers]
        tasks += [asyncio.create_task(self._authorizer(name)) for name in self.options.authorizers]
        tasks.append(asyncio.create_task(self._progress()))
        try:
            if self.options.duration_s is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.options.duration_s):
                        await self._until_done()
            else:
                await self._until_done()
        finally:
            self.stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self.stats

    async def _until_done(self) -> None:
        """With a count: until every submission is finished (or the duration ends)."""
        while True:
            await asyncio.sleep(0.05)
            count = self.options.count
            done = count is not None and self.stats.submitted + self.stats.refused >= count
            if done and (not self._open or not self.options.authorizers):
                return

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(self.options.progress_s)
            if not self.options.quiet:
                print(self.stats.line(), flush=True)

    # -- tellers -----------------------------------------------------------------

    async def _teller(self, user: str) -> None:
        async with TellerClient(
            self.options.target, user, self.options.password, tls=self.options.tls
        ) as teller:
            while self._budget_left():
                await asyncio.sleep(self.think(self.options.teller_think_s))
                if self._take_slot():
                    await self._submit_one(teller)
            # Still at the counter: its requests' watches and supplies use the channel.
            await self.stop.wait()

    async def _submit_one(self, teller: TellerClient) -> None:
        rng = self.rng
        business, _, kinds, typical = rng.choices(MIX, weights=[m[1] for m in MIX])[0]
        amount_cny = min(480_000, max(100, int(rng.lognormvariate(0, 0.8) * typical)))
        message = new_request(
            business,
            amount_cny * 100 + rng.choice((0, 0, 0, 50)),
            "CNY",
            f"6222{rng.randrange(10**11, 10**12)}",
            f"{rng.choice(SURNAMES)} {rng.choice(GIVEN)}",
            urgent=rng.random() < 0.1,
            request_id=f"sim-{uuid.uuid4()}",
            preparation_seconds=int(self.think(self.options.teller_think_s) * self.options.speed),
        )
        images = [(kind, self.capture(kind, rng.randrange(3))) for kind in kinds]
        try:
            reply = await teller.submit(message, images)
        except grpc.aio.AioRpcError as exc:
            self.stats.refused += 1
            self.stats.errors[f"submit {exc.code().name}: {exc.details()}"[:160]] += 1
            return
        if reply.HasField("fallback"):
            self.stats.refused += 1
            self.stats.errors["emergency: authorize on site"] += 1
            return
        self.stats.submitted += 1
        self._open.add(message.request_id)
        self._spawn_watch(teller, message.request_id)

    def _spawn_watch(self, teller: TellerClient, request_id: str) -> None:
        task = asyncio.create_task(self._watch(teller, request_id))
        task.add_done_callback(lambda _: self._open.discard(request_id))

    async def _watch(self, teller: TellerClient, request_id: str) -> None:
        seen = 0
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for update in teller.watch(request_id):
                if update.version <= seen:
                    continue
                seen = update.version
                if update.event in ("APPROVED", "REJECTED", "SUPPLEMENT_REQUESTED", "CANCELLED"):
                    self.stats.outcomes[update.event] += 1
                if update.state in (cpb.REQUEST_STATE_APPROVED, cpb.REQUEST_STATE_REJECTED,
                                    cpb.REQUEST_STATE_CANCELLED):  # fmt: skip
                    return
                if update.state == cpb.REQUEST_STATE_NEEDS_SUPPLEMENT and not self.stop.is_set():
                    await asyncio.sleep(self.think(self.options.teller_think_s / 2))
                    await self._supply(teller, request_id, update)

    async def _supply(
        self, teller: TellerClient, request_id: str, update: cpb.RequestUpdate
    ) -> None:
        kinds = [kind_name(k) for k in update.requested_kinds] or ["OTHER"]
        images = [(kind, self.capture(kind, 3 + self.rng.randrange(3))) for kind in kinds]
        try:
            await teller.supply(request_id, images, note="recaptured")
        except grpc.aio.AioRpcError as exc:
            self.stats.errors[f"supply {exc.code().name}"] += 1
            return
        self.stats.supplied += 1

    # -- authorizers -------------------------------------------------------------

    async def _authorizer(self, user: str) -> None:
        async with (
            AuthorizerClient(
                self.options.target, user, self.options.password, tls=self.options.tls
            ) as client,
            client.session() as session,
        ):
            session.credit(1)
            while not self.stop.is_set():
                offer = await session.offers.get()
                await asyncio.sleep(self.think(self.options.review_s))
                # Each decision asks for the next offer in its own message.
                await self._decide(session, offer.request, offer.lease.fencing_token)

    async def _decide(
        self, session: AuthorizerSessionClient, view: cpb.RequestView, token: int
    ) -> None:
        asked_before = any(e.event == "SUPPLEMENT_REQUESTED" for e in view.history)
        roll = self.rng.random()
        try:
            if roll < 0.08 and not asked_before:
                kind = self.rng.choice(("CUSTOMER_PHOTO", "VOUCHER", "ID_FRONT"))
                await session.decide(view.request_id, token, "ask", kinds=[kind],
                                     note=f"please recapture: {kind.lower()} unclear",
                                     then_credit=1)  # fmt: skip
                outcome = "ask"
            elif roll < 0.2:
                await session.decide(view.request_id, token, "reject",
                                     reason_code=self.rng.choice(REJECT_REASONS),
                                     then_credit=1)  # fmt: skip
                outcome = "reject"
            else:
                await session.decide(view.request_id, token, "approve", then_credit=1)
                outcome = "approve"
        except SessionCallError as exc:
            self.stats.errors[f"decide {exc.code.name}"] += 1
            return
        self.stats.decisions_by_simulated[outcome] += 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authq-sim",
        description="Simulated branches for demos: tellers submit requests with synthetic "
        "images and answer supplement requests; optional simulated authorizers decide.",
    )
    parser.add_argument(
        "--server", default=os.environ.get("AUTHQ_SERVER", DEFAULT_TARGET), help="host:port"
    )
    parser.add_argument(
        "--password",
        default=os.environ.get("AUTHQ_PASSWORD", DEMO_PASSWORD),
        help="password of every simulated account (default: the --demo one)",
    )
    parser.add_argument(
        "--tellers",
        default=",".join(DEMO_TELLERS),
        help="teller accounts, comma-separated; their branches come from the accounts",
    )
    parser.add_argument(
        "--authorizers", type=int, default=0, help="simulated authorizers (authorizer-1..N)"
    )
    parser.add_argument("--authorizer-prefix", default="authorizer-", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--count", type=int, help="stop after this many submissions")
    parser.add_argument(
        "--think", type=float, default=20.0, help="mean seconds a teller takes per request"
    )
    parser.add_argument(
        "--review", type=float, default=6.0, help="mean seconds a simulated authorizer takes"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="divide all think times by this")
    parser.add_argument("--seed", type=int, help="random seed (repeatable runs)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_tls_arguments(parser)
    return parser


def options_from(args: argparse.Namespace) -> Options:
    if args.duration is None and args.count is None:
        raise ValueError("give --duration SECONDS and/or --count N: a simulation is bounded")
    if args.speed <= 0 or args.think <= 0 or args.review <= 0:
        raise ValueError("--speed, --think and --review must be positive")
    tellers = tuple(t.strip() for t in args.tellers.split(",") if t.strip())
    if not tellers:
        raise ValueError("--tellers: at least one teller account")
    return Options(
        target=args.server,
        password=args.password,
        tellers=tellers,
        authorizers=tuple(f"{args.authorizer_prefix}{i}" for i in range(1, args.authorizers + 1)),
        duration_s=args.duration,
        count=args.count,
        teller_think_s=args.think,
        review_s=args.review,
        speed=args.speed,
        seed=args.seed,
        tls=ClientTLS.from_options(args.tls_ca, args.tls_cert, args.tls_key),
        quiet=args.quiet or args.json,
    )


async def simulate(options: Options) -> Stats:
    return await Simulation(options).run()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = options_from(args)
    except ValueError as exc:
        print(f"authq-sim: {exc}", file=sys.stderr)
        return 2
    if not options.quiet:
        print(
            f"simulating {len(options.tellers)} tellers and {len(options.authorizers)} "
            f"authorizers against {options.target}",
            flush=True,
        )
    try:
        stats = asyncio.run(simulate(options))
    except KeyboardInterrupt:
        return 130
    except grpc.aio.AioRpcError as exc:
        print(f"authq-sim: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(stats.as_dict(), sort_keys=True))
    else:
        print("done: " + stats.line(), flush=True)
        for error, count in stats.errors.most_common(5):
            print(f"  {count} x {error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
