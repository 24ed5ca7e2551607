"""The ledger of a budgeted run: what the ended attempts of each shard spent.

A pure function of the run's pods, written to the run's ledger ConfigMap by the reconcile
(only once a shard has a failed attempt, the only case a retry can follow, and only when it
changed). See eval_api.ledger for how a retry uses it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from eval_api.ledger import Ledger, Spent
from eval_operator.status import termination_summary


def _ran(pod: dict[str, Any]) -> bool:
    """Whether the runner container ever started (it may then have sent requests)."""
    state = (pod.get("runner") or {}).get("state") or {}
    return bool((state.get("terminated") or {}).get("startedAt") or state.get("running"))


def ledger_of(pods: list[dict[str, Any]]) -> Ledger:
    """Per shard with a failed attempt: its ended attempts, and at most what they spent."""
    ended: dict[int, list[dict[str, Any]]] = {}
    retried: set[int] = set()
    for pod in pods:
        terminated = (pod.get("runner") or {}).get("state", {}).get("terminated")
        if pod.get("index") is None or not (terminated or pod["phase"] in ("Succeeded", "Failed")):
            continue
        ended.setdefault(pod["index"], []).append(pod)
        if pod["phase"] == "Failed":
            retried.add(pod["index"])
    entries: dict[str, Spent] = {}
    for index in sorted(retried):
        cost, requests, unknown = Decimal(0), 0, False
        for pod in ended[index]:
            summary = termination_summary(pod)
            if summary is not None:
                attempt_cost, attempt_requests = summary.spent()
                cost += attempt_cost
                requests += attempt_requests
            elif _ran(pod):
                unknown = True  # it ran and left nothing: its spending cannot be known
        entries[str(index)] = Spent(
            attempts=len(ended[index]),
            cost_usd=format(cost.normalize(), "f"),
            requests=requests,
            unknown=unknown,
        )
    return Ledger(entries)
