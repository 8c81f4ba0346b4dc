"""The business catalog: which business types exist and how important each is."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.domain.priority import IMPORTANCE_LEVELS

DEFAULT_CATALOG = Path(__file__).with_name("default_catalog.toml")


class CatalogError(ValueError):
    """A catalog file is malformed; the message names the entry and the fault."""


@dataclass(frozen=True, slots=True)
class BusinessType:
    code: str
    name_zh: str
    name_en: str
    importance: int
    monetary: bool = True


@dataclass(frozen=True, slots=True)
class Catalog:
    types: dict[str, BusinessType]

    def get(self, code: str) -> BusinessType | None:
        return self.types.get(code)

    @classmethod
    def load(cls, path: Path = DEFAULT_CATALOG) -> Catalog:
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise CatalogError(f"{path}: {exc}") from None
        types: dict[str, BusinessType] = {}
        for index, entry in enumerate(document.get("business", [])):
            business = _business(entry, f"{path}: business[{index}]")
            if business.code in types:
                raise CatalogError(f"{path}: business code {business.code} listed twice")
            types[business.code] = business
        if not types:
            raise CatalogError(f"{path}: no [[business]] entries")
        return cls(types)


def _business(entry: dict[str, Any], where: str) -> BusinessType:
    try:
        business = BusinessType(
            code=str(entry["code"]),
            name_zh=str(entry["name_zh"]),
            name_en=str(entry["name_en"]),
            importance=int(entry["importance"]),
            monetary=bool(entry.get("monetary", True)),
        )
    except KeyError as exc:
        raise CatalogError(f"{where}: missing {exc.args[0]}") from None
    if business.importance not in IMPORTANCE_LEVELS:
        raise CatalogError(f"{where}: importance must be one of {IMPORTANCE_LEVELS}")
    return business
