"""Evaluation status as a pure function of what the operator observed.

Level-based: given the old status and one observation (the run's Job and its plan, the Job's
trusted pods, their live progress, the current time), compute the whole status. The same
observation gives the same status, so replayed events and operator restarts are harmless, and
nothing but a real change ever produces a different status (no timestamps move on their own).

A run is judged by its plan (the spec it was started from, carried by its Job), never by the
live spec. Scores and progress come from the latest attempt of each shard (a retry starts its
shard over); usage and cost from every attempt, because every attempt was paid for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from eval_api.aggregate import Aggregate, aggregate, progress_summary
from eval_api.earlystop import evaluate as evaluate_early_stop
from eval_api.earlystop import regression_decision, rounded, stopped_early
from eval_api.shard import BaselineSums, ShardSummary, ShardUsage
from eval_api.v1alpha1.common import RERUN_ANNOTATION
from eval_api.v1alpha1.evaluation import Usage
from eval_api.verdict import judge_thresholds
from eval_operator import conditions as cond
from eval_operator.runplan import RunPlan

TERMINAL_PHASES = ("Succeeded", "Failed")
# How long a finished Job may wait for its pods' final states to be observed.
SETTLE_GRACE_SECONDS = 30
SPEC_CHANGED_MARK = "; the spec changed after this run started"


@dataclass
class Observation:
    """Everything one reconcile saw; the input of desired_status()."""

    run: str
    rerun_token: str | None
    generation: int
    now: str
    cancel: bool = False
    # Why the live spec cannot start a run (found by the schema or the operator's checks).
    spec_problem: str | None = None
    # (reason, message) when an input the spec names is missing; the run waits for it.
    blocked: tuple[str, str] | None = None
    # The apiserver's message when it rejected the run's Job (422); retried on a spec change.
    job_rejected: str | None = None
    job: dict[str, Any] | None = None
    plan: RunPlan | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    live: dict[str, ShardSummary] = field(default_factory=dict)
    # (reason, message) when a pod waits for something only the user can fix.
    stuck: tuple[str, str] | None = None


@dataclass
class Outcome:
    status: dict[str, Any]
    # Reconcile again after this many seconds even if nothing changes (a bounded wait ends).
    recheck_after: float | None = None


def run_started(status: dict[str, Any], run: str) -> bool:
    """Whether `run`'s Job was ever observed: from then on the run follows its frozen plan."""
    return status.get("jobName") == run and bool(status.get("startTime"))


def run_is_finished(status: dict[str, Any], run: str) -> bool:
    """Whether `run` ran to the end: such a run is never started again."""
    return run_started(status, run) and status.get("phase") in TERMINAL_PHASES


def _job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition
    return None


def termination_summary(pod: dict[str, Any]) -> ShardSummary | None:
    terminated = (pod.get("runner") or {}).get("state", {}).get("terminated") or {}
    message = terminated.get("message")
    if not message:
        return None
    try:
        return ShardSummary.model_validate(json.loads(message))
    except (ValueError, ValidationError):
        return None  # not ours (another image, or a message cut short): no summary


def _terminated(pod: dict[str, Any]) -> bool:
    return bool((pod.get("runner") or {}).get("state", {}).get("terminated")) or pod["phase"] in (
        "Succeeded",
        "Failed",
    )


def _attempt_order(pod: dict[str, Any]) -> tuple[str, int, str]:
    """Later attempts sort last. creationTimestamp has one-second resolution, so on a tie the
    failed pod is the older one: an index is only retried after its attempt failed."""
    failed = pod.get("phase") == "Failed"
    return (pod.get("creationTimestamp") or "", 0 if failed else 1, pod["name"])


def latest_attempts(pods: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The latest pod of each shard index: a retry starts its shard over."""
    latest: dict[int, dict[str, Any]] = {}
    for pod in pods:
        index = pod.get("index")
        if index is None:
            continue
        current = latest.get(index)
        if current is None or _attempt_order(pod) > _attempt_order(current):
            latest[index] = pod
    return latest


def _summary_of(pod: dict[str, Any], live: dict[str, ShardSummary]) -> ShardSummary | None:
    return termination_summary(pod) or live.get(pod["name"])


def _index_set(ranges: str | None) -> set[int]:
    """Kubernetes' compressed index form: "0-2,5" -> {0, 1, 2, 5}."""
    indexes: set[int] = set()
    for part in (ranges or "").split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        indexes.update(range(int(low), int(high or low) + 1))
    return indexes


def _seconds_between(earlier: str, later: str) -> float:
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return (parse(later) - parse(earlier)).total_seconds()


def _finished_at(job: dict[str, Any]) -> str | None:
    job_status = job.get("status") or {}
    for type_ in ("Complete", "Failed"):
        condition = _job_condition(job, type_)
        if condition is not None:
            return condition.get("lastTransitionTime") or job_status.get("completionTime")
    return None


def _unsettled(job: dict[str, Any], latest: dict[int, dict[str, Any]], now: str) -> float | None:
    """Seconds left to wait for the pods' final states after the Job finished, or None.

    Jobs and pods arrive on separate watch streams, so the Job's Complete or Failed can be seen
    before the last pod's termination message; judging then would drop that shard's results.
    The wait is bounded: a shard whose pod is gone for good must not hold the run open.
    """
    job_status = job.get("status") or {}
    expected = _index_set(job_status.get("completedIndexes")) | _index_set(
        job_status.get("failedIndexes")
    )
    if all(index in latest and _terminated(latest[index]) for index in expected):
        return None
    finished = _finished_at(job)
    if not finished:
        return None
    left = SETTLE_GRACE_SECONDS - _seconds_between(finished, now)
    return left if left > 0 else None


def _missing_summary(plan_shards: int, latest: dict[int, dict[str, Any]], live) -> str | None:
    """Why a finished run lacks a shard's summary (it must never count as a success)."""
    for index in range(plan_shards):
        pod = latest.get(index)
        if pod is None:
            return f"shard {index}: no pod of the run's Job was found for it"
        if termination_summary(pod) is None:
            return (
                f"shard {index}: pod {pod['name']} ended without a shard summary in its "
                "termination message (is spec.execution.image an eval-runner image?)"
            )
    return None


def _failure(job: dict[str, Any], summaries: dict[int, ShardSummary]) -> tuple[str, str]:
    """Reason and message of a failed run, preferring what the runner said over the Job's,
    except when the Job ran out of time: its shards then only say they were stopped."""
    failed = _job_condition(job, "Failed") or {}
    if failed.get("reason") == "DeadlineExceeded":
        return "DeadlineExceeded", (
            f"{failed.get('message') or 'the Job was active longer than allowed'} "
            "(spec.execution.activeDeadlineSeconds)"
        )
    errors = sorted((index, s) for index, s in summaries.items() if s.state == "error" and s.reason)
    if errors:
        index, summary = errors[0]
        return (
            summary.reason or "RunnerError",
            f"shard {index}: {summary.message or summary.reason}",
        )
    reason = failed.get("reason") or "JobFailed"
    message = failed.get("message") or "the runner Job failed"
    indexes = (job.get("status") or {}).get("failedIndexes")
    if indexes:
        message = f"{message} (failed shards: {indexes})"
    return reason, message


def _notes(agg: Aggregate) -> str:
    """What the Ready and Progressing messages add: many errored samples, truncated answers."""
    notes = [note for note in (agg.errored_note(), agg.truncated_note()) if note]
    return "".join(f"; {note}" for note in notes)


def _usage(summaries: list[ShardSummary]) -> dict[str, Any]:
    """Usage over every attempt. An attempt that was killed counts what was in flight at its
    last checkpoint at its worst case (it may have been billed)."""
    usage = ShardUsage()
    for summary in summaries:
        reserved = Decimal(summary.reserved_usd or 0)
        if reserved:
            charged = Decimal(summary.usage.cost_usd) + reserved
            summary = summary.model_copy(
                update={"usage": summary.usage.model_copy(update={"cost_usd": str(charged)})}
            )
        usage = usage.merged(summary.usage)
    total = aggregate([ShardSummary(usage=usage)], []).usage
    return Usage.model_validate(total.model_dump()).model_dump(by_alias=True, exclude_none=True)


def spec_changed_note(generation: int, run_generation: int | None) -> str:
    if run_generation is None or generation <= run_generation:
        return ""
    return (
        f"{SPEC_CHANGED_MARK} (generation {run_generation} -> {generation}): it goes on with the "
        f"spec it started with; set annotation {RERUN_ANNOTATION} to a new value to run it again."
    )


class _Conditions:
    """The status' conditions, set one at a time for one generation at one time."""

    def __init__(self, old: list[dict[str, Any]], generation: int, now: str) -> None:
        self.items = list(old)
        self.generation, self.now = generation, now

    def __call__(self, type_: str, status: str, reason: str, message: str) -> None:
        self.items = cond.set_condition(
            self.items, type_, status, reason, message, self.generation, self.now
        )


def desired_status(old: dict[str, Any], obs: Observation) -> Outcome:
    outcome = _desired_status(old, obs)
    # What is stored never holds a null (a merge patch's null deletes the key): a status with
    # one would never equal the stored status, and be written again after every write.
    outcome.status = {k: v for k, v in outcome.status.items() if v is not None}
    return outcome


def _desired_status(old: dict[str, Any], obs: Observation) -> Outcome:
    generation = obs.generation
    set_ = _Conditions(old.get("conditions") or [], generation, obs.now)
    status: dict[str, Any] = {"observedGeneration": generation}
    status["conditions"] = set_.items
    same_run = old.get("jobName") == obs.run
    if same_run:
        for key in (
            "progress", "results", "usage", "startTime", "completionTime", "runGeneration",
            "datasetSource", "taskSource", "stoppedEarly",
        ):  # fmt: skip
            if key in old:
                status[key] = old[key]
    status["jobName"] = obs.run
    status["rerunToken"] = obs.rerun_token
    started = run_started(old, obs.run)

    if run_is_finished(old, obs.run):
        # A finished run keeps its verdict; only the note about later spec changes may change.
        status["phase"] = old["phase"]
        note = spec_changed_note(generation, status.get("runGeneration"))
        set_.items = [
            {
                **c,
                "observedGeneration": generation,
                "message": c["message"].split(SPEC_CHANGED_MARK)[0] + note
                if c["type"] == "Ready"
                else c["message"],
            }
            for c in set_.items
        ]
        status["conditions"] = set_.items
        return Outcome(status)

    job, plan = obs.job, obs.plan
    if job is None:
        if started and not obs.cancel:
            reason = "JobDeleted"
            message = (
                f"the run's Job {obs.run} was deleted before the run finished; set annotation "
                f"{RERUN_ANNOTATION} to a new value to run it again"
            )
            return Outcome(_failed(status, set_, reason, message, obs.now))
        if not started:
            status.pop("startTime", None)
            status.pop("completionTime", None)
            status["runGeneration"] = generation
        if obs.cancel:
            message = "spec.cancel is true: the run was stopped"
            return Outcome(_failed(status, set_, "Cancelled", message, obs.now))
        if obs.spec_problem is not None or obs.job_rejected is not None:
            # Not terminal: no run has started, and fixing the spec starts one.
            reason = "InvalidSpec" if obs.spec_problem is not None else "JobRejected"
            message = (
                obs.spec_problem or f"the apiserver rejected the run's Job: {obs.job_rejected}"
            )
            status["phase"] = "Failed"
            set_("Ready", "False", reason, message)
            set_("Progressing", "False", reason, message)
            set_("Succeeded", "False", reason, message)
            set_("Stalled", "True", reason, message)
            set_("Passed", "False", reason, "no run: the spec must be fixed first")
            status.pop("completionTime", None)
            status["conditions"] = set_.items
            return Outcome(status)
        reason, message = obs.blocked or ("Creating", "creating the runner Job")
        status["phase"] = "Pending"
        set_("Ready", "False", reason, message)
        set_("Progressing", "False" if obs.blocked else "True", reason, message)
        set_("Succeeded", "Unknown", reason, message)
        set_("Stalled", "False", reason, "")
        set_("Passed", "Unknown", reason, "the run has not finished")
        status["conditions"] = set_.items
        return Outcome(status)

    job_status = job.get("status") or {}
    status["startTime"] = status.get("startTime") or job_status.get("startTime") or obs.now
    if plan is not None:
        status["runGeneration"] = plan.generation
        if plan.dataset:
            status["datasetSource"] = plan.dataset
        if plan.task:
            status["taskSource"] = plan.task
    shards = plan.shards if plan is not None else job.get("spec", {}).get("completions", 1)
    scorers = plan.scorers if plan is not None else []
    latest = latest_attempts(obs.pods)
    summaries: dict[int, ShardSummary] = {}
    for index, pod in latest.items():
        summary = _summary_of(pod, obs.live)
        if summary is not None:
            summaries[index] = summary
    agg = aggregate(list(summaries.values()), scorers)
    errors_note = _notes(agg)
    if summaries:
        progress = agg.progress.model_dump(by_alias=True)
        if len(summaries) < shards:
            progress["summary"] = progress_summary(
                agg.progress.completed, agg.progress.failed, None
            )
        status["progress"] = progress
        status["results"] = [r.model_dump(by_alias=True) for r in agg.results]
    if plan is not None and plan.early_stop is not None and summaries:
        max_group = max((s.max_group or 0 for s in summaries.values()), default=0) or None
        # The run's size, as every shard knows it from the dataset: a decision needs no wait
        # for shards not started yet (execution.parallelism), which stop as soon as they start.
        run_total = max((s.run_total or 0 for s in summaries.values()), default=0)
        _early_stop(status, old if same_run else {}, plan, agg, summaries, run_total, max_group)
    every_attempt = [s for s in (_summary_of(p, obs.live) for p in obs.pods) if s is not None]
    if every_attempt:
        status["usage"] = _usage(every_attempt)
    if plan is not None and plan.cached and summaries:
        # A cache that failed never stops a run: the run says so and goes on without it.
        unavailable = sorted(
            {s.cache_unavailable for s in summaries.values() if s.cache_unavailable}
        )
        if unavailable:
            set_("CacheAvailable", "False", "CacheUnavailable", "; ".join(unavailable)[:1024])
        else:
            set_("CacheAvailable", "True", "CacheAvailable", f"EvalSuite {plan.suite}'s cache")
    note = spec_changed_note(generation, status.get("runGeneration"))

    if obs.cancel:
        message = "spec.cancel is true: the run was stopped"
        return Outcome(_failed(status, set_, "Cancelled", message, obs.now, job))

    complete, failed = _job_condition(job, "Complete"), _job_condition(job, "Failed")
    if complete or failed:
        wait = _unsettled(job, latest, obs.now)
        if wait is not None:
            status["phase"] = "Running"
            message = "the Job finished; waiting for the last shard summaries"
            _progressing(set_, "Finishing", message + note, message)
            status["conditions"] = set_.items
            return Outcome(status, recheck_after=wait)
        if complete:
            missing = _missing_summary(shards, latest, obs.live)
            if missing is not None:
                return Outcome(
                    _failed(status, set_, "SummaryMissing", missing + note, obs.now, job)
                )
            too_many = agg.too_many_errors(plan.max_errored_fraction if plan else "0.05")
            if too_many is not None:
                # Errored samples are never silently dropped from a verdict.
                return Outcome(
                    _failed(status, set_, "TooManyErrors", too_many + note, obs.now, job)
                )
            status["phase"] = "Succeeded"
            status["completionTime"] = job_status.get("completionTime") or obs.now
            set_("Ready", "True", "Succeeded", "the run finished" + errors_note + note)
            set_("Progressing", "False", "Succeeded", "the run finished" + errors_note)
            set_("Succeeded", "True", "Succeeded", "all shards finished")
            set_("Stalled", "False", "Succeeded", "")
            results = status.get("results") or []
            verdict = judge_thresholds(
                plan.thresholds if plan is not None else [],
                {r["name"]: r["value"] for r in results if r.get("value") is not None},
            )
            stopped = status.get("stoppedEarly") or {}
            if stopped.get("passed") is not None:
                # Stopped once the verdict was known: that verdict, not the point estimates.
                reason = "ThresholdsMet" if stopped["passed"] else "ThresholdsNotMet"
                set_(
                    "Passed", str(stopped["passed"]), reason, "decided early: " + stopped["message"]
                )
            else:
                set_(
                    "Passed", "True" if verdict.passed else "False", verdict.reason, verdict.message
                )
            status["conditions"] = set_.items
            return Outcome(status)
        reason, message = _failure(job, summaries)
        return Outcome(_failed(status, set_, reason, message + errors_note + note, obs.now, job))

    if obs.stuck is not None:
        reason, message = obs.stuck
        status["phase"] = "Running" if summaries else "Pending"
        set_("Ready", "False", reason, message + note)
        set_("Progressing", "False", reason, message)
        set_("Succeeded", "Unknown", reason, message)
        set_("Stalled", "False", reason, "")
        set_("Passed", "Unknown", reason, "the run has not finished")
    elif job.get("spec", {}).get("suspend"):
        status["phase"] = "Pending"
        reason, message = "Suspended", "the Job is suspended (spec.suspend, or queued by Kueue)"
        set_("Ready", "False", reason, message + note)
        set_("Progressing", "False", reason, message)
        set_("Succeeded", "Unknown", reason, message)
        set_("Stalled", "False", reason, "")
        set_("Passed", "Unknown", reason, "the run has not finished")
    elif job_status.get("active") or summaries:
        status["phase"] = "Running"
        done = (status.get("progress") or {}).get("summary") or "starting"
        message = f"{done} samples done" + errors_note
        _progressing(set_, "Running", message + note, message)
    else:
        status["phase"] = "Pending"
        message = "waiting for runner pods to start"
        _progressing(set_, "Pending", message + note, message)
    status["conditions"] = set_.items
    return Outcome(status)


def _early_stop(
    status: dict[str, Any],
    old: dict[str, Any],
    plan: RunPlan,
    agg: Aggregate,
    summaries: Mapping[int, ShardSummary],
    run_total: int,
    max_group: int | None,
) -> None:
    """execution.earlyStop: every result's confidence-sequence interval (csInterval) on the
    sums now, and status.stoppedEarly once the run is decided: the first decision is kept (its
    reason, message and verdict) from then on; dropped if the run asked every sample anyway."""
    assert plan.early_stop is not None
    total = run_total or agg.progress.total
    gate = hold = baseline = None
    note = ""
    if plan.regression is not None:
        gate, hold = plan.regression.gate, plan.regression.hold
        if gate is not None:
            baseline, note = _paired(summaries)
    state = evaluate_early_stop(
        plan.early_stop,
        plan.thresholds,
        agg.sums,
        total,
        every_shard=run_total > 0,
        max_group=max_group,
        gate=gate,
        baseline=baseline,
        baseline_note=note,
        hold=hold,
    )
    for result in status.get("results") or []:
        interval = state.intervals.get(result["name"])
        if interval is not None and result.get("n"):
            result["csInterval"] = rounded(interval)
    decided = old.get("stoppedEarly") or {}
    reason, message, passed = decided.get("reason"), decided.get("message"), decided.get("passed")
    regression = decided.get("regression")
    if reason is None and state.decision is not None:
        reason, message, passed = state.decision, state.message, state.passed
        regression = regression_decision(state.regression)
    progress, usage = agg.progress, agg.usage
    stopped = stopped_early(
        reason,
        message,
        passed,
        progress.completed + progress.failed,
        total,
        usage.requests,
        usage.cost_usd,
        regression,
    )
    if stopped is None:
        status.pop("stoppedEarly", None)
    else:
        status["stoppedEarly"] = stopped


def _paired(summaries: Mapping[int, ShardSummary]) -> tuple[BaselineSums | None, str]:
    """The shards' pairs with the cell's baseline, merged; None (and why) until a shard has
    said which run it paired with, or when two shards paired with different runs (a baseline
    recorded between their starts: the gate cannot decide, the run goes on)."""
    reported = [s.baseline for s in summaries.values() if s.baseline is not None]
    if not reported:
        return None, "waiting for the shards' pairs with the baseline"
    merged: BaselineSums | None = reported[0]
    for sums in reported[1:]:
        merged = merged.merged(sums) if merged is not None else None
    if merged is None:
        runs = ", ".join(sorted({str(s.run) for s in reported}))
        return None, f"the shards paired with different baseline runs ({runs}): not decided"
    return merged, ""


def _progressing(set_: _Conditions, reason: str, ready_message: str, message: str) -> None:
    set_("Ready", "False", reason, ready_message)
    set_("Progressing", "True", reason, message)
    set_("Succeeded", "Unknown", reason, message)
    set_("Stalled", "False", reason, "")
    set_("Passed", "Unknown", reason, "the run has not finished")


def _failed(
    status: dict[str, Any],
    set_: _Conditions,
    reason: str,
    message: str,
    now: str,
    job: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status["phase"] = "Failed"
    if not status.get("completionTime"):
        status["completionTime"] = ((job or {}).get("status") or {}).get("completionTime") or now
    set_("Ready", "False", reason, message)
    set_("Progressing", "False", reason, message)
    set_("Succeeded", "False", reason, message)
    set_("Stalled", "True", reason, message)
    set_("Passed", "False", "RunFailed", "the run failed, thresholds were not judged")
    status["conditions"] = set_.items
    return status
