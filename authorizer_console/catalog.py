"""What the console shows for codes: business type names in Chinese and English from
the center's catalog (the policy file the server loads), rejection reasons and
image kinds. Data only: reading them never touches the network."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from authq.render import image_kinds

from server.domain.reasons import REJECTION_REASONS

# The server ships its catalog as package data beside its policy code; the console
# reads the same file so both sides name a business type alike.
CATALOG_FILE = Path(__file__).resolve().parent.parent / "server" / "policy" / "default_policy.toml"

# In the API's order (ImageKind): the console's number keys choose them by it.
IMAGE_KINDS = tuple(image_kinds())
KIND_LABELS = {
    "ID_FRONT": "ID card front",
    "ID_BACK": "ID card back",
    "VOUCHER": "Voucher",
    "APPLICATION_FORM": "Application form",
    "CUSTOMER_PHOTO": "Customer at the counter",
    "OTHER": "Other document",
}
REASONS: tuple[tuple[str, str], ...] = tuple(REJECTION_REASONS.items())


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
def business_names(path: Path = CATALOG_FILE) -> dict[str, BusinessName]:
    """Code -> names; empty when the file cannot be read (codes are shown instead)."""
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
