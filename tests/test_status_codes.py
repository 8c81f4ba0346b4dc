"""Every domain error has a precise status: none is answered as an internal error
(which would also log it as a fault of the server)."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import grpc
import pytest

import server
from server import errors
from server.api.status import status_of


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
