"""The authorizer console's logic: its state, what each key does, what to show. No
tkinter and no network: the Tk layer feeds it keys and the worker's events, and
sends the commands it returns to the worker.

Phases: CONNECTING (not connected; the worker retries with backoff) -> WAITING (a
credit is out: the next item arrives by itself) or AWAY (no new offers) -> ITEM (an
item is open) -> ACTING (a decision or hand-back is on its way) -> WAITING again.
A decision needs its form completed first: a rejection is impossible without a
reason code (R5), a supplement request without at least one image kind."""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from authq.render import state_name
from PIL import Image

from authorizer_console.catalog import IMAGE_KINDS, REASONS
from authorizer_console.image_view import ImageView
from authorizer_console.item_view import ItemView
from authorizer_console.messages import (
    ActionDone,
    ActionRefused,
    AwayChanged,
    Command,
    Connected,
    Connecting,
    Credit,
    Decide,
    Event,
    ImageFailed,
    ImageReady,
    LeaseLost,
    LoginFailed,
    OfferArrived,
    Release,
    SetAway,
)

REASON_CODES = tuple(code for code, _ in REASONS)
# The states a decision leaves an item in (whoever made it).
DECIDED_STATES = frozenset({"APPROVED", "REJECTED", "NEEDS_SUPPLEMENT"})
LOG_LINES = 50
DEFAULT_VIEWPORT = (900, 640)


class Phase(enum.Enum):
    CONNECTING = "connecting"
    WAITING = "waiting for the next item"
    AWAY = "away"
    ITEM = "item open"
    ACTING = "sending"
    LOGIN_FAILED = "login refused"


class Form(enum.Enum):
    NONE = "none"
    CONFIRM_APPROVE = "approve?"
    REJECT = "reject"
    ASK = "ask for images"


# What each key does, for the help line and the tests. Keys are Tk keysyms, with
# "Shift-" in front when shift is held.
KEYS: dict[str, str] = {
    "a": "approve (then Enter to confirm)",
    "r": "reject: choose a reason, add a note",
    "s": "ask the teller for images: choose kinds, add a note",
    "h": "hand the item back to the queue",
    "w": "away / back",
    "Left": "previous image",
    "Right": "next image",
    "plus": "zoom in",
    "minus": "zoom out",
    "f": "fit",
    "period": "rotate clockwise",
    "comma": "rotate counter-clockwise",
    "Up": "pan up",
    "Down": "pan down",
    "Shift-Left": "pan left",
    "Shift-Right": "pan right",
    "Escape": "close the open form",
}
_ALIASES = {
    "equal": "plus",
    "KP_Add": "plus",
    "KP_Subtract": "minus",
    "0": "f",
    "bracketleft": "Left",
    "bracketright": "Right",
    "A": "a",
    "R": "r",
    "S": "s",
    "H": "h",
    "W": "w",
    "F": "f",
}


@dataclass(frozen=True, slots=True)
class Notice:
    text: str
    level: str = "info"  # info | ok | error


@dataclass
class LoadedImage:
    image: Image.Image
    thumb: Image.Image


@dataclass
class ConsoleState:
    user_id: str = ""
    phase: Phase = Phase.CONNECTING
    connection: str = "connecting..."
    connected: bool = False
    away: bool = False
    credit_out: bool = False
    item: ItemView | None = None
    form: Form = Form.NONE
    notice: Notice = field(default_factory=lambda: Notice("starting"))
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    images: dict[int, LoadedImage] = field(default_factory=dict)
    image_errors: dict[int, str] = field(default_factory=dict)
    current: int = 0
    view: ImageView | None = None
    viewport: tuple[int, int] = DEFAULT_VIEWPORT
    waiting_offers: deque[ItemView] = field(default_factory=deque)
    decided: int = 0

    # -- events from the worker --------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, Connecting):
            self.connected = False
            self.credit_out = False
            self.connection = (
                f"disconnected: {event.reason or 'no answer'}; retrying in {event.retry_in_s:.0f} s"
                if event.retry_in_s > 0
                else f"connecting (attempt {event.attempt})..."
            )
            if self.phase is not Phase.ITEM and self.phase is not Phase.ACTING:
                self.phase = Phase.CONNECTING
            return []
        if isinstance(event, Connected):
            self.user_id = event.user_id
            self.connected = True
            self.connection = f"connected as {event.user_id}"
            if self.item is None:
                self.phase = Phase.AWAY if self.away else Phase.WAITING
            return self._credit()
        if isinstance(event, LoginFailed):
            self.connected = False
            self.phase = Phase.LOGIN_FAILED
            self.connection = "login refused"
            self.notice = Notice(event.message, "error")
            return []
        if isinstance(event, OfferArrived):
            self.credit_out = False
            item = ItemView.from_offer(event.offer)
            if self.item is None:
                self._open(item)
            else:
                self.waiting_offers.append(item)
            return []
        if isinstance(event, ImageReady):
            if self.item is not None and event.request_id == self.item.request_id:
                self.images[event.index] = LoadedImage(event.image, event.thumb)
                if event.index == self.current:
                    self._show_current()
            return []
        if isinstance(event, ImageFailed):
            if self.item is not None and event.request_id == self.item.request_id:
                self.image_errors[event.index] = event.message
            return []
        if isinstance(event, LeaseLost):
            if self.item is not None and event.request_id == self.item.request_id:
                text = lost_text(event)
                self._close(Notice(text, "error"))
                self._log(text)
                return self._credit()
            return []
        if isinstance(event, AwayChanged):
            self.away = event.away
            self.notice = Notice("away: no new items" if event.away else "back: items resume")
            if self.item is None and self.connected:
                self.phase = Phase.AWAY if event.away else Phase.WAITING
            return []
        if isinstance(event, ActionDone):
            return self._done(event)
        if isinstance(event, ActionRefused):
            return self._refused(event)
        return []

    def _done(self, event: ActionDone) -> list[Command]:
        if event.action not in ("decide", "release"):
            self.notice = Notice(event.text, "ok")
            return []
        update = event.update
        state = state_name(update.state) if update is not None else "done"
        text = f"{event.target}: {event.text or state}"
        self._log(text)
        if self.item is not None and self.item.request_id == event.target:
            if event.action == "decide":
                self.decided += 1
            self._close(Notice(text, "ok"))
        return self._credit()

    def _refused(self, event: ActionRefused) -> list[Command]:
        text = f"refused ({event.code}): {event.message}"
        self._log(f"{event.target} {event.action} {text}")
        if event.action not in ("decide", "release"):
            self.notice = Notice(text, "error")
            return []
        if self.item is None or self.item.request_id != event.target:
            self.notice = Notice(text, "error")
            return []
        if event.code == "ABORTED":
            # The lease is gone (lapsed, or a stale token): the item is not ours.
            self._close(Notice(text, "error"))
            return self._credit()
        self.phase = Phase.ITEM
        self.notice = Notice(text, "error")
        return []

    # -- keys --------------------------------------------------------------------

    def key(self, name: str) -> list[Command]:
        """A key pressed on the item screen (not inside a form's text field)."""
        name = _ALIASES.get(name, name)
        if name == "Escape":
            self.form = Form.NONE
            return []
        if name == "w":
            if not self.connected:
                self.notice = Notice("not connected: away/back needs the server", "error")
                return []
            return [SetAway(not self.away)]
        if self._view_key(name):
            return []
        if self.item is None or self.phase is not Phase.ITEM:
            return []
        if self.form is Form.CONFIRM_APPROVE:
            if name == "Return":
                return self._decide(
                    Decide(self.item.request_id, self.item.fencing_token, "approve")
                )
            self.form = Form.NONE
        if name == "a":
            self.form = Form.CONFIRM_APPROVE
            self.notice = Notice("approve this item? Enter to confirm, Esc to go back")
        elif name == "r":
            self.form = Form.REJECT
        elif name == "s":
            self.form = Form.ASK
        elif name == "h":
            self.phase = Phase.ACTING
            self.notice = Notice("handing back...")
            return [Release(self.item.request_id, self.item.fencing_token, "handed back")]
        return []

    def _view_key(self, name: str) -> bool:
        view = self.view
        if name in ("Left", "Right"):
            if self.item is not None and self.item.images:
                step = 1 if name == "Right" else -1
                self.current = (self.current + step) % len(self.item.images)
                self._show_current()
            return True
        actions = {
            "plus": lambda v: v.zoom_in(),
            "minus": lambda v: v.zoom_out(),
            "f": lambda v: v.fit(),
            "period": lambda v: v.rotate(True),
            "comma": lambda v: v.rotate(False),
            "Up": lambda v: v.pan_step(0, -1),
            "Down": lambda v: v.pan_step(0, 1),
            "Shift-Left": lambda v: v.pan_step(-1, 0),
            "Shift-Right": lambda v: v.pan_step(1, 0),
        }
        action = actions.get(name)
        if action is None:
            return False
        if view is not None:
            action(view)
        return True

    def select_image(self, index: int) -> None:
        if self.item is not None and 0 <= index < len(self.item.images):
            self.current = index
            self._show_current()

    def resize(self, viewport: tuple[int, int]) -> None:
        self.viewport = viewport
        if self.view is not None:
            self.view.resize(viewport)

    # -- forms -------------------------------------------------------------------

    def submit_reject(self, reason_code: str, note: str) -> list[Command]:
        """The reject form's Enter. Refused here, before the network, when there is
        no reason (R5) or OTHER comes without a note."""
        if self.item is None or self.phase is not Phase.ITEM:
            return []
        note = note.strip()
        if reason_code not in REASON_CODES:
            self.notice = Notice("choose a reason: a rejection always has one (R5)", "error")
            return []
        if reason_code == "OTHER" and not note:
            self.notice = Notice("reason OTHER needs a note that explains it", "error")
            return []
        return self._decide(
            Decide(self.item.request_id, self.item.fencing_token, "reject", reason_code, note)
        )

    def submit_ask(self, kinds: list[str] | tuple[str, ...], note: str) -> list[Command]:
        if self.item is None or self.phase is not Phase.ITEM:
            return []
        chosen = tuple(kind for kind in IMAGE_KINDS if kind in set(kinds))
        if not chosen:
            self.notice = Notice("choose at least one image kind to ask for", "error")
            return []
        return self._decide(
            Decide(
                self.item.request_id,
                self.item.fencing_token,
                "ask",
                note=note.strip(),
                kinds=chosen,
            )
        )

    # -- helpers -----------------------------------------------------------------

    def _decide(self, command: Decide) -> list[Command]:
        self.form = Form.NONE
        self.phase = Phase.ACTING
        self.notice = Notice(f"sending {command.outcome}...")
        return [command]

    def _credit(self) -> list[Command]:
        if not self.connected or self.credit_out or self.item is not None:
            return []
        if self.waiting_offers:
            self._open(self.waiting_offers.popleft())
            return []
        self.credit_out = True
        return [Credit()]

    def _open(self, item: ItemView) -> None:
        self.item = item
        self.phase = Phase.ITEM
        self.form = Form.NONE
        self.images.clear()
        self.image_errors.clear()
        self.current = 0
        self.view = None
        self.notice = Notice(f"new item {item.request_id}: {item.title}, {item.amount}")

    def _close(self, notice: Notice) -> None:
        self.item = None
        self.view = None
        self.form = Form.NONE
        self.images.clear()
        self.image_errors.clear()
        self.notice = notice
        if self.waiting_offers:
            self._open(self.waiting_offers.popleft())
        elif not self.connected:
            self.phase = Phase.CONNECTING
        else:
            self.phase = Phase.AWAY if self.away else Phase.WAITING

    def _show_current(self) -> None:
        loaded = self.images.get(self.current)
        self.view = ImageView(loaded.image, self.viewport) if loaded is not None else None

    def _log(self, line: str) -> None:
        self.log.appendleft(line)

    # -- what to show ------------------------------------------------------------

    def status_line(self) -> str:
        parts = [self.connection, self.phase.value]
        if self.away and self.phase is not Phase.AWAY:
            parts.append("away after this item")
        parts.append(f"decided {self.decided}")
        return "  |  ".join(parts)

    def image_caption(self) -> str:
        if self.item is None or not self.item.images:
            return ""
        slot = self.item.images[self.current]
        where = f"{self.current + 1}/{len(self.item.images)}  {slot.label}"
        if self.current in self.image_errors:
            return f"{where}: {self.image_errors[self.current]}"
        if self.view is None:
            return f"{where}: loading..."
        state = self.view.state
        return f"{where}  zoom {state.zoom * 100:.0f}%  rotated {state.rotation}°"


def lost_text(event: LeaseLost) -> str:
    """Why an item left the authorizer's hands, as the notice says it."""
    cause = event.cause
    if cause is None and event.state in DECIDED_STATES:
        return f"{event.request_id}: no longer held: decided: {event.state}"
    if cause is None and event.state not in ("", "QUEUED"):
        return f"{event.request_id}: no longer held: now {event.state}"
    if cause is None:
        return f"{event.request_id}: lease lost, back in the queue"
    text = f"{event.request_id}: no longer yours: {cause.event} by {cause.actor}"
    text += f", now {state_name(cause.state)}"
    return f"{text}: {cause.note}" if cause.note else text
