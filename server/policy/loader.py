"""Reads the policy file and refuses a bad one with the line and the reason.

tomllib reports positions only for syntax errors; for a file that parses but breaks a rule
the fault is raised at a key path (("business", 3, "mode")) and _KeyLines maps that path back
to the line that set it, by scanning the table headers and keys of the text."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from server.domain.money import CURRENCY_EXPONENTS
from server.domain.priority import IMPORTANCE_LEVELS
from server.domain.records import IMAGE_KINDS
from server.policy.hours import parse_hours
from server.policy.model import (
    BusinessRule,
    FieldFault,
    KeyPath,
    Mode,
    Policy,
    PolicyError,
    PolicyView,
    Thresholds,
    check_keys,
    flag,
    sub_table,
    text,
    text_list,
)

DEFAULT_POLICY = Path(__file__).with_name("default_policy.toml")

_TOP_KEYS = ("business", "thresholds", "fx_to_usd", "regions", "hours")
_BUSINESS_KEYS = (
    "code", "name_zh", "name_en", "mode", "importance", "high_risk", "monetary",
    "local_currency_cash", "foreign_currency", "required_images",
)  # fmt: skip
_THRESHOLD_KEYS = ("local_currency", "local_cash_review_at", "foreign_review_at_usd")
_REGION_KEYS = ("description", "thresholds", "modes")
# The regulation's defaults (R2), used where the file leaves a threshold out.
_REGULATION = Thresholds("CNY", Decimal("500000.00"), Decimal("20000.00"))
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}\Z")
_REGION = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
_DECIMAL = re.compile(r"^-?\d+(\.\d+)?\Z")
_MODES = ", ".join(Mode)


def load_policy(path: Path = DEFAULT_POLICY) -> Policy:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(str(path), None, f"cannot read the policy file: {exc.strerror}") from None
    return parse_policy(data, str(path))


def parse_policy(data: bytes | str, source: str = "<policy>") -> Policy:
    """Builds a Policy from the file's content; `source` names the file in error messages."""
    if isinstance(data, str):
        content = data
    else:
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise PolicyError(source, line, "the policy file is not UTF-8 text") from None
    try:
        document = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        raise PolicyError(
            source, int(found[1]) if found else None, f"not valid TOML: {exc}"
        ) from None
    try:
        return _policy(document)
    except FieldFault as fault:
        raise PolicyError(source, _KeyLines(content).line_of(fault.path), fault.reason) from None


def _policy(document: Mapping[str, Any]) -> Policy:
    check_keys(document, _TOP_KEYS, (), "the policy file")
    businesses = _businesses(document.get("business"))
    fx = _fx_rates(sub_table(document, "fx_to_usd", (), "the policy file") or {})
    thresholds = _thresholds(
        sub_table(document, "thresholds", (), "the policy file") or {},
        ("thresholds",),
        "[thresholds]",
        _REGULATION,
    )
    default = PolicyView(None, thresholds, fx, businesses)
    regions: dict[str, PolicyView] = {}
    for name, table in (sub_table(document, "regions", (), "the policy file") or {}).items():
        regions[name] = _region(name, table, default)
    hours = sub_table(document, "hours", (), "the policy file")
    if hours is None:
        raise FieldFault((), "the policy file needs an [hours] table (R9)")
    return Policy(default, MappingProxyType(regions), parse_hours(hours, ("hours",)))


def _businesses(entries: Any) -> Mapping[str, BusinessRule]:
    if entries is None or entries == []:
        raise FieldFault((), "the policy file has no [[business]] entries")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FieldFault(("business",), "business must be written as [[business]] tables")
    rules: dict[str, BusinessRule] = {}
    for index, entry in enumerate(entries):
        rule = _business(entry, ("business", index), f"business entry #{index + 1}")
        if rule.code in rules:
            raise FieldFault(
                ("business", index, "code"), f"business code {rule.code} is listed twice"
            )
        rules[rule.code] = rule
    return MappingProxyType(rules)


def _business(entry: Mapping[str, Any], path: KeyPath, where: str) -> BusinessRule:
    code = text(entry, "code", path, where)
    if not _CODE.match(code):
        raise FieldFault((*path, "code"), f"{where}: code {code!r} must be like CASH_WITHDRAWAL")
    where = f"business {code}"
    check_keys(entry, _BUSINESS_KEYS, path, where)
    mode = _mode(text(entry, "mode", path, where), (*path, "mode"), where)
    importance = entry.get("importance")
    if type(importance) is not int or importance not in IMPORTANCE_LEVELS:
        raise FieldFault(
            (*path, "importance") if "importance" in entry else path,
            f"{where}: importance must be one of {', '.join(map(str, IMPORTANCE_LEVELS))}, "
            f"got {importance!r}",
        )
    if "required_images" not in entry and mode is not Mode.ONSITE_ONLY:
        raise FieldFault(path, f"{where}: missing required_images (R3)")
    images = text_list(entry, "required_images", path, where)
    for index, kind in enumerate(images):
        at = (*path, "required_images", index)
        if kind not in IMAGE_KINDS:
            raise FieldFault(
                at,
                f"{where}: unknown image kind {kind!r} (expected one of {', '.join(IMAGE_KINDS)})",
            )
        if kind in images[:index]:
            raise FieldFault(at, f"{where}: image kind {kind} is listed twice")
    rule = BusinessRule(
        code=code,
        name_zh=text(entry, "name_zh", path, where),
        name_en=text(entry, "name_en", path, where),
        mode=mode,
        importance=importance,
        high_risk=flag(entry, "high_risk", path, where, False),
        monetary=flag(entry, "monetary", path, where, True),
        local_currency_cash=flag(entry, "local_currency_cash", path, where, False),
        foreign_currency=flag(entry, "foreign_currency", path, where, False),
        required_images=images,
    )
    if rule.high_risk and rule.mode is Mode.DIRECT_CENTRAL:
        raise FieldFault(
            (*path, "mode"),
            f"{where}: a high-risk type cannot be DIRECT_CENTRAL "
            "(R2: high-risk business needs on-site review)",
        )
    if not rule.monetary and (rule.local_currency_cash or rule.foreign_currency):
        raise FieldFault(
            path,
            f"{where}: monetary = false has no amount, so "
            "local_currency_cash and foreign_currency must be false",
        )
    return rule


def _mode(value: str, path: KeyPath, where: str) -> Mode:
    try:
        return Mode(value)
    except ValueError:
        raise FieldFault(path, f"{where}: unknown mode {value!r} (expected {_MODES})") from None


def _thresholds(
    table: Mapping[str, Any], path: KeyPath, where: str, base: Thresholds
) -> Thresholds:
    check_keys(table, _THRESHOLD_KEYS, path, where)
    currency = base.local_currency
    if "local_currency" in table:
        currency = text(table, "local_currency", path, where)
        if currency not in CURRENCY_EXPONENTS:
            raise FieldFault((*path, "local_currency"), f"{where}: unknown currency {currency!r}")
        if currency != base.local_currency and "local_cash_review_at" not in table:
            # The inherited amount was meant in another currency.
            raise FieldFault(
                path, f"{where}: a new local_currency needs its own local_cash_review_at"
            )
    local = base.local_cash_review_at
    if "local_cash_review_at" in table:
        local = _amount(table, "local_cash_review_at", currency, path, where)
    foreign = base.foreign_review_at_usd
    if "foreign_review_at_usd" in table:
        foreign = _amount(table, "foreign_review_at_usd", "USD", path, where)
    return Thresholds(currency, local, foreign)


def _amount(
    table: Mapping[str, Any], key: str, currency: str, path: KeyPath, where: str
) -> Decimal:
    value = _decimal(table[key], (*path, key), f"{where}: {key}")
    if value < 0:
        raise FieldFault((*path, key), f"{where}: {key} must not be negative, got {value}")
    exponent = CURRENCY_EXPONENTS[currency]
    if value != value.quantize(Decimal(1).scaleb(-exponent)):
        raise FieldFault(
            (*path, key), f"{where}: {key} {value} has more than {exponent} decimals for {currency}"
        )
    return value


def _decimal(value: Any, path: KeyPath, what: str) -> Decimal:
    # Amounts and rates are strings so that no float ever holds money.
    if not isinstance(value, str) or not _DECIMAL.match(value):
        raise FieldFault(
            path, f'{what} must be a decimal string such as "500000.00", got {value!r}'
        )
    return Decimal(value)


def _fx_rates(table: Mapping[str, Any]) -> Mapping[str, Decimal]:
    rates: dict[str, Decimal] = {}
    for currency, raw in table.items():
        at: KeyPath = ("fx_to_usd", currency)
        if currency not in CURRENCY_EXPONENTS or currency == "USD":
            raise FieldFault(at, f"[fx_to_usd]: {currency!r} is not a known non-USD currency")
        rate = _decimal(raw, at, f"[fx_to_usd]: {currency}")
        if rate <= 0:
            raise FieldFault(at, f"[fx_to_usd]: the {currency} rate must be above zero")
        rates[currency] = rate
    return MappingProxyType(rates)


def _region(name: str, table: Any, default: PolicyView) -> PolicyView:
    path: KeyPath = ("regions", name)
    where = f"[regions.{name}]"
    if not _REGION.match(name):
        raise FieldFault(path, f"{where}: a region name uses letters, digits, - and _ only")
    if not isinstance(table, dict):
        raise FieldFault(path, f"{where} must be a table")
    check_keys(table, _REGION_KEYS, path, where)
    if "description" in table:
        text(table, "description", path, where)
    overrides = sub_table(table, "thresholds", path, where)
    thresholds = default.thresholds
    if overrides is not None:
        thresholds = _thresholds(
            overrides, (*path, "thresholds"), f"[regions.{name}.thresholds]", thresholds
        )
    businesses = dict(default.businesses)
    for code, raw in (sub_table(table, "modes", path, where) or {}).items():
        at: KeyPath = (*path, "modes", code)
        rule = businesses.get(code)
        if rule is None:
            raise FieldFault(at, f"[regions.{name}.modes]: unknown business code {code!r}")
        if not isinstance(raw, str):
            raise FieldFault(at, f"[regions.{name}.modes]: {code} must be a mode name")
        mode = _mode(raw, at, f"[regions.{name}.modes]")
        if rule.high_risk and mode is Mode.DIRECT_CENTRAL:
            raise FieldFault(
                at, f"[regions.{name}.modes]: {code} is high-risk and cannot be DIRECT_CENTRAL (R2)"
            )
        businesses[code] = dataclasses.replace(rule, mode=mode)
    return PolicyView(name, thresholds, default.fx_to_usd, MappingProxyType(businesses))


class _KeyLines:
    """Line numbers of the table headers and keys of a TOML text, by key path.

    A light scanner, not a parser: it skips strings and multi-line arrays well enough for the
    files it is used on (which tomllib has already accepted). A path it cannot find falls
    back to its nearest ancestor, so a fault inside an inline value points at its key."""

    _STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')
    _PART = re.compile(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)')

    def __init__(self, text: str) -> None:
        self.lines: dict[KeyPath, int] = {}
        arrays: dict[KeyPath, int] = {}
        table: KeyPath = ()
        depth = 0  # open brackets of a value that continues on the next lines
        fence: str | None = None  # delimiter of an open multi-line string
        items: KeyPath | None = None  # a flat multi-line array whose items get their own lines
        count = 0  # items of that array seen so far
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if fence is not None:
                if line.count(fence) % 2 == 1:
                    fence = None
                continue
            if depth > 0:
                if items is not None and depth == 1:
                    started = self._items(line)
                    for index in range(count, count + started):
                        self.lines.setdefault((*items, index), number)
                    count += started
                depth += self._balance(line)
                continue
            if line.startswith("["):
                is_array = line.startswith("[[")
                inner = line[2:] if is_array else line[1:]
                names = self._parts(inner.split("]", 1)[0])
                table = self._resolve(names[:-1], arrays) + names[-1:]
                if is_array:
                    arrays[table] = arrays.get(table, 0) + 1
                    self.lines.setdefault(table, number)
                    table = (*table, arrays[table] - 1)
                self.lines.setdefault(table, number)
                continue
            if "=" not in line or line.startswith("#"):
                continue
            key, value = line.split("=", 1)
            path = (*table, *self._parts(key))
            self.lines.setdefault(path, number)
            for delimiter in ('"""', "'''"):
                if value.count(delimiter) % 2 == 1:
                    fence = delimiter
            if fence is None:
                depth = self._balance(value)
                flat = depth == 1 and self._bare(value).count("[") == 1
                items, count = (path, self._items(value)) if flat else (None, 0)

    def line_of(self, path: KeyPath) -> int | None:
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    @classmethod
    def _parts(cls, dotted: str) -> tuple[str, ...]:
        return tuple(a or b or c for a, b, c in cls._PART.findall(dotted))

    @staticmethod
    def _resolve(names: tuple[str, ...], arrays: Mapping[KeyPath, int]) -> KeyPath:
        # A header under an array of tables belongs to that array's latest element.
        path: KeyPath = ()
        for name in names:
            path = (*path, name)
            if path in arrays:
                path = (*path, arrays[path] - 1)
        return path

    @classmethod
    def _bare(cls, value: str) -> str:
        # Strings become a placeholder so that their brackets, commas and hashes do not count.
        return cls._STRING.sub('""', value).split("#", 1)[0]

    @classmethod
    def _balance(cls, value: str) -> int:
        bare = cls._bare(value)
        return bare.count("[") + bare.count("{") - bare.count("]") - bare.count("}")

    @classmethod
    def _items(cls, value: str) -> int:
        """How many items of a flat array start in this piece of it."""
        bare = cls._bare(value).replace("[", "").replace("]", "")
        return sum(1 for piece in bare.split(",") if piece.strip())
