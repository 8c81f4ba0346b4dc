"""Refusals a program can act on: the standard gRPC rich error model, so that no
client reads the words of a message (they are for people, and may change).

Every status the server ends a call with carries, in the trailing metadata
``grpc-status-details-bin``, a google.rpc.Status with the same code and message whose
details hold a google.rpc.ErrorInfo: ``domain`` "authq", a stable UPPER_SNAKE_CASE
``reason`` and ``metadata``, the facts a client acts on (the table is in README.md,
"Refusals"). A field at fault adds a google.rpc.BadRequest naming it. A refusal inside
a session stream is a SessionError with the same reason and metadata.

The server builds the trailer with ``Refusal.trailer``; clients read it back with
``refusal_of`` (a failed call) or ``session_refusal`` (a SessionError)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc.error_details_pb2 import BadRequest, ErrorInfo
from google.rpc.status_pb2 import Status

from authq.v1 import common_pb2 as cpb

DOMAIN = "authq"
# Where gRPC carries a google.rpc.Status, read by grpc-status helpers in every language.
DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()

    def status(self, code: grpc.StatusCode, message: str) -> Status:
        """The google.rpc.Status of a call ended with ``code`` and ``message``."""
        status = Status(code=code.value[0], message=message)
        info = ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=dict(self.metadata))
        status.details.add().Pack(info)
        if self.violations:
            bad = BadRequest()
            for violation in self.violations:
                bad.field_violations.add(field=violation.field, description=violation.description)
            status.details.add().Pack(bad)
        return status

    def trailer(self, code: grpc.StatusCode, message: str) -> tuple[str, bytes]:
        """The trailing metadata entry that carries this refusal with the status."""
        return DETAILS_KEY, self.status(code, message).SerializeToString()


def refusal_of(exc: grpc.RpcError) -> Refusal | None:
    """The refusal a failed call carries; None when it carries none (a status from
    gRPC itself: a deadline, a connection lost) or one for another status."""
    trailing = getattr(exc, "trailing_metadata", None)
    if trailing is None:
        return None
    packed = _details(trailing() or ())
    if packed is None:
        return None
    status = Status()
    try:
        status.ParseFromString(packed)
    except DecodeError:
        return None
    if status.code != exc.code().value[0]:
        return None
    return _from_status(status)


def reason_of(exc: BaseException) -> str:
    """The reason of the refusal a failed call carries; '' for any other failure."""
    refusal = refusal_of(exc) if isinstance(exc, grpc.RpcError) else None
    return refusal.reason if refusal is not None else ""


def session_refusal(error: cpb.SessionError) -> Refusal | None:
    """The refusal a SessionError carries; None from a server that sent no reason."""
    if not error.reason:
        return None
    return Refusal(error.reason, dict(error.metadata))


def _details(metadata: Iterable[Any]) -> bytes | None:
    for key, value in metadata:
        if key == DETAILS_KEY and isinstance(value, bytes):
            return value
    return None


def _from_status(status: Status) -> Refusal | None:
    info: ErrorInfo | None = None
    violations: list[FieldViolation] = []
    for detail in status.details:
        # Unpack fills the message only when the detail is of its type.
        unpacked, bad = ErrorInfo(), BadRequest()
        if detail.Unpack(unpacked):
            if unpacked.domain == DOMAIN:
                info = unpacked
        elif detail.Unpack(bad):
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    if info is None:
        return None
    return Refusal(info.reason, dict(info.metadata), tuple(violations))


__all__ = [
    "DETAILS_KEY",
    "DOMAIN",
    "FieldViolation",
    "Refusal",
    "refusal_of",
    "session_refusal",
]
