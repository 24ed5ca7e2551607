"""Test objects: Evaluations as a user would write them, and Job/Pod states as Kubernetes
would report them."""

from __future__ import annotations

import copy
import json
from typing import Any

from eval_api.shard import ScoreSums, ShardSummary, ShardUsage

BASE_SPEC: dict[str, Any] = {
    "model": {
        "provider": "openai",
        "name": "demo",
        "baseURL": "http://model.models.svc:8000/v1",
        "apiKeySecretRef": {"name": "model-key", "key": "api-key"},
    },
    "dataset": {"builtin": "arithmetic"},
    "task": {
        "promptTemplate": "What is {{ input }}? Answer with the number only.",
        "scorers": [{"type": "exact_match"}, {"type": "numeric", "tolerance": "0"}],
    },
    "thresholds": ["exact_match >= 0.8"],
}


def evaluation(
    name: str = "quick",
    namespace: str = "default",
    spec: dict[str, Any] | None = None,
    uid: str = "0b9a2c1e-0000-4000-8000-000000000001",
    generation: int = 1,
    status: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "Evaluation",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "generation": generation,
            "annotations": annotations or {},
            "labels": labels or {},
        },
        "spec": copy.deepcopy(spec if spec is not None else BASE_SPEC),
        "status": status or {},
    }


def summary(
    shard: int,
    correct: int,
    total: int,
    *,
    shards: int = 1,
    state: str = "done",
    failed: int = 0,
    reason: str | None = None,
    message: str | None = None,
) -> ShardSummary:
    """A shard where `correct` of `total - failed` scored samples got 1.0 on both scorers."""
    scored = total - failed if state == "done" else correct
    sums = ScoreSums(n=scored, sum=float(correct), sumsq=float(correct))
    return ShardSummary(
        shard=shard,
        shards=shards,
        state=state,
        total=total,
        completed=scored,
        failed=failed,
        scores={"exact_match": sums, "numeric": sums.model_copy()},
        usage=ShardUsage(requests=total, input_tokens=10 * total, output_tokens=2 * total),
        reason=reason,
        message=message,
    )


def pod(
    run: str,
    index: int,
    *,
    phase: str = "Running",
    attempt: int = 0,
    created: str = "2026-11-23T10:00:00Z",
    termination: ShardSummary | None = None,
    exit_code: int = 0,
    pod_ip: str = "10.0.0.1",
    port: int = 9090,
) -> dict[str, Any]:
    """A runner pod in the minimal form the operator's pod index keeps."""
    state: dict[str, Any] = {"running": {"startedAt": created}}
    if termination is not None or phase in ("Succeeded", "Failed"):
        state = {"terminated": {"exitCode": exit_code}}
        if termination is not None:
            state["terminated"]["message"] = termination.to_message()
    return {
        "metadata": {
            "name": f"{run}-{index}-{attempt}",
            "creationTimestamp": created,
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {
            "phase": phase,
            "podIP": pod_ip,
            "containerStatuses": [{"name": "runner", "state": state}],
        },
        "progressPort": port,
    }


def job(
    run: str,
    *,
    active: int = 0,
    complete: bool = False,
    failed: bool = False,
    suspend: bool = False,
    failed_indexes: str | None = None,
) -> dict[str, Any]:
    conditions = []
    if complete:
        conditions.append({"type": "Complete", "status": "True"})
    if failed:
        conditions.append(
            {
                "type": "Failed",
                "status": "True",
                "reason": "FailedIndexes",
                "message": "Job has failed indexes",
            }
        )
    status: dict[str, Any] = {
        "active": active,
        "startTime": "2026-11-23T10:00:00Z",
        "conditions": conditions,
    }
    if complete:
        status["completionTime"] = "2026-11-23T10:05:00Z"
    if failed_indexes:
        status["failedIndexes"] = failed_indexes
    return {"metadata": {"name": run}, "spec": {"suspend": suspend}, "status": status}


def termination_json(s: ShardSummary) -> dict[str, Any]:
    return json.loads(s.to_message())
