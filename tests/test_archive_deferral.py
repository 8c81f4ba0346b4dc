"""Archiving waits while the center is busy, for a bounded time (server/archive/
deferral.py): the decision on a controlled clock, then the archiver holding a round
and resuming."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import pytest

from server.archive import archiver as archiver_module
from server.archive.deferral import MIN_WINDOW_S, Deferral
from server.background import BackgroundLoop
from server.settings import Settings, SettingsError
from tests.conftest import StartServer
from tests.helpers import until
from tests.test_archive import FAST, archived, decided


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _window(deferral: Deferral, clock: Clock, events: int, seconds: float = 1.0) -> bool:
    for _ in range(events):
        deferral.saw_event()
    clock.now += seconds
    return deferral.holds()


def test_it_holds_while_the_rate_is_at_the_threshold_or_above() -> None:
    clock = Clock()
    deferral = Deferral(busy_events_per_s=100, max_defer_s=60, clock=clock)
    assert not deferral.holds()  # nothing measured yet
    assert not _window(deferral, clock, 99)
    assert _window(deferral, clock, 100)
    assert deferral.rate == 100
    assert _window(deferral, clock, 500)
    assert not _window(deferral, clock, 10)  # quiet again


def test_it_holds_for_at_most_the_longest_deferral_then_until_quiet_not_again() -> None:
    clock = Clock()
    deferral = Deferral(busy_events_per_s=100, max_defer_s=5, clock=clock)
    deferral.holds()
    held = [_window(deferral, clock, 200) for _ in range(8)]
    assert held == [True] * 4 + [False] * 4  # busy since t=100: held until t=105
    assert not _window(deferral, clock, 0)
    # A new busy spell after a quiet window is held again.
    assert _window(deferral, clock, 200)


def test_a_short_window_keeps_the_last_answer_and_its_events_count_next() -> None:
    clock = Clock()
    deferral = Deferral(busy_events_per_s=100, max_defer_s=60, clock=clock)
    deferral.holds()
    assert not _window(deferral, clock, 0)
    # 60 events in a tenth of a second is 600/s, but too short a window to decide on.
    assert not _window(deferral, clock, 60, seconds=MIN_WINDOW_S / 5)
    # The window goes on: 120 events in 0.6 s.
    assert _window(deferral, clock, 60, seconds=MIN_WINDOW_S)
    assert _window(deferral, clock, 0, seconds=MIN_WINDOW_S / 5)
    clock.now += 1.0
    assert not deferral.holds()


def test_zero_turns_it_off() -> None:
    clock = Clock()
    for deferral in (
        Deferral(busy_events_per_s=0, max_defer_s=60, clock=clock),
        Deferral(busy_events_per_s=100, max_defer_s=0, clock=clock),
    ):
        deferral.holds()
        assert not _window(deferral, clock, 10_000)


def test_the_settings_refuse_negative_values() -> None:
    for key in ("archive_defer_events_per_s", "archive_defer_max_s"):
        with pytest.raises(SettingsError, match=key):
            Settings.load(overrides={key: -1})


class Ticking:
    """A clock that moves a second at each reading: every check is a full window."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@contextlib.asynccontextmanager
async def busy(deferral: Deferral) -> AsyncIterator[None]:
    """Events keep arriving (10 a second) until the block ends."""

    async def feed() -> None:
        while True:
            deferral.saw_event()
            await asyncio.sleep(0.1)

    task = asyncio.create_task(feed())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_archiver_holds_its_rounds_while_busy_and_archives_once_quiet(
    start_server: StartServer,
) -> None:
    server = await start_server(**FAST, archive_defer_events_per_s=1, archive_defer_max_s=3600)
    archiver = server.runtime.archiver
    assert archiver is not None
    # The settings reach the archiver; the test then drives its clock.
    assert (archiver.deferral.busy_events_per_s, archiver.deferral.max_defer_s) == (1, 3600)
    deferral = archiver.deferral = Deferral(1, 3600, clock=Ticking())
    async with busy(deferral):
        await until(lambda: deferral.holding)
        rid = await decided(server)
        await asyncio.sleep(2.0)  # two checks, each busy: nothing archived
        assert await server.runtime.archive_index.marker(rid) is None
    # The feed stopped; the request's own events are the last: a window without any
    # comes next, and the round runs.
    marker = await archived(server.runtime, rid)
    assert marker.state == "APPROVED"


class BusyTicking(Ticking):
    """Every window it closes saw an event: the center is busy all along, however
    close together the archiver's checks come (a feed on a timer leaves a window
    empty when two checks fall between its events, and a quiet window starts the
    hold afresh)."""

    def __init__(self) -> None:
        super().__init__()
        self.deferral: Deferral | None = None

    def __call__(self) -> float:
        if self.deferral is not None:
            self.deferral.saw_event()
        return super().__call__()


@dataclasses.dataclass
class Answers(Deferral):
    """Keeps what each holds() answered."""

    answers: list[bool] = dataclasses.field(default_factory=list)

    def holds(self) -> bool:
        self.answers.append(super().holds())
        return self.answers[-1]


async def test_past_the_longest_hold_the_archiver_archives_while_still_busy(
    start_server: StartServer,
) -> None:
    server = await start_server(**FAST)
    archiver = server.runtime.archiver
    assert archiver is not None
    clock = BusyTicking()
    deferral = archiver.deferral = Answers(1, 2, clock=clock)
    clock.deferral = deferral
    await until(lambda: True in deferral.answers)  # it held while busy...
    rid = await decided(server)
    marker = await archived(server.runtime, rid)  # ...then archives, busy still
    assert marker.state == "APPROVED"
    assert deferral.rate >= 1
    assert not deferral.holding


class Scripted(Deferral):
    """Answers holds() from a list, then holds."""

    def __init__(self, answers: list[bool]) -> None:
        super().__init__(busy_events_per_s=1, max_defer_s=60)
        self.answers = answers

    def holds(self) -> bool:
        return self.answers.pop(0) if self.answers else True


async def test_a_catch_up_round_stops_between_batches_when_the_center_turns_busy(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server(**FAST)
    archiver = server.runtime.archiver
    index = server.runtime.archive_index
    assert archiver is not None
    assert index is not None
    await archiver.stop()  # the test runs the rounds itself, on a loop not started
    archiver.loop = BackgroundLoop("archiver")
    monkeypatch.setattr(archiver_module, "BATCH", 2)
    rids = [await decided(server) for _ in range(4)]
    # Quiet for the round's start and its first batch, busy before the second.
    archiver.deferral = Scripted([False, False])
    assert await archiver.archive_pending() == 2
    markers = [await index.marker(rid) for rid in rids]
    assert sum(marker is not None for marker in markers) == 2
    assert await index.backlog() == 2
    # Quiet again: the rest goes.
    archiver.deferral = Scripted([False] * 10)
    assert await archiver.archive_pending() == 2
    assert await index.backlog() == 0
