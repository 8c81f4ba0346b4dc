"""The supervisor view's logic: the latest pushed snapshot turned into rows to show,
the series the charts draw, and the commands its buttons send (checked here first, so
an empty reason never leaves the console). No tkinter."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from authq.render import format_money
from authq.v1 import common_pb2 as cpb
from authq.v1 import supervisor_pb2 as spb

from authorizer_console.catalog import business_name
from authorizer_console.item_view import duration
from authorizer_console.messages import (
    ActionDone,
    ActionRefused,
    Command,
    ConfirmMove,
    Connected,
    Connecting,
    DeclareEmergency,
    EndEmergency,
    Event,
    LoginFailed,
    RequestMove,
    SetAccountEnabled,
    SnapshotArrived,
)

# Live points kept for the wait-over-time chart (one per snapshot).
POINTS_KEPT = 600


@dataclass(frozen=True, slots=True)
class WaitPoint:
    at_ms: int
    oldest_wait_ms: int
    p50_ms: int
    waiting: int


@dataclass
class SupervisorState:
    user_id: str = ""
    connected: bool = False
    connection: str = "connecting..."
    snapshot: spb.QueueSnapshot | None = None
    points: deque[WaitPoint] = field(default_factory=lambda: deque(maxlen=POINTS_KEPT))
    notice: str = ""
    notice_level: str = "info"

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, Connecting):
            self.connected = False
            self.connection = (
                f"disconnected: {event.reason or 'no answer'}; retrying in {event.retry_in_s:.0f} s"
                if event.retry_in_s > 0
                else f"connecting (attempt {event.attempt})..."
            )
        elif isinstance(event, Connected):
            self.user_id = event.user_id
            self.connected = True
            self.connection = f"connected as {event.user_id} (live)"
        elif isinstance(event, LoginFailed):
            self.connected = False
            self.connection = "login refused"
            self._say(event.message, "error")
        elif isinstance(event, SnapshotArrived):
            self.snapshot = event.snapshot
            overview = event.snapshot.overview
            self.points.append(
                WaitPoint(
                    overview.at_ms,
                    overview.oldest_wait_ms,
                    event.snapshot.wait_p50_ms,
                    overview.waiting,
                )
            )
        elif isinstance(event, ActionDone):
            self._say(event.text, "ok")
        elif isinstance(event, ActionRefused):
            self._say(f"{event.action} refused ({event.code}): {event.message}", "error")
        return []

    def _say(self, text: str, level: str = "info") -> None:
        self.notice, self.notice_level = text, level

    # -- commands ----------------------------------------------------------------

    def request_move(self, request_id: str, reason: str) -> list[Command]:
        if not request_id:
            self._say("select a waiting request to move up", "error")
            return []
        if not reason.strip():
            self._say("a move needs a reason (R6)", "error")
            return []
        return [RequestMove(request_id, reason.strip())]

    def confirm_move(self, request_id: str) -> list[Command]:
        if not request_id:
            self._say("select a pending move to confirm", "error")
            return []
        return [ConfirmMove(request_id)]

    def declare_emergency(self, reason: str, branches: str) -> list[Command]:
        if not reason.strip():
            self._say("an emergency needs a reason (R8)", "error")
            return []
        ids = tuple(b.strip() for b in branches.replace(";", ",").split(",") if b.strip())
        return [DeclareEmergency(reason.strip(), ids)]

    def end_emergency(self, emergency_id: str, note: str = "") -> list[Command]:
        if not emergency_id:
            self._say("select an emergency to end", "error")
            return []
        return [EndEmergency(emergency_id, note.strip())]

    def set_enabled(self, user_id: str, enabled: bool, reason: str) -> list[Command]:
        if not user_id.strip():
            self._say("enter the authorizer's account id", "error")
            return []
        if not enabled and not reason.strip():
            self._say("disabling an account needs a reason (R12)", "error")
            return []
        return [SetAccountEnabled(user_id.strip(), enabled, reason.strip())]

    # -- what to show ------------------------------------------------------------

    def summary_lines(self) -> list[str]:
        snap = self.snapshot
        if snap is None:
            return ["waiting for the first snapshot..."]
        o = snap.overview
        lines = [
            f"waiting {o.waiting}   claimed {o.claimed}   needs supplement {o.needs_supplement}",
            f"oldest wait {duration(o.oldest_wait_ms)}"
            + (f" ({o.oldest_request_id})" if o.oldest_request_id else ""),
            f"authorizers active {snap.active_authorizers}   away {snap.away_authorizers}",
            f"decisions in the last minute {snap.decisions_last_minute}",
            f"queue wait p50 {duration(snap.wait_p50_ms)}  p90 {duration(snap.wait_p90_ms)}  "
            f"p99 {duration(snap.wait_p99_ms)}  ({snap.wait_samples} offers, last "
            f"{snap.wait_window_s // 60} min)",
        ]
        return lines

    def class_rows(self) -> list[tuple[str, str, str]]:
        """(class, waiting, oldest wait), most important first."""
        if self.snapshot is None:
            return []
        rows = []
        for depth in sorted(
            self.snapshot.overview.by_class, key=lambda d: (-d.importance, -d.urgency)
        ):
            urgent = " urgent" if depth.urgency == cpb.URGENCY_URGENT else ""
            rows.append(
                (
                    f"importance {depth.importance}{urgent}",
                    str(depth.waiting),
                    duration(depth.oldest_wait_ms) if depth.waiting else "-",
                )
            )
        return rows

    def branch_rows(self) -> list[tuple[str, str]]:
        if self.snapshot is None:
            return []
        return [(b.branch_id, str(b.waiting)) for b in self.snapshot.overview.by_branch]

    def authorizer_rows(self) -> list[tuple[str, str]]:
        if self.snapshot is None:
            return []
        rows = []
        for a in self.snapshot.authorizers:
            what = []
            if a.away:
                what.append("away")
            if a.holding:
                what.append(f"holding {a.holding}")
            if a.waiting:
                what.append("waiting for work")
            rows.append((a.authorizer_id, ", ".join(what) or "-"))
        return rows

    def waiting_rows(self) -> list[tuple[str, ...]]:
        """(position, request id, business, amount, branch, waited, class)."""
        if self.snapshot is None:
            return []
        pending = {m.request_id for m in self.snapshot.pending_moves}
        rows: list[tuple[str, ...]] = []
        for item in self.snapshot.waiting_list:
            amount = format_money(item.amount) if item.HasField("amount") else "-"
            names = business_name(item.business_type)
            urgent = "U" if item.urgency == cpb.URGENCY_URGENT else ""
            rows.append(
                (
                    str(item.position + 1),
                    item.request_id + (" (move pending)" if item.request_id in pending else ""),
                    names.zh or item.business_type,
                    amount,
                    item.branch_id,
                    duration(item.wait_ms),
                    f"{item.importance}{urgent}",
                )
            )
        return rows

    def move_rows(self) -> list[tuple[str, str, str]]:
        if self.snapshot is None:
            return []
        return [(m.request_id, m.requester, m.reason) for m in self.snapshot.pending_moves]

    def emergency_rows(self) -> list[tuple[str, str, str]]:
        if self.snapshot is None:
            return []
        return [
            (e.emergency_id, ",".join(e.branch_ids) or "center-wide", e.reason)
            for e in self.snapshot.emergencies
        ]

    def decisions_series(self) -> list[int]:
        return [m.decisions for m in self.snapshot.minutes] if self.snapshot else []

    def wait_series(self) -> list[tuple[int, int]]:
        """(minute p50, minute max) queue waits, oldest first."""
        if self.snapshot is None:
            return []
        return [(m.wait_p50_ms, m.wait_max_ms) for m in self.snapshot.minutes]
