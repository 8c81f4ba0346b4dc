"""The teller workstation's client library (and the ``authq-teller`` command)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from authq.exits import launch

if TYPE_CHECKING:
    from teller_client.client import TellerClient, TellerSessionClient, new_request

__all__ = ["TellerClient", "TellerSessionClient", "new_request"]


def main() -> int:
    """The ``authq-teller`` console script (teller_client/cli.py)."""
    return launch("teller_client.cli", "authq-teller")


def __getattr__(name: str) -> Any:
    # Loaded on first use, not on import: authq-teller's first import is this package,
    # and it must reach its own code (which turns Ctrl-C into one line) before grpc
    # and protobuf take their tenth of a second.
    if name in __all__:
        return getattr(importlib.import_module("teller_client.client"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
