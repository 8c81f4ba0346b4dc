"""The codes the command lines and consoles offer that are the center's, not the
API's: business type names from the center's catalog (the policy file the server
ships) and what an on-site reviewer may say it checked. Data only: reading them never
touches the network."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

# The server ships its catalog as package data beside its policy code; the clients read
# the same file so both sides name a business type alike. Found through the import
# system, not a path relative to this file: from a source tree the two packages are
# not side by side (this one lives under proto/).
CATALOG_PACKAGE, CATALOG_NAME = "server.policy", "default_policy.toml"

# What an on-site reviewer may say it checked (R2: recount the cash, check identity,
# check loss-report records or adjustment reasons). The one list: the center refuses
# any other (server/center.py), and the command lines offer these.
REVIEW_CHECKS = (
    "CASH_RECOUNTED",
    "IDENTITY_CHECKED",
    "LOSS_REPORT_CHECKED",
    "ADJUSTMENT_REASON_CHECKED",
    "DOCUMENTS_CHECKED",
)


def catalog_file() -> Path | None:
    """The shipped catalog; None on a workstation installed without the server."""
    try:
        return Path(str(resources.files(CATALOG_PACKAGE) / CATALOG_NAME))
    except ModuleNotFoundError:
        return None


@dataclass(frozen=True, slots=True)
class BusinessName:
    code: str
    zh: str
    en: str

    @property
    def label(self) -> str:
        if not self.zh and not self.en:
            return self.code
        return f"{self.zh} / {self.en}"


@lru_cache(maxsize=4)
def business_names(path: Path | None = None) -> dict[str, BusinessName]:
    """Code -> names, from ``path`` or else the shipped catalog; empty when the file
    cannot be read (codes are shown instead)."""
    path = path or catalog_file()
    if path is None:
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    names = {}
    for entry in document.get("business", []):
        code = str(entry.get("code", ""))
        if code:
            names[code] = BusinessName(
                code, str(entry.get("name_zh", "")), str(entry.get("name_en", ""))
            )
    return names


def business_name(code: str) -> BusinessName:
    return business_names().get(code) or BusinessName(code, "", "")
