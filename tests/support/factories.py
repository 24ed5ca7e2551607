"""Test objects: Evaluations as a user would write them, and Job/Pod states as Kubernetes
would report them."""

from __future__ import annotations

import copy
import json
from typing import Any

from eval_api.shard import ScoreSums, ShardSummary, ShardUsage
from eval_operator.runplan import RUN_PLAN_ANNOTATION, RunPlan

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


JOB_UID = "9c1d0e2f-0000-4000-8000-00000000j0b5"


def plan(
    run: str,
    *,
    shards: int = 1,
    scorers: tuple[str, ...] = ("exact_match", "numeric"),
    thresholds: tuple[str, ...] = ("exact_match >= 0.8",),
    generation: int = 1,
    dataset: str = "builtin arithmetic",
) -> RunPlan:
    return RunPlan(
        dataset=dataset,
        spec_hash="0" * 64,
        generation=generation,
        config_map=f"{run}-00000000",
        shards=shards,
        scorers=list(scorers),
        thresholds=list(thresholds),
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
    job_uid: str = JOB_UID,
    waiting: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A runner pod as Kubernetes reports it (what the operator's pod watch receives)."""
    state: dict[str, Any] = {"running": {"startedAt": created}}
    if waiting is not None:
        state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
    if termination is not None or phase in ("Succeeded", "Failed"):
        state = {"terminated": {"exitCode": exit_code}}
        if termination is not None:
            state["terminated"]["message"] = termination.to_message()
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{run}-{index}-{attempt}",
            "namespace": "default",
            "creationTimestamp": created,
            "labels": {"evals.io/evaluation": "quick", "evals.io/run": run},
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": run, "uid": job_uid,
                 "controller": True}
            ],
        },
        "spec": {
            "containers": [
                {"name": "runner", "ports": [{"name": "http-progress", "containerPort": port}]}
            ]
        },
        "status": {
            "phase": phase,
            "podIP": pod_ip,
            "containerStatuses": [{"name": "runner", "state": state}],
        },
    }  # fmt: skip


def job(
    run: str,
    *,
    active: int = 0,
    complete: bool = False,
    failed: bool = False,
    suspend: bool = False,
    failed_indexes: str | None = None,
    completed_indexes: str | None = None,
    run_plan: RunPlan | None = None,
) -> dict[str, Any]:
    """A runner Job as the operator's Job index keeps it."""
    conditions = []
    if complete:
        conditions.append(
            {"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-23T10:05:00Z"}
        )
    if failed:
        conditions.append(
            {
                "type": "Failed",
                "status": "True",
                "reason": "FailedIndexes",
                "message": "Job has failed indexes",
                "lastTransitionTime": "2026-11-23T10:05:00Z",
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
    if completed_indexes:
        status["completedIndexes"] = completed_indexes
    the_plan = run_plan or plan(run)
    return {
        "metadata": {
            "name": run,
            "uid": JOB_UID,
            "annotations": {RUN_PLAN_ANNOTATION: the_plan.to_annotation()},
        },
        "spec": {"suspend": suspend, "completions": the_plan.shards},
        "status": status,
    }


def termination_json(s: ShardSummary) -> dict[str, Any]:
    return json.loads(s.to_message())


def with_status(
    ev: dict[str, Any],
    *,
    run: str = "quick-abc123",
    now: str = "2026-11-23T10:10:00Z",
    job: dict[str, Any] | None = None,
    pods: list[dict[str, Any]] = (),  # type: ignore[assignment]
    **observed: Any,
) -> dict[str, Any]:
    """`ev` with the status the operator computes from this observation (pods as Kubernetes
    reports them, the Job as the operator's index keeps it, the plan read from the Job)."""
    from eval_operator.pods import pod_view
    from eval_operator.status import Observation, desired_status

    ev = copy.deepcopy(ev)
    obs = Observation(
        run=run,
        rerun_token=(ev["metadata"].get("annotations") or {}).get("evals.io/rerun"),
        generation=ev["metadata"]["generation"],
        now=now,
        cancel=bool(ev["spec"].get("cancel")),
        job=job,
        plan=RunPlan.from_annotations(job["metadata"]["annotations"]) if job else None,
        pods=[pod_view(p) for p in pods],
        **observed,
    )
    ev["status"] = desired_status(ev.get("status") or {}, obs).status
    return ev


def make_job(ev: dict[str, Any], run: str, settings: Any) -> dict[str, Any]:
    """The Job the operator builds for `ev`'s run, from its spec and plan."""
    from eval_api.v1alpha1 import EvaluationSpec
    from eval_operator.builders.job import build_job

    spec = EvaluationSpec.model_validate(ev["spec"])
    the_plan = RunPlan.of(spec, ev["spec"], ev["metadata"]["generation"], run)
    return build_job(ev, spec, run, the_plan, settings)


def make_run_config(ev: dict[str, Any], run: str) -> dict[str, Any]:
    from eval_api.v1alpha1 import EvaluationSpec
    from eval_operator.builders.job import build_run_config

    spec = EvaluationSpec.model_validate(ev["spec"])
    return build_run_config(
        ev, run, RunPlan.of(spec, ev["spec"], ev["metadata"]["generation"], run)
    )


def storage_class(name: str, *, expandable: bool, default: bool = False) -> dict[str, Any]:
    """A StorageClass (local-path's provisioner, as kind has), growing volumes or not."""
    sc: dict[str, Any] = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "rancher.io/local-path",
        "allowVolumeExpansion": expandable,
    }
    if default:
        sc["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    return sc
