"""When the archiver holds its rounds: while the center is busy, for a while.

Archiving is work nobody waits for: a request stays readable in Redis for
archive_keep_hot_s (days) and is durable there already. Yet each archiving round
competes with the requests for Redis and for the cores. At 900 full cycles/s on the
bench machine, archiving rounds running alongside the requests doubled the p50 submit
acknowledgement. They also put its p99 at 31-88 ms in five runs. With the rounds
held back, the p99 was 7-35 ms (median 12). So while the event stream runs at
``busy_events_per_s`` or more, the archiver holds its rounds, for at most
``max_defer_s``. Under a longer peak it archives as before, and what it held back
is caught up once the peak passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# The event rate is measured over at least this long, so that a burst between two
# close checks does not decide alone.
MIN_WINDOW_S = 0.5


@dataclass
class Deferral:
    """Counts the events the archiver sees; ``holds()`` says whether to hold the next
    round. ``busy_events_per_s`` 0: never hold."""

    busy_events_per_s: float
    max_defer_s: float
    clock: Callable[[], float] = time.monotonic
    # The last measured rate, for the log.
    rate: float = 0.0
    _events: int = 0
    _window_from: float | None = None
    _busy_since: float | None = None
    _holding: bool = False

    def saw_event(self) -> None:
        self._events += 1

    @property
    def holding(self) -> bool:
        """What the last ``holds()`` answered."""
        return self._holding

    @property
    def enabled(self) -> bool:
        return self.busy_events_per_s > 0 and self.max_defer_s > 0

    def holds(self) -> bool:
        now = self.clock()
        start = self._window_from
        if not self.enabled or start is None:
            self._window_from, self._events = now, 0
            return False
        if now - start < MIN_WINDOW_S:
            return self._holding
        self.rate = self._events / (now - start)
        self._window_from, self._events = now, 0
        if self.rate < self.busy_events_per_s:
            self._busy_since = None
            self._holding = False
        else:
            if self._busy_since is None:
                self._busy_since = start
            # Past the longest hold the rounds run again, until the center is quiet.
            self._holding = now - self._busy_since < self.max_defer_s
        return self._holding
