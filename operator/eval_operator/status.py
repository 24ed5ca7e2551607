"""Evaluation status as a pure function of what the operator observed.

Level-based: given the Evaluation, its run's Job, the Job's pods and the pods' live progress,
compute the whole status. Calling it twice with the same observation gives the same status, so
replayed events and operator restarts are harmless.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from eval_api.aggregate import aggregate
from eval_api.shard import ShardSummary
from eval_api.v1alpha1 import RERUN_ANNOTATION, EvaluationSpec
from eval_api.verdict import judge_thresholds
from eval_operator import conditions as cond
from eval_operator.builders.job import CONTAINER_NAME

TERMINAL_PHASES = ("Succeeded", "Failed")
# How long a finished Job may wait for its pods' final states to be observed.
SETTLE_GRACE_SECONDS = 30
# Above this fraction of errored samples among the finished ones, the Ready and Progressing
# messages say so (documented on status.progress.failed and in the README).
ERRORED_FRACTION_NOTE = 0.05
TOP_ERROR_CLASSES = 3
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


@dataclass
class Observation:
    """Everything one reconcile saw; the input of desired_status()."""

    run: str
    rerun_token: str | None
    now: str
    job: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    live: dict[str, ShardSummary] = field(default_factory=dict)
    # (reason, message) when an input the spec names is missing; the run waits for it.
    blocked: tuple[str, str] | None = None
    # Why the spec can never run as written (found by the operator, beyond what CEL checks).
    invalid: str | None = None


def run_is_finished(status: dict[str, Any], run: str) -> bool:
    """Whether `run` already ran to the end: such a run is never started again."""
    return status.get("jobName") == run and status.get("phase") in TERMINAL_PHASES


def _job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition
    return None


def _termination_summary(pod: dict[str, Any]) -> ShardSummary | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") != CONTAINER_NAME:
            continue
        terminated = (container.get("state") or {}).get("terminated") or {}
        message = terminated.get("message")
        if message:
            try:
                return ShardSummary.model_validate(json.loads(message))
            except (ValueError, ValidationError):
                return None  # not ours (e.g. OOMKilled leaves no message): no summary
    return None


def _pod_index(pod: dict[str, Any]) -> int | None:
    annotations = pod["metadata"].get("annotations") or {}
    labels = pod["metadata"].get("labels") or {}
    raw = annotations.get(COMPLETION_INDEX_ANNOTATION) or labels.get(COMPLETION_INDEX_ANNOTATION)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _attempt_order(pod: dict[str, Any]) -> tuple[str, int, str]:
    """Later attempts sort last. creationTimestamp has one-second resolution, so on a tie the
    failed pod is the older one: an index is only retried after its attempt failed."""
    failed = (pod.get("status") or {}).get("phase") == "Failed"
    meta = pod["metadata"]
    return (meta.get("creationTimestamp") or "", 0 if failed else 1, meta["name"])


def latest_attempts(pods: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The latest pod of each shard index: a retry starts its shard over."""
    latest: dict[int, dict[str, Any]] = {}
    for pod in pods:
        index = _pod_index(pod)
        if index is None:
            continue
        current = latest.get(index)
        if current is None or _attempt_order(pod) > _attempt_order(current):
            latest[index] = pod
    return latest


def shard_summaries(
    pods: list[dict[str, Any]], live: dict[str, ShardSummary]
) -> dict[int, ShardSummary]:
    """The current summary of each shard, from its latest attempt."""
    summaries: dict[int, ShardSummary] = {}
    for index, pod in latest_attempts(pods).items():
        summary = _termination_summary(pod) or live.get(pod["metadata"]["name"])
        if summary is not None:
            summaries[index] = summary
    return summaries


def _pods_settled(job: dict[str, Any], pods: list[dict[str, Any]], now: str) -> bool:
    """Whether the pods' final states have reached us after the Job finished.

    Jobs and pods arrive on separate watch streams, so the Job's Complete or Failed can be seen
    before the last pod's termination message; judging then would drop that shard's results.
    The wait is bounded: a shard whose pod is gone for good (deleted, garbage-collected) must
    not hold the run open forever.
    """
    latest = latest_attempts(pods)
    job_status = job.get("status") or {}
    expected = set(_index_set(job_status.get("completedIndexes")))
    if expected <= set(latest) and all(
        (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") for pod in latest.values()
    ):
        return True
    finished = job_status.get("completionTime") or next(
        (
            c.get("lastTransitionTime")
            for c in job_status.get("conditions") or []
            if c.get("type") == "Failed" and c.get("status") == "True"
        ),
        None,
    )
    if not finished:
        return True
    return _seconds_between(finished, now) >= SETTLE_GRACE_SECONDS


def _index_set(ranges: str | None) -> list[int]:
    """Kubernetes' compressed index form: "0-2,5" -> [0, 1, 2, 5]."""
    indexes: list[int] = []
    for part in (ranges or "").split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        indexes.extend(range(int(low), int(high or low) + 1))
    return indexes


def _seconds_between(earlier: str, later: str) -> float:
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    return (parse(later) - parse(earlier)).total_seconds()


def _failure(job: dict[str, Any], summaries: dict[int, ShardSummary]) -> tuple[str, str]:
    """Reason and message of a failed run, preferring what the runner said over the Job's."""
    errors = sorted((index, s) for index, s in summaries.items() if s.state == "error" and s.reason)
    if errors:
        index, summary = errors[0]
        return (
            summary.reason or "RunnerError",
            f"shard {index}: {summary.message or summary.reason}",
        )
    failed = _job_condition(job, "Failed") or {}
    reason = failed.get("reason") or "JobFailed"
    message = failed.get("message") or "the runner Job failed"
    indexes = (job.get("status") or {}).get("failedIndexes")
    if indexes:
        message = f"{message} (failed shards: {indexes})"
    return reason, message


def errored_note(completed: int, failed: int, errors: dict[str, int]) -> str:
    """ " N of M finished samples errored (x%): class=n, ..." when above ERRORED_FRACTION_NOTE."""
    finished = completed + failed
    if not finished or failed / finished <= ERRORED_FRACTION_NOTE:
        return ""
    top = sorted(errors.items(), key=lambda item: (-item[1], item[0]))[:TOP_ERROR_CLASSES]
    classes = ", ".join(f"{name}={count}" for name, count in top)
    return (
        f" {failed} of {finished} finished samples errored ({100 * failed / finished:.1f}%, "
        f"never scored){': ' + classes if classes else ''}."
    )


def _passed(spec: EvaluationSpec, results: list[dict[str, Any]]) -> tuple[str, str, str]:
    verdict = judge_thresholds(spec.thresholds, {r["name"]: r["value"] for r in results})
    return ("True" if verdict.passed else "False"), verdict.reason, verdict.message


def desired_status(evaluation: dict[str, Any], obs: Observation) -> dict[str, Any]:
    meta = evaluation["metadata"]
    generation = meta.get("generation")
    old = dict(evaluation.get("status") or {})
    conditions: list[dict[str, Any]] = list(old.get("conditions") or [])

    def set_(type_: str, status: str, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = cond.set_condition(
            conditions, type_, status, reason, message, generation, obs.now
        )

    status: dict[str, Any] = {"observedGeneration": generation}
    same_run = old.get("jobName") == obs.run
    if same_run:
        for key in ("progress", "results", "usage", "startTime", "completionTime", "runGeneration"):
            if key in old:
                status[key] = old[key]
    status["jobName"] = obs.run
    status["rerunToken"] = obs.rerun_token
    if obs.job is None and not run_is_finished(old, obs.run):
        # Not started yet: the Job about to be created freezes the current spec.
        status["runGeneration"] = generation
    status.setdefault("runGeneration", generation)

    if obs.invalid is not None:
        status.update(phase="Failed")
        set_("Ready", "False", "InvalidSpec", obs.invalid)
        set_("Progressing", "False", "InvalidSpec", obs.invalid)
        set_("Succeeded", "False", "InvalidSpec", obs.invalid)
        set_("Stalled", "True", "InvalidSpec", obs.invalid)
        set_("Passed", "False", "InvalidSpec", "the spec is invalid")
        status["conditions"] = conditions
        return status

    spec = EvaluationSpec.model_validate(evaluation["spec"])
    scorer_names = [s.effective_name for s in spec.task.scorers]
    finished_before = run_is_finished(old, obs.run)
    summaries = shard_summaries(obs.pods, obs.live)
    errors_note = ""
    if summaries:
        agg = aggregate(list(summaries.values()), scorer_names)
        errors_note = errored_note(agg.progress.completed, agg.progress.failed, agg.errors)
        expected = spec.execution.shards
        progress = agg.progress.model_dump(by_alias=True)
        if len(summaries) < expected and not finished_before:
            progress["summary"] = f"{agg.progress.completed + agg.progress.failed}/?"
        status["progress"] = progress
        status["results"] = [r.model_dump(by_alias=True) for r in agg.results]
        status["usage"] = agg.usage.model_dump(by_alias=True, exclude_none=True)

    job = obs.job
    if finished_before:
        phase = old["phase"]
    elif spec.cancel:
        phase = "Failed"
    elif job is None:
        phase = "Pending"
    elif _job_condition(job, "Complete") or _job_condition(job, "Failed"):
        if not _pods_settled(job, obs.pods, obs.now):
            phase = "Running"  # finishing: the last shards' summaries are on their way
        elif _job_condition(job, "Complete"):
            phase = "Succeeded"
        else:
            phase = "Failed"
    elif job["spec"].get("suspend"):
        phase = "Pending"
    elif (job.get("status") or {}).get("active") or summaries:
        phase = "Running"
    else:
        phase = "Pending"
    status["phase"] = phase

    if job is not None:
        job_status = job.get("status") or {}
        status["startTime"] = status.get("startTime") or job_status.get("startTime") or obs.now
        if phase in TERMINAL_PHASES and not status.get("completionTime"):
            status["completionTime"] = job_status.get("completionTime") or obs.now
    elif phase in TERMINAL_PHASES and not status.get("completionTime"):
        status["completionTime"] = obs.now

    spec_note = ""
    run_generation = status.get("runGeneration")
    if generation is not None and run_generation is not None and generation > run_generation:
        spec_note = (
            f" The spec changed after this run started (generation {run_generation} -> "
            f"{generation}); set annotation {RERUN_ANNOTATION} to a new value to run it again."
        )

    if finished_before:
        # Keep the verdict of the finished run; only the spec note may change.
        for c in conditions:
            if c["type"] == "Ready":
                base = c["message"].split(" The spec changed after")[0]
                c["message"] = base + spec_note
            c["observedGeneration"] = generation
        status["conditions"] = conditions
        return status

    if phase == "Succeeded":
        message = "the run finished" + errors_note + spec_note
        set_("Ready", "True", "Succeeded", message)
        set_("Progressing", "False", "Succeeded", "the run finished" + errors_note)
        set_("Succeeded", "True", "Succeeded", "all shards finished")
        set_("Stalled", "False", "Succeeded", "")
        set_("Passed", *_passed(spec, status.get("results") or []))
    elif phase == "Failed":
        if spec.cancel:
            reason, message = "Cancelled", "spec.cancel is true: the run was stopped"
        else:
            reason, message = _failure(job or {}, summaries)
            message += errors_note
        set_("Ready", "False", reason, message + spec_note)
        set_("Progressing", "False", reason, message)
        set_("Succeeded", "False", reason, message)
        set_("Stalled", "True", reason, message)
        set_("Passed", "False", "RunFailed", "the run failed, thresholds were not judged")
    else:
        if obs.blocked is not None:
            reason, message = obs.blocked
            progressing = ("False", reason, message)
        elif job is None:
            reason, message = "Creating", "creating the runner Job"
            progressing = ("True", reason, message)
        elif job["spec"].get("suspend"):
            reason, message = "Suspended", "spec.suspend is true: the Job is suspended"
            progressing = ("False", reason, message)
        elif phase == "Running":
            done = (status.get("progress") or {}).get("summary") or "starting"
            reason, message = "Running", f"{done} samples done" + errors_note
            progressing = ("True", reason, message)
        else:
            reason, message = "Pending", "waiting for runner pods to start"
            progressing = ("True", reason, message)
        set_("Ready", "False", reason, message + spec_note)
        set_("Progressing", *progressing)
        set_("Succeeded", "Unknown", reason, message)
        set_("Stalled", "False", reason, "")
        set_("Passed", "Unknown", reason, "the run has not finished")

    status["conditions"] = conditions
    return status
