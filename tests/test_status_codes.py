"""Every domain error has a precise status: none is answered as an internal error
(which would also log it as a fault of the server)."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re

import grpc
import pytest
from authq.refusals import DETAILS_KEY, DOMAIN
from google.rpc.error_details_pb2 import ErrorInfo
from google.rpc.status_pb2 import Status

import server
from server import errors
from server.api.status import refused, status_of


def _all_subclasses(cls: type[errors.AuthqError]) -> list[type[errors.AuthqError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def _every_domain_error() -> list[type[errors.AuthqError]]:
    # Subclasses live beside their modules too (server/store/moves.py): import them all.
    for module in pkgutil.walk_packages(server.__path__, "server."):
        importlib.import_module(module.name)
    return _all_subclasses(errors.AuthqError)


@pytest.mark.parametrize("cls", _every_domain_error(), ids=lambda cls: cls.__qualname__)
def test_no_domain_error_is_answered_as_internal(
    cls: type[errors.AuthqError], caplog: pytest.LogCaptureFixture
) -> None:
    # Built without its own __init__, which may need domain objects: only the class
    # and the message matter to status_of.
    exc = cls.__new__(cls)
    Exception.__init__(exc, "what went wrong")
    with caplog.at_level(logging.ERROR, logger="server.api.status"):
        code, message = status_of(exc)
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), cls
    assert message == "what went wrong"
    assert caplog.records == []


def test_an_emergency_refusal_is_a_failed_precondition() -> None:
    code, message = status_of(errors.OnsiteFallbackRequired("em-1"))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "em-1" in message


@pytest.mark.parametrize("cls", _every_domain_error(), ids=lambda cls: cls.__qualname__)
def test_every_domain_error_has_a_reason_in_a_status_of_its_own_code(
    cls: type[errors.AuthqError],
) -> None:
    """The trailer a caller gets: a google.rpc.Status of the same code and message,
    with an ErrorInfo naming the class's stable reason."""
    assert re.fullmatch(r"[A-Z][A-Z_]*[A-Z]", cls.reason), cls
    exc = cls.__new__(cls)
    Exception.__init__(exc, "what went wrong")
    code, message, refusal = refused(exc)
    key, packed = refusal.trailer(code, message)
    assert key == DETAILS_KEY
    status = Status.FromString(packed)
    assert (status.code, status.message) == (code.value[0], "what went wrong")
    info = ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.domain, info.reason) == (DOMAIN, cls.reason)
