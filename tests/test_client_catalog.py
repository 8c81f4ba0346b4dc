"""The center's codes that the clients offer without asking it (authq.catalog): the
business types of the shipped catalog and what an on-site reviewer may check, read
by the teller's command line without the authorizer's console."""

from __future__ import annotations

import subprocess
import sys

from authq import catalog

import authorizer_console.catalog
from server.policy.loader import DEFAULT_POLICY, load_policy


def test_the_clients_name_the_business_types_of_the_shipped_catalog() -> None:
    shipped = load_policy(DEFAULT_POLICY).default.businesses
    names = catalog.business_names()
    assert list(names) == list(shipped)
    withdrawal = catalog.business_name("CASH_WITHDRAWAL")
    assert withdrawal.zh
    assert withdrawal.en
    # The console shows the same names, read by the same code.
    assert authorizer_console.catalog.business_name("CASH_WITHDRAWAL") == withdrawal


def test_the_teller_command_line_needs_nothing_of_the_console() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, teller_client.cli; print(*sys.modules, sep='\\n')"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert "teller_client.cli" in loaded
    assert not [name for name in loaded if name.partition(".")[0] == "authorizer_console"]
