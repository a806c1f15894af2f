"""Parsing a number given from outside (a parameter value): finite, and not absurdly precise."""

from __future__ import annotations

import math
import re
from decimal import Decimal

# What a person writes as a number, in ASCII digits: ``0.25``, ``-1``, ``.5``, ``2.5e-3``.
# ``Decimal()`` alone also takes ``1_0`` (ten), digits of any script (U+0661) and ``NaN``.
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)

# A parameter is a rate: more precision than this means nothing, and ``1e-70000`` would be
# stored (and sent in events) as 70,000 characters.
MAX_PARAMETER_DECIMALS = 12
MAX_PARAMETER_DIGITS = 20


def to_decimal(name: str, value: object) -> Decimal:
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value)) if math.isfinite(value) else Decimal("NaN")
    elif isinstance(value, str):
        text = value.strip()
        if text.lower().lstrip("+-") in ("nan", "inf", "infinity", "snan"):
            number = Decimal("NaN")
        elif len(text) <= 64 and _NUMBER_RE.fullmatch(text):
            number = Decimal(text)
        else:
            raise ValueError(f"{name} must be a number in ASCII digits (got {text[:64]!r})")
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
