"""The CEL rules of the API, evaluated in Python: one text, enforced in two places.

Each cross-field rule is written once, as CEL, on the model it constrains
(x-kubernetes-validations). The CRD carries it to the apiserver, which checks it at `kubectl
apply`; the models evaluate the very same text when a manifest is read outside a cluster
(`eval-runner run`), with the `cel` package (a binding of the Rust CEL implementation).
"""

from __future__ import annotations

import functools
import importlib
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eval_api.quantity import parse_quantity

# What validating an object the apiserver already admitted passes as pydantic's context: its
# rules held at `kubectl apply`, so they are not evaluated again (the operator, the runner in a
# pod). Importing the `cel` package also costs ~27 MB (its __init__ loads a CLI), which the
# operator does not pay.
ADMITTED = {"admitted": True}


@functools.cache
def _cel() -> Any:
    return importlib.import_module("cel")


@functools.lru_cache(maxsize=512)
def _program(rule: str) -> Any:
    return _cel().compile(rule)


def holds(rule: str, value: Any) -> bool:
    """Whether `rule` is true for `self` = value (JSON-like data, as the apiserver sees it).

    A rule that cannot be evaluated (say, a type error on an unexpected shape) does not hold,
    as in the apiserver.
    """
    context = _cel().Context({"self": value})
    # cel-go's strings/lists extensions, as Kubernetes enables them.
    importlib.import_module("cel.stdlib").add_stdlib_to_context(context)
    add_quantity_library(context)
    add_time_zone_accessors(context)
    try:
        return _program(rule).execute(context) is True
    except Exception:
        return False


def is_transition_rule(rule: str) -> bool:
    """A rule about a change (it reads oldSelf): the apiserver checks it on updates only, and
    a manifest read outside a cluster has no old object to hold it to."""
    return "oldSelf" in rule


# --- Kubernetes' CEL quantity library (k8s.io/apiserver/pkg/cel/library/quantity.go) -----------
# quantity("10Gi").compareTo(quantity(oldSelf.size)) >= 0 and the like. A quantity is carried
# through CEL as a tagged string of its exact value: equal quantities are equal values
# whatever their spelling ("1Gi" and "1024Mi").

_QUANTITY_TAG = "k8s.quantity:"


def _as_quantity(text: str) -> str:
    return f"{_QUANTITY_TAG}{parse_quantity(text).normalize()}"


def _value(quantity: str) -> Decimal:
    if not isinstance(quantity, str) or not quantity.startswith(_QUANTITY_TAG):
        raise TypeError(f"{quantity!r} is not a quantity")
    return Decimal(quantity.removeprefix(_QUANTITY_TAG))


def _compare(a: str, b: str) -> int:
    left, right = _value(a), _value(b)
    return (left > right) - (left < right)


def _is_quantity(text: str) -> bool:
    try:
        parse_quantity(text)
    except (TypeError, ValueError):
        return False
    return True


def add_quantity_library(context: Any) -> None:
    """The quantity functions the API's rules use, as Kubernetes defines them."""
    context.add_function("quantity", _as_quantity)
    context.add_function("isQuantity", _is_quantity)
    context.add_function("compareTo", _compare)
    context.add_function("isGreaterThan", lambda a, b: _compare(a, b) > 0)
    context.add_function("isLessThan", lambda a, b: _compare(a, b) < 0)
    context.add_function("sign", lambda a: (_value(a) > 0) - (_value(a) < 0))
    context.add_function("asApproximateFloat", lambda a: float(_value(a)))


# --- CEL's timestamp accessors in a time zone (cel-go: getFullYear(tz) & co.) ------------------
# timestamp('2000-01-01T00:00:00Z').getFullYear(self.timeZone) is an evaluation error for a name
# the time zone database does not hold (the apiserver's, the one its CronJob validation reads):
# the one way a rule can check a time zone, and the error names it. The `cel` package has no
# timestamp accessors; this is the one the API's rules use. (cel-go also reads "+01:00" as a
# fixed offset; the rules refuse a ':' before asking.)


def _full_year(timestamp: datetime, zone: str = "UTC") -> int:
    try:
        found = ZoneInfo(zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {zone}") from None  # Go's time.LoadLocation's
    return timestamp.astimezone(found).year


def add_time_zone_accessors(context: Any) -> None:
    context.add_function("getFullYear", _full_year)
