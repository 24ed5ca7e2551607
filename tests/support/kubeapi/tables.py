"""
Server-side printing: the meta.k8s.io/v1 Table that `kubectl get` asks for.

kubectl sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io, ...` and prints the
columns the server defines. For custom resources those are Name plus the CRD's
additionalPrinterColumns, their cells found by JSONPath and typed as the apiextensions
apiserver does (dates as a human age, numbers as numbers, strings printed); a CRD without
printer columns gets Name and Age. Built-in kinds get Name and Age here (the real apiserver
has a printer per kind: an approximation).

The JSONPath subset is what printer columns use: `.a.b`, `[N]`, `[?(@.key=="value")]`.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

_STEP = re.compile(r'\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_]+)\s*==\s*"([^"]*)"\)\]')


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def jsonpath(obj: Any, path: str) -> list[Any]:
    """The values `path` finds in `obj` (several after a filter)."""
    values = [obj]
    position = 0
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {path[position:]!r}")
        field, index, key, wanted = match.groups()
        found: list[Any] = []
        for value in values:
            if field is not None and isinstance(value, dict) and field in value:
                found.append(value[field])
            elif index is not None and isinstance(value, list) and int(index) < len(value):
                found.append(value[int(index)])
            elif key is not None and isinstance(value, list):
                found.extend(v for v in value if isinstance(v, dict) and str(v.get(key)) == wanted)
        values = found
        position = match.end()
    return values


def human_age(timestamp: str, now: datetime.datetime | None = None) -> str:
    """metav1's HumanDuration of the time since `timestamp`, as in `kubectl get`'s AGE."""
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    seconds = int(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds())
    if seconds < -1:
        return "<invalid>"
    seconds = max(seconds, 0)
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    return f"{years}y{days % 365}d" if days % 365 and years < 8 else f"{years}y"


_NAME = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _cell(column: dict[str, Any], obj: dict[str, Any]) -> Any:
    values = jsonpath(obj, column["jsonPath"])
    if not values or values[0] is None:
        return None
    value, kind = values[0], column.get("type")
    if kind == "date":
        return human_age(value) if isinstance(value, str) else "<invalid>"
    if (
        kind in ("number", "integer")
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        return int(value) if kind == "integer" else value
    if kind == "boolean" and isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value
    return str(value).lower() if isinstance(value, bool) else str(value)


def table(items: list[dict[str, Any]], columns: list[dict[str, Any]], metadata: dict) -> dict:
    """A Table of `items` with Name and the given printer columns (Name and Age if none)."""
    columns = columns or [_AGE]
    definitions = [_NAME] + [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in columns
    ]
    rows = []
    for obj in items:
        meta = obj.get("metadata") or {}
        rows.append(
            {
                "cells": [meta.get("name")] + [_cell(c, obj) for c in columns],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": meta,
                },
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    }
