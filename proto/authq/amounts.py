"""Amounts as people type them, read into the int64 minor units that Money carries:
one reading for the command lines and the server's tools."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# Money.minor_units is an int64.
INT64_MAX = 2**63 - 1


def minor_units(text: str, exponent: int) -> int:
    """'12000.50' with exponent 2 -> 1200050, exactly: never through a float, and the
    decimals counted on the digits, since Decimal arithmetic rounds at 28 digits and
    would take '1.0000000000000000000000000001' for 1.00. Raises ValueError saying
    what is wrong with the text; its sign is the caller's to judge."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError("is not a number") from None
    if not value.is_finite():
        raise ValueError("is not a number")
    if _decimals(value) > exponent:
        raise ValueError(f"has more than {exponent} decimals")
    # Before any arithmetic on the value: int() of one such as 1e999999 takes seconds.
    if value.copy_abs() > largest(exponent):
        raise ValueError("is too large (minor units travel as an int64)")
    return int(value.scaleb(exponent))


def largest(exponent: int) -> Decimal:
    """The largest amount int64 minor units of this exponent hold."""
    return Decimal(INT64_MAX).scaleb(-exponent)


def _decimals(value: Decimal) -> int:
    """Digits after the point, trailing zeros aside ('1.50' has 1), exactly."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    coefficient = "".join(map(str, digits))
    trailing_zeros = len(coefficient) - len(coefficient.rstrip("0"))
    return max(0, -(exponent + trailing_zeros))
