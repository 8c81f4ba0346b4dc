"""A copy of a policy file whose center and default branch are open around the clock.

The shipped policy has a real bank's hours (R9), so a demo (`authq-server --demo`) or a
test suite run in the evening would be refused at every submit. Both use this copy:
everything else in it (catalog, thresholds, rates, regions, per-branch hours) is the
file as shipped, and the copy must load like any policy file."""

from __future__ import annotations

import re
from pathlib import Path

from server.policy.loader import load_policy

_WEEKLY = re.compile(
    r"(\[hours\.(?:center|default_branch)\]\n)(?:(?:mon|tue|wed|thu|fri|sat|sun) = .*\n)+"
)


def always_open_copy(source: Path, target: Path) -> Path:
    text = source.read_text(encoding="utf-8")
    copy, replaced = _WEEKLY.subn(r"\1always_open = true\n", text)
    if replaced != 2:
        raise ValueError(f"{source}: expected weekly [hours.center] and [hours.default_branch]")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        "# Generated from " + str(source) + " with the center and the default branch\n"
        "# open around the clock (server/policy/always_open.py): demo and tests only.\n" + copy,
        encoding="utf-8",
    )
    load_policy(target)  # refuses a copy that does not load, naming the line
    return target
