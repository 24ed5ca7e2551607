"""
The apiserver's semantic validation of pod specs (pods and every pod template: Jobs,
Deployments, StatefulSets, CronJobs...), the part operators run into.

The Go types' schemas catch wrong types and unknown fields; these are the rules beyond them
that a controller's generated object can still break, with the apiserver's field paths and
messages (k8s.io/kubernetes pkg/apis/core/validation): containers and their names, resource
quantities and requests above limits, nodeSelector labels, and tolerations.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import FieldError

_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_NAME_PART_MESSAGE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def parse_quantity(value: Any) -> Decimal | None:
    """A resource.Quantity's value, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    match = _QUANTITY.match(value)
    if match is None:
        return None
    try:
        number = Decimal(match["number"])
    except InvalidOperation:
        return None
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(Decimal(suffix[1:])))  # an exponent: 1e3


def _qualified_name_errors(key: str, path: str) -> list[FieldError]:
    prefix, _, name = key.rpartition("/")
    errors = []
    if not name or len(name) > 63 or not _NAME_PART.match(name):
        errors.append(FieldError(path, "Invalid", key, _NAME_PART_MESSAGE))
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        errors.append(
            FieldError(path, "Invalid", key, "prefix part a lowercase RFC 1123 subdomain")
        )
    return errors


def _resources(resources: Any, path: str) -> list[FieldError]:
    if not isinstance(resources, dict):
        return []
    errors: list[FieldError] = []
    parsed: dict[str, dict[str, Decimal]] = {}
    for section in ("limits", "requests"):
        for name, value in (resources.get(section) or {}).items():
            quantity = parse_quantity(value)
            where = f"{path}.{section}[{name}]"
            if quantity is None:
                errors.append(
                    FieldError(
                        where, "Invalid", value, "must match the regular expression of a quantity"
                    )
                )
            elif quantity < 0:
                errors.append(
                    FieldError(where, "Invalid", value, "must be greater than or equal to 0")
                )
            else:
                parsed.setdefault(section, {})[name] = quantity
    for name, request in (parsed.get("requests") or {}).items():
        limit = (parsed.get("limits") or {}).get(name)
        if limit is not None and request > limit:
            errors.append(
                FieldError(
                    f"{path}.requests",
                    "Invalid",
                    resources["requests"][name],
                    f"must be less than or equal to {name} limit of {resources['limits'][name]}",
                )
            )
    return errors


def validate_pod_spec(spec: Any, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    containers = spec.get("containers") if isinstance(spec, dict) else None
    if not containers or not isinstance(containers, list):
        return [FieldError(f"{path}.containers", "Required")]
    for i, container in enumerate(containers):
        where = f"{path}.containers[{i}]"
        if not isinstance(container, dict):
            errors.append(FieldError(where, "Required"))
            continue
        name = container.get("name")
        if not name:
            errors.append(FieldError(f"{where}.name", "Required"))
        elif not _DNS_LABEL.match(name) or len(name) > 63:
            errors.append(
                FieldError(
                    f"{where}.name",
                    "Invalid",
                    name,
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-'",
                )
            )
        if not container.get("image"):
            errors.append(FieldError(f"{where}.image", "Required"))
        errors.extend(_resources(container.get("resources"), f"{where}.resources"))
    for key, value in (spec.get("nodeSelector") or {}).items():
        errors.extend(_qualified_name_errors(key, f"{path}.nodeSelector"))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            errors.append(
                FieldError(
                    f"{path}.nodeSelector",
                    "Invalid",
                    value,
                    "a valid label must be an empty string or consist of alphanumeric "
                    "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                    "character",
                )
            )
    for i, toleration in enumerate(spec.get("tolerations") or []):
        where = f"{path}.tolerations[{i}]"
        if not isinstance(toleration, dict):
            continue
        operator = toleration.get("operator") or "Equal"
        if operator == "Exists" and toleration.get("value"):
            errors.append(
                FieldError(
                    f"{where}.operator",
                    "Invalid",
                    operator,
                    "value must be empty when `operator` is 'Exists'",
                )
            )
        if not toleration.get("key") and operator != "Exists":
            errors.append(
                FieldError(
                    f"{where}.operator",
                    "Invalid",
                    operator,
                    'operator must be Exists when `key` is empty, which means "match all '
                    'values and all keys"',
                )
            )
    return errors
