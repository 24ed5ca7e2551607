"""Kubernetes resource quantities (500m, 1.5Gi, 2e3, 128974848) as exact numbers.

The API admits a quantity only if it matches v1alpha1.QUANTITY_PATTERN, the apiserver's own
syntax; this turns one into a Decimal, for what the operator derives from sizes and memory
limits (PostgreSQL's shared_buffers, Redis's maxmemory in bytes).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(
    r"^\+?(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+))?$"
)


def parse_quantity(value: int | str) -> Decimal:
    """The quantity's value; ValueError for anything the apiserver would not accept."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return Decimal(value)
    match = _QUANTITY.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a quantity (e.g. 512Mi, 1.5Gi, 500m)")
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    try:
        # The exponent form: 2e3, 1.5E-2 (its exponent is a decimal number in the grammar,
        # but only whole exponents are meaningful).
        exponent = Decimal(suffix[1:])
        if exponent != exponent.to_integral_value() or abs(exponent) > 100:
            raise ValueError(f"{value!r}: the exponent must be a whole number up to 100")
        return number.scaleb(int(exponent))
    except InvalidOperation as err:
        raise ValueError(f"{value!r} is not a quantity") from err


def quantity_bytes(value: int | str) -> int:
    """A size in whole bytes (rounded up: a byte cannot be split)."""
    exact = parse_quantity(value)
    whole = int(exact.to_integral_value(rounding="ROUND_CEILING"))
    return whole
