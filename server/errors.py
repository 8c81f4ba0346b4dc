"""The one exception tree of the server. Each class maps to one gRPC status in
server/api/status.py; the message names the field or rule at fault.

    AuthqError
    ├── InvalidArgument        a field is missing or malformed (INVALID_ARGUMENT)
    ├── NotFound               no such request or image (NOT_FOUND)
    ├── AlreadyExists          request id reused with other content (ALREADY_EXISTS)
    ├── FailedPrecondition     a precondition failed (FAILED_PRECONDITION)
    │   ├── IllegalTransition  the request's state forbids the action
    │   └── AuthorizerAway     the authorizer set itself away
    ├── OnsiteFallbackRequired an emergency is in force (FAILED_PRECONDITION; Submit
    │                          answers it with an OnsiteFallback instead)
    ├── LeaseLost              not the holder, or a stale fencing token (ABORTED)
    ├── AccountChanged         the caller's rights changed during a long call (ABORTED)
    ├── PermissionDenied       the caller may not do this (PERMISSION_DENIED)
    ├── Unauthenticated        no identity (UNAUTHENTICATED)
    │   └── AccountInactive    disabled or deregistered during a long call
    └── Unavailable            the store cannot be reached (UNAVAILABLE)

Besides its message (for people), each error has a ``reason`` (for programs): a stable
UPPER_SNAKE_CASE word, the class's own unless the raise site names a more precise one,
and ``metadata``, the facts a client acts on. Both reach the caller as a
google.rpc.ErrorInfo (server/api/status.py; the table is in README.md, "Refusals").
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


class AuthqError(Exception):
    """Base of every error the server reports to a caller."""

    # Not ClassVars: a raise site may name a more precise reason for its instance. The
    # defaults serve an instance made without __init__ (a subclass's own, or a test's).
    reason: str = "INTERNAL"
    metadata: Mapping[str, str] = MappingProxyType({})

    def __init__(self, message: str, *, reason: str = "", **metadata: str | int) -> None:
        super().__init__(message)
        if reason:
            self.reason = reason
        self.metadata = {key: str(value) for key, value in metadata.items()}


class InvalidArgument(AuthqError):
    reason = "INVALID_FIELD"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", field=field)
        self.field = field


class NotFound(AuthqError):
    reason = "NOT_FOUND"


class AlreadyExists(AuthqError):
    reason = "ALREADY_EXISTS"


class FailedPrecondition(AuthqError):
    reason = "FAILED_PRECONDITION"


class IllegalTransition(FailedPrecondition):
    reason = "ILLEGAL_TRANSITION"

    def __init__(self, request_id: str, state: str, action: str, rule: str = "") -> None:
        message = f"cannot {action} request {request_id}: it is {state}"
        facts = {"request_id": request_id, "state": state, "action": action}
        if rule:
            facts["rule"] = rule
        super().__init__(f"{message} ({rule})" if rule else message, **facts)
        self.state = state


class AuthorizerAway(FailedPrecondition):
    """The authorizer set itself away: no new items until it is back."""

    reason = "AUTHORIZER_AWAY"

    def __init__(self, authorizer_id: str) -> None:
        super().__init__(
            f"{authorizer_id} is away: no new items until back", authorizer_id=authorizer_id
        )


class OnsiteFallbackRequired(AuthqError):
    """An emergency is in force for the branch (R8): the center takes nothing new.
    Not an error for the caller: Submit answers with an OnsiteFallback."""

    reason = "EMERGENCY_IN_FORCE"

    def __init__(self, emergency_id: str) -> None:
        super().__init__(
            f"emergency {emergency_id} is in force: authorize on site (R8)",
            emergency_id=emergency_id,
        )
        self.emergency_id = emergency_id


class LeaseLost(AuthqError):
    """Raise sites name which of LEASE_HELD_BY_OTHER, LEASE_EXPIRED and
    STALE_FENCING_TOKEN it is (server/store/queue_store.py)."""

    reason = "LEASE_LOST"


class AccountChanged(AuthqError):
    """The caller's roles, qualification or branch changed while a long call (a
    session, a watch, a waiting Next) was open: it ran under the rights it began with,
    so it ends; opened again, it runs under the new ones (R13)."""

    reason = "ACCOUNT_CHANGED"

    def __init__(self, user_id: str) -> None:
        super().__init__(
            f"{user_id}'s roles, qualification or branch changed: this call was ended; "
            "open it again to work under the new ones (R13)",
            user_id=user_id,
        )


class PermissionDenied(AuthqError):
    reason = "PERMISSION_DENIED"


class Unauthenticated(AuthqError):
    reason = "UNAUTHENTICATED"


class AccountInactive(Unauthenticated):
    """The account was disabled or deregistered (R12) while its call waited for work:
    nothing was taken for it."""

    reason = "TOKEN_INVALID"

    def __init__(self, user_id: str) -> None:
        super().__init__(
            f"{user_id} is disabled or deregistered: nothing is handed to it (R12)",
            user_id=user_id,
        )


class Unavailable(AuthqError):
    reason = "UNAVAILABLE"
