"""The central authorizer's client library and console (``authq-authorizer``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from authq.exits import launch

if TYPE_CHECKING:
    from authorizer_console.client import AuthorizerClient, AuthorizerSessionClient

__all__ = ["AuthorizerClient", "AuthorizerSessionClient"]


def main() -> int:
    """The ``authq-authorizer`` console script (authorizer_console/cli.py)."""
    return launch("authorizer_console.cli", "authq-authorizer")


def __getattr__(name: str) -> Any:
    # Loaded on first use, not on import: authq-authorizer's first import is this
    # package, and it must reach its own code (which turns Ctrl-C into one line)
    # before grpc and protobuf take their tenth of a second.
    if name in __all__:
        return getattr(importlib.import_module("authorizer_console.client"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
