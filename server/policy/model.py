"""Authorization policy values (R2, R3): which business types exist, how each reaches the
center, the amount thresholds that send it through on-site review, and the images it needs.

Everything here is immutable and does no I/O; loader.py builds these values from the policy
file. The small field checkers at the end are shared by loader.py and hours.py so that every
fault is reported the same way: a key path (turned into a line number) and a reason."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from server.domain.money import CURRENCY_EXPONENTS, format_amount, to_decimal

if TYPE_CHECKING:
    from server.policy.hours import OperatingHours


class Mode(StrEnum):
    ONSITE_ONLY = "ONSITE_ONLY"
    DIRECT_CENTRAL = "DIRECT_CENTRAL"
    ONSITE_REVIEW_THEN_CENTRAL = "ONSITE_REVIEW_THEN_CENTRAL"


class Basis(StrEnum):
    """Which rule decided the mode: a stable code for the audit trail, beside the sentence."""

    ONSITE_ONLY_TYPE = "ONSITE_ONLY_TYPE"
    HIGH_RISK = "HIGH_RISK"
    REVIEW_TYPE = "REVIEW_TYPE"
    LOCAL_CASH_THRESHOLD = "LOCAL_CASH_THRESHOLD"
    FOREIGN_THRESHOLD = "FOREIGN_THRESHOLD"
    NO_FX_RATE = "NO_FX_RATE"
    FOREIGN_NOT_CONFIGURED = "FOREIGN_NOT_CONFIGURED"
    DIRECT = "DIRECT"


# R3: where a business has no voucher the teller captures the authorization application form
# instead. A regulation rule, so it holds for every type rather than being configured per entry.
IMAGE_SUBSTITUTES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"VOUCHER": ("APPLICATION_FORM",)}
)


class PolicyError(ValueError):
    """A policy file is refused; the message names the file, the line (when known), the reason."""

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        self.source = source
        self.line = line
        self.reason = reason
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {reason}")


class UnknownBusinessError(LookupError):
    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(f"unknown business type {code!r}: it is not in the business catalog")


class UnknownRegionError(LookupError):
    def __init__(self, region: str) -> None:
        self.region = region
        super().__init__(f"region {region!r} is not defined in the policy file")


@dataclass(frozen=True, slots=True)
class BusinessRule:
    """One business type. Its attribute names match server.domain.catalog.BusinessType."""

    code: str
    name_zh: str
    name_en: str
    mode: Mode
    importance: int
    high_risk: bool = False
    monetary: bool = True
    local_currency_cash: bool = False
    foreign_currency: bool = False
    required_images: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name_en} ({self.code})"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Amounts at or above which business needs on-site review first (R2)."""

    local_currency: str
    local_cash_review_at: Decimal
    foreign_review_at_usd: Decimal


@dataclass(frozen=True)
class PolicyView:
    """The policy in force for one region (or the default): what decide_mode reads."""

    region: str | None
    thresholds: Thresholds
    fx_to_usd: Mapping[str, Decimal]
    businesses: Mapping[str, BusinessRule]

    def get(self, code: str) -> BusinessRule | None:
        return self.businesses.get(code)

    def rule(self, code: str) -> BusinessRule:
        rule = self.businesses.get(code)
        if rule is None:
            raise UnknownBusinessError(code)
        return rule

    def usd_value(self, amount_minor: int, currency: str) -> Decimal | None:
        """The amount in USD at the indicative rate, or None when no rate is known."""
        if currency == "USD":
            return to_decimal(amount_minor, currency)
        rate = self.fx_to_usd.get(currency)
        return None if rate is None else to_decimal(amount_minor, currency) * rate

    def local_minor(self, amount_minor: int, currency: str) -> int | None:
        """The amount in minor units of the local currency at the indicative rates,
        rounded up (for routing by an authorizer's ceiling), or None when no rate is
        known."""
        local = self.thresholds.local_currency
        if currency == local:
            return amount_minor
        usd = self.usd_value(amount_minor, currency)
        local_rate = Decimal(1) if local == "USD" else self.fx_to_usd.get(local)
        if usd is None or not local_rate:
            return None
        exponent = CURRENCY_EXPONENTS.get(local, 2)
        return int((usd / local_rate).scaleb(exponent).to_integral_value(ROUND_CEILING))


@dataclass(frozen=True)
class Policy:
    default: PolicyView
    regions: Mapping[str, PolicyView]
    hours: OperatingHours

    def for_region(self, region: str | None) -> PolicyView:
        """No region (None or "") gives the default. A name the file does not define is an
        error rather than the default: a mistyped region must not quietly get laxer rules."""
        if not region:
            return self.default
        view = self.regions.get(region)
        if view is None:
            raise UnknownRegionError(region)
        return view


@dataclass(frozen=True, slots=True)
class Decision:
    mode: Mode
    reason: str
    basis: Basis


def decide_mode(view: PolicyView, business_code: str, amount_minor: int, currency: str) -> Decision:
    """How this request reaches the center (R2). Raises UnknownBusinessError for a code not
    in the catalog and ValueError for a negative amount."""
    rule = view.rule(business_code)
    if amount_minor < 0:
        raise ValueError(f"amount must not be negative, got {amount_minor}")
    region = f" in region {view.region}" if view.region else ""
    if rule.mode is Mode.ONSITE_ONLY:
        return Decision(
            Mode.ONSITE_ONLY,
            f"{rule.label} is on-site-only business{region}: the center does not accept it; "
            "authorize it at the branch (R2).",
            Basis.ONSITE_ONLY_TYPE,
        )
    if rule.high_risk:
        return _review(
            f"{rule.label} is high-risk business: an on-site reviewer must check it "
            "before it goes to the center (R2).",
            Basis.HIGH_RISK,
        )
    if rule.mode is Mode.ONSITE_REVIEW_THEN_CENTRAL:
        return _review(
            f"{rule.label} is set to need on-site review{region}: an on-site reviewer must "
            "check it before it goes to the center (R2).",
            Basis.REVIEW_TYPE,
        )
    if not rule.monetary:
        return _direct(
            f"{rule.label} carries no amount and is not high-risk: it goes "
            "straight to the center (R2)."
        )
    limits = view.thresholds
    amount = format_amount(amount_minor, currency)
    if currency == limits.local_currency:
        at = f"{limits.local_cash_review_at:,} {currency}"
        if not rule.local_currency_cash:
            return _direct(
                f"{rule.label} of {amount} is not local-currency cash business, so "
                f"the {at} cash threshold does not apply: it goes straight to the center (R2)."
            )
        if to_decimal(amount_minor, currency) >= limits.local_cash_review_at:
            return _review(
                f"{rule.label} of {amount} is at or above the {at} threshold{region}: an "
                "on-site reviewer must recount the cash and check identity before it goes "
                "to the center (R2).",
                Basis.LOCAL_CASH_THRESHOLD,
            )
        return _direct(
            f"{rule.label} of {amount} is below the {at} threshold{region}: "
            "it goes straight to the center (R2)."
        )
    usd_at = f"{limits.foreign_review_at_usd:,} USD"
    if not rule.foreign_currency:
        return _review(
            f"{rule.label} is not set up as foreign-currency business, so an amount in "
            f"{currency} ({amount}) needs on-site review before it goes to the center (R2).",
            Basis.FOREIGN_NOT_CONFIGURED,
        )
    usd = view.usd_value(amount_minor, currency)
    if usd is None:
        return _review(
            f"There is no indicative USD rate for {currency}, so {amount} cannot be checked "
            f"against the {usd_at} threshold: to be safe an on-site reviewer must check it "
            "before it goes to the center (R2).",
            Basis.NO_FX_RATE,
        )
    about = "" if currency == "USD" else f" (about {usd.quantize(Decimal('0.01')):,} USD)"
    if usd >= limits.foreign_review_at_usd:
        return _review(
            f"{rule.label} of {amount}{about} is at or above the {usd_at} threshold{region}: "
            "an on-site reviewer must check it before it goes to the center (R2).",
            Basis.FOREIGN_THRESHOLD,
        )
    return _direct(
        f"{rule.label} of {amount}{about} is below the {usd_at} threshold{region}: "
        "it goes straight to the center (R2)."
    )


def _review(reason: str, basis: Basis) -> Decision:
    return Decision(Mode.ONSITE_REVIEW_THEN_CENTRAL, reason, basis)


def _direct(reason: str) -> Decision:
    return Decision(Mode.DIRECT_CENTRAL, reason, Basis.DIRECT)


def missing_images(view: PolicyView, business_code: str, kinds_present: Iterable[str]) -> list[str]:
    """Required image kinds not yet captured, in the catalog's order (R3). A substitute
    (APPLICATION_FORM for VOUCHER) only counts when the type does not require it itself,
    so one form image never satisfies two requirements."""
    rule = view.rule(business_code)
    present = set(kinds_present)
    missing: list[str] = []
    for kind in rule.required_images:
        if kind in present:
            continue
        substitutes = IMAGE_SUBSTITUTES.get(kind, ())
        if any(s in present and s not in rule.required_images for s in substitutes):
            continue
        missing.append(kind)
    return missing


def missing_images_message(missing: Iterable[str]) -> str:
    """The teller's sentence for missing images, naming the R3 substitutes."""
    parts = []
    for kind in missing:
        substitutes = IMAGE_SUBSTITUTES.get(kind, ())
        parts.append(f"{kind} (or {' / '.join(substitutes)})" if substitutes else kind)
    return "missing required images: " + ", ".join(parts) + " (R3)"


# --- field checks shared by the loaders -------------------------------------------------

KeyPath = tuple[str | int, ...]


class FieldFault(Exception):
    """A fault at a key path of the parsed document; the loader turns the path into a line."""

    def __init__(self, path: KeyPath, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def check_keys(table: Mapping[str, Any], allowed: Iterable[str], path: KeyPath, where: str) -> None:
    known = set(allowed)
    for key in table:
        if key not in known:
            raise FieldFault(
                (*path, key), f"{where}: unknown key {key!r} (expected {', '.join(sorted(known))})"
            )


def sub_table(
    table: Mapping[str, Any], key: str, path: KeyPath, where: str
) -> Mapping[str, Any] | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise FieldFault((*path, key), f"{where}: {key} must be a table")
    return value


def text(table: Mapping[str, Any], key: str, path: KeyPath, where: str) -> str:
    if key not in table:
        raise FieldFault(path, f"{where}: missing {key}")
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise FieldFault((*path, key), f"{where}: {key} must be a non-empty string")
    return value


def flag(table: Mapping[str, Any], key: str, path: KeyPath, where: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise FieldFault((*path, key), f"{where}: {key} must be true or false")
    return value


def text_list(table: Mapping[str, Any], key: str, path: KeyPath, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list):
        raise FieldFault((*path, key), f"{where}: {key} must be a list of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise FieldFault((*path, key, index), f"{where}: {key} must be a list of strings")
    return tuple(value)
