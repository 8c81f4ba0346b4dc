"""Counts claims, decisions and lease expiries from the event stream.

Why from the stream: every transition, whichever process ran it (the lease reaper of
any process included), lands on the one Redis stream exactly once, and each process
follows it from start-up. So each process's counters are the *center-wide* totals
since that process started: with several server processes, aggregate them with
``max`` (or look at any one), never ``sum``, which would count each event once per
process. Counting in the acting process instead would need a hook in every place a
transition starts (center, sessions, the reaper) and would still miss nothing only
if every one of them remembered to call it; the stream cannot miss one."""

from __future__ import annotations

from server.domain.records import HistoryEntry
from server.domain.states import Outcome
from server.metrics.registry import ServerMetrics

_OUTCOME_OF_EVENT = {outcome.event: outcome.value for outcome in Outcome}


class EventCounter:
    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def on_event(self, entry: HistoryEntry) -> None:
        """An EventHub listener: called once per stream entry, in stream order."""
        m = self.metrics
        m.events.labels(entry.event).inc()
        if entry.event == "CLAIMED":
            m.claims.inc()
        elif entry.event == "LEASE_EXPIRED":
            m.lease_expiries.inc()
        else:
            outcome = _OUTCOME_OF_EVENT.get(entry.event)
            if outcome is not None:
                m.decisions.labels(outcome).inc()
