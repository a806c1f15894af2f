"""Parsing a number given from outside (a parameter value): finite, and not absurdly precise."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# A parameter is a rate: more precision than this means nothing, and ``1e-70000`` would be
# stored (and sent in events) as 70,000 characters.
MAX_PARAMETER_DECIMALS = 12
MAX_PARAMETER_DIGITS = 20


def to_decimal(name: str, value: object) -> Decimal:
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    elif isinstance(value, float | str):
        text = str(value).strip()
        try:
            number = Decimal(text) if len(text) <= 64 else Decimal("NaN")
        except InvalidOperation:
            raise ValueError(f"{name} must be a number (got {text[:64]!r})") from None
    else:
        raise ValueError(f"{name} must be a number (got {type(value).__name__})")
    if not number.is_finite():
        raise ValueError(f"{name} must be a finite number (got {str(value)[:64]!r})")
    return number


def check_precision(name: str, number: Decimal) -> None:
    """At most MAX_PARAMETER_DECIMALS decimal places and MAX_PARAMETER_DIGITS digits
    (trailing zeros do not count: ``0.2500`` is ``0.25``)."""
    if number.is_zero():
        return
    _sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite: to_decimal refused NaN and Infinity
    kept = len(digits)
    while kept > 1 and digits[kept - 1] == 0:
        kept -= 1
        exponent += 1
    places = max(0, -exponent)
    whole = max(0, kept + exponent)
    if places > MAX_PARAMETER_DECIMALS:
        raise ValueError(f"{name} may have at most {MAX_PARAMETER_DECIMALS} decimal places")
    if whole + places > MAX_PARAMETER_DIGITS:
        raise ValueError(f"{name} may have at most {MAX_PARAMETER_DIGITS} digits")
