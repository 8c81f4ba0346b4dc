"""Client side of the wire: opening a channel and saying who is calling."""

from __future__ import annotations

import grpc

from authq.wire import CHANNEL_OPTIONS

USER_KEY = "x-authq-user"
BRANCH_KEY = "x-authq-branch"
DEFAULT_TARGET = "127.0.0.1:50051"


def open_channel(target: str = DEFAULT_TARGET) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def caller_metadata(user_id: str, branch_id: str = "") -> tuple[tuple[str, str], ...]:
    if branch_id:
        return ((USER_KEY, user_id), (BRANCH_KEY, branch_id))
    return ((USER_KEY, user_id),)


class SessionCallError(Exception):
    """A refusal that arrived inside a session stream, with the gRPC status a unary
    call would have got."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_wire(cls, code: int, message: str) -> SessionCallError:
        status = next((s for s in grpc.StatusCode if s.value[0] == code), grpc.StatusCode.UNKNOWN)
        return cls(status, message)
