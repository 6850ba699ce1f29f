"""Amounts: notes carry integer minor units; people type and read decimal major units."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MINOR_DIGITS = 2  # every currency hubi knows (CNY, ...) has two decimal places


def parse_amount(text: str | int | Decimal) -> int:
    """'12.50' -> 1250 minor units. Refuses negatives, zero, more than two decimals."""
    if isinstance(text, int):
        value = Decimal(text)
    else:
        try:
            value = Decimal(str(text).strip().replace(",", "").replace("_", ""))
        except InvalidOperation:
            raise ValueError(f"amount {text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"amount {text!r} is not a number")
    minor = value.scaleb(MINOR_DIGITS)
    if minor != minor.to_integral_value():
        raise ValueError(f"amount {text!r} has more than {MINOR_DIGITS} decimal places")
    minor_int = int(minor)
    if minor_int <= 0:
        raise ValueError(f"amount {text!r} must be positive")
    if minor_int >= 1 << 63:
        raise ValueError(f"amount {text!r} is too large")
    return minor_int


def format_amount(minor: int, currency: str | None = None) -> str:
    """1250 -> '12.50' (or '12.50 CNY')."""
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**MINOR_DIGITS)
    text = f"{sign}{whole:,}.{frac:0{MINOR_DIGITS}d}"
    return f"{text} {currency}" if currency else text
