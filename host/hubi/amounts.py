"""Amounts: notes carry integer minor units; people type and read decimal major units."""

from __future__ import annotations

import re
from decimal import Decimal

MINOR_DIGITS = 2  # every currency hubi knows (CNY, ...) has two decimal places


# Digits, commas only between groups of three (1,250.00), '.' before at most the decimals.
# A comma elsewhere is refused rather than dropped: '1,5' meant 1.5 to whoever typed it.
_AMOUNT = re.compile(r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+", re.ASCII)


def parse_amount(text: str | int | Decimal) -> int:
    """'12.50' -> 1250 minor units. Refuses negatives, zero, more than two decimals."""
    if isinstance(text, int):
        value = Decimal(text)
    elif isinstance(text, Decimal):
        value = text
    else:
        typed = str(text).strip()
        if not _AMOUNT.fullmatch(typed):
            if "," in typed and _AMOUNT.fullmatch(typed.replace(",", "")):
                raise ValueError(
                    f"amount {text!r}: a comma only separates thousands (1,250.00);"
                    " the decimal point is '.'"
                )
            if typed.startswith("-"):
                raise ValueError(f"amount {text!r} must be positive")
            raise ValueError(f"amount {text!r} is not a number (write digits, e.g. 12.50)")
        value = Decimal(typed.replace(",", ""))
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
