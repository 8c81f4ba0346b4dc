"""Money: integer minor units of an ISO 4217 currency, never a float."""

from __future__ import annotations

from decimal import Decimal

from authq import amounts

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


def is_known_currency(code: str) -> bool:
    return code in CURRENCY_EXPONENTS


def max_minor_units(currency: str) -> int:
    return int(MAX_MAJOR_UNITS * 10 ** CURRENCY_EXPONENTS[currency])


def to_decimal(minor_units: int, currency: str) -> Decimal:
    return Decimal(minor_units).scaleb(-CURRENCY_EXPONENTS.get(currency, 2))


def parse_amount(text: str, currency: str) -> int:
    """'12345.67' in CNY -> 1234567 minor units (authq.amounts); ValueError says why
    the text is not an amount in this currency."""
    try:
        return amounts.minor_units(text, CURRENCY_EXPONENTS[currency])
    except ValueError as exc:
        raise ValueError(f"{text!r} {exc} for {currency}") from None


def format_amount(minor_units: int, currency: str) -> str:
    return f"{to_decimal(minor_units, currency):,} {currency}"
