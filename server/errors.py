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
    ├── PermissionDenied       the caller may not do this (PERMISSION_DENIED)
    ├── Unauthenticated        no identity (UNAUTHENTICATED)
    └── Unavailable            the store cannot be reached (UNAVAILABLE)
"""

from __future__ import annotations


class AuthqError(Exception):
    """Base of every error the server reports to a caller."""


class InvalidArgument(AuthqError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(AuthqError):
    pass


class AlreadyExists(AuthqError):
    pass


class FailedPrecondition(AuthqError):
    pass


class IllegalTransition(FailedPrecondition):
    def __init__(self, request_id: str, state: str, action: str, rule: str = "") -> None:
        message = f"cannot {action} request {request_id}: it is {state}"
        super().__init__(f"{message} ({rule})" if rule else message)
        self.state = state


class AuthorizerAway(FailedPrecondition):
    """The authorizer set itself away: no new items until it is back."""

    def __init__(self, authorizer_id: str) -> None:
        super().__init__(f"{authorizer_id} is away: no new items until back")


class OnsiteFallbackRequired(AuthqError):
    """An emergency is in force for the branch (R8): the center takes nothing new.
    Not an error for the caller: Submit answers with an OnsiteFallback."""

    def __init__(self, emergency_id: str) -> None:
        super().__init__(f"emergency {emergency_id} is in force: authorize on site (R8)")
        self.emergency_id = emergency_id


class LeaseLost(AuthqError):
    pass


class PermissionDenied(AuthqError):
    pass


class Unauthenticated(AuthqError):
    pass


class Unavailable(AuthqError):
    pass
