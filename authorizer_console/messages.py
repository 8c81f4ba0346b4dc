"""What passes between the Tk thread and the network worker: commands go to the
worker, events come back. Plain frozen dataclasses, so both sides and the tests
speak the same small language."""

from __future__ import annotations

from dataclasses import dataclass

from authq.v1 import authorizer_pb2 as apb
from authq.v1 import common_pb2 as cpb
from authq.v1 import supervisor_pb2 as spb
from PIL import Image

# -- commands (Tk -> worker) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credit:
    """I am free: offer me one item."""


@dataclass(frozen=True, slots=True)
class Decide:
    request_id: str
    token: int
    outcome: str  # approve | reject | ask
    reason_code: str = ""
    note: str = ""
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Release:
    request_id: str
    token: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class SetAway:
    away: bool


@dataclass(frozen=True, slots=True)
class RequestMove:
    request_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ConfirmMove:
    request_id: str


@dataclass(frozen=True, slots=True)
class DeclareEmergency:
    reason: str
    branch_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EndEmergency:
    emergency_id: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class SetAccountEnabled:
    user_id: str
    enabled: bool
    reason: str = ""


Command = (
    Credit
    | Decide
    | Release
    | SetAway
    | RequestMove
    | ConfirmMove
    | DeclareEmergency
    | EndEmergency
    | SetAccountEnabled
)

# -- events (worker -> Tk) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connecting:
    """Not connected: trying again in ``retry_in_s`` (0: trying now)."""

    attempt: int
    retry_in_s: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Connected:
    user_id: str
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LoginFailed:
    """Refused for good (wrong password, disabled account): no retry."""

    message: str


@dataclass(frozen=True, slots=True)
class OfferArrived:
    offer: apb.Offer


@dataclass(frozen=True, slots=True)
class LeaseLost:
    request_id: str
    # The change that took the item away, when the server said (a withdrawal, R8).
    cause: cpb.RequestUpdate | None = None
    # The item's state when the center refused to renew its lease for it (e.g.
    # APPROVED: decided meanwhile); "" when it did not say.
    state: str = ""


@dataclass(frozen=True, slots=True)
class ActionDone:
    """``action``: decide, release, away, move, confirm, declare, end, account."""

    action: str
    target: str
    text: str
    update: cpb.RequestUpdate | None = None


@dataclass(frozen=True, slots=True)
class ActionRefused:
    action: str
    target: str
    code: str  # the gRPC status name, e.g. FAILED_PRECONDITION
    message: str


@dataclass(frozen=True, slots=True)
class AwayChanged:
    away: bool


@dataclass(frozen=True, slots=True)
class ImageReady:
    request_id: str
    index: int
    image: Image.Image
    thumb: Image.Image


@dataclass(frozen=True, slots=True)
class ImageFailed:
    request_id: str
    index: int
    message: str


@dataclass(frozen=True, slots=True)
class SnapshotArrived:
    snapshot: spb.QueueSnapshot


Event = (
    Connecting
    | Connected
    | LoginFailed
    | OfferArrived
    | LeaseLost
    | ActionDone
    | ActionRefused
    | AwayChanged
    | ImageReady
    | ImageFailed
    | SnapshotArrived
)
