"""Conditions in the shape of the Kubernetes API conventions (metav1.Condition)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Return the list with one condition replaced or added.

    lastTransitionTime moves only when status changes: tools (kstatus, Argo CD, users watching
    `kubectl get -w`) read it as "since when", not "last written".
    """
    previous = _find(conditions, type_)
    transition = now
    if (
        previous is not None
        and previous.get("status") == status
        and previous.get("lastTransitionTime")
    ):
        transition = previous["lastTransitionTime"]
    updated = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }
    return [c for c in conditions if c.get("type") != type_] + [updated]


def condition_of(status: Mapping[str, Any], type_: str) -> dict[str, Any]:
    """The condition of that type in a status, or {} when it has none."""
    return _find(status.get("conditions") or [], type_) or {}


def _find(conditions: Iterable[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)
