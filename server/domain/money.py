"""Money: integer minor units of an ISO 4217 currency, never a float."""

from __future__ import annotations

from decimal import Decimal, Inexact, InvalidOperation, localcontext

# ISO 4217 codes a retail counter meets, with their minor-unit exponent.
CURRENCY_EXPONENTS: dict[str, int] = {
    "CNY": 2, "USD": 2, "EUR": 2, "GBP": 2, "HKD": 2, "MOP": 2, "TWD": 2, "JPY": 0,
    "KRW": 0, "SGD": 2, "AUD": 2, "CAD": 2, "NZD": 2, "CHF": 2, "SEK": 2, "NOK": 2,
    "DKK": 2, "RUB": 2, "THB": 2, "MYR": 2, "PHP": 2, "IDR": 2, "VND": 0, "INR": 2,
    "AED": 2, "SAR": 2, "KZT": 2, "MNT": 2, "BRL": 2, "ZAR": 2, "MXN": 2, "TRY": 2,
    "PLN": 2, "CZK": 2, "HUF": 2, "ILS": 2, "PKR": 2, "LAK": 2, "KHR": 2, "MMK": 2,
    "KWD": 3, "BHD": 3, "OMR": 3, "JOD": 3,
}  # fmt: skip

# No counter transaction comes near a trillion units; anything above is a keying error.
MAX_MAJOR_UNITS = 10**12
# Amounts travel as int64 minor units (common.proto Money.minor_units).
INT64_MAX = 2**63 - 1


def is_known_currency(code: str) -> bool:
    return code in CURRENCY_EXPONENTS


def max_minor_units(currency: str) -> int:
    return int(MAX_MAJOR_UNITS * 10 ** CURRENCY_EXPONENTS[currency])


def to_decimal(minor_units: int, currency: str) -> Decimal:
    return Decimal(minor_units).scaleb(-CURRENCY_EXPONENTS.get(currency, 2))


def parse_amount(text: str, currency: str) -> int:
    """'12345.67' in CNY -> 1234567 minor units, exactly (never through a float).
    Raises ValueError saying why for text that is not a number, not finite, has more
    decimals than the currency has, or does not fit in int64 minor units."""
    exponent = CURRENCY_EXPONENTS[currency]
    value = _decimal(text)
    # Checked before any arithmetic: int() of a value such as 1e999999 takes seconds,
    # and copy_abs, unlike abs, cannot overflow the context.
    if value.copy_abs() > to_decimal(INT64_MAX, currency):
        raise ValueError(f"{text} is beyond {format_amount(INT64_MAX, currency)}")
    with localcontext() as context:
        # scaleb rounds to the context's 28 digits: a digit it would drop is a decimal
        # too many, so rounding is an error rather than a silent change of the amount.
        context.traps[Inexact] = True
        try:
            minor = value.scaleb(exponent)
        except Inexact:
            minor = None
    if minor is None or minor != minor.to_integral_value():
        raise ValueError(f"{text} has more than {exponent} decimals for {currency}")
    return int(minor)


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{text!r} is not a finite number")
    return value


def format_amount(minor_units: int, currency: str) -> str:
    return f"{to_decimal(minor_units, currency):,} {currency}"
