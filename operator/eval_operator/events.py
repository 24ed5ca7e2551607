"""Kubernetes Events about an Evaluation, derived from what changed in its status.

Events say what happened, once: they are computed from the old and the new status of a write
(a transition), never re-sent by a reconcile that changes nothing. Warnings are what a person
must act on; Normal events mark the run's milestones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eval_api.v1alpha1.common import RERUN_ANNOTATION
from eval_operator.conditions import condition_of
from eval_operator.status import SPEC_CHANGED_MARK

# Ready reasons that need a person: a Warning event when the Evaluation enters them.
WARNING_REASONS = frozenset(
    {
        "InvalidSpec",
        "JobRejected",
        "PermissionDenied",
        "JobDeleted",
        "SummaryMissing",
        "SecretNotFound",
        "SecretKeyNotFound",
        "ConfigMapNotFound",
        "ConfigMapKeyNotFound",
        "LmEvalInvalid",
        "LmEvalUnsupported",
        "SuiteNotFound",
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "Unschedulable",
        "PodNotStarting",
        "AuthenticationFailed",
        "ModelNotFound",
        "EndpointUnreachable",
        "EndpointRedirected",
        "InvalidAPIKey",
        "DatasetTooLarge",
        "BudgetExceeded",
        "TooManyErrors",
        "DatasetChecksumMismatch",
        "DeadlineExceeded",
        "BackoffLimitExceeded",
        "FailedIndexes",
    }
)


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


def normal(reason: str, message: str) -> Event:
    return Event("Normal", reason, message)


def _ready(status: dict[str, Any]) -> dict[str, Any]:
    return condition_of(status, "Ready")


def _main_score(status: dict[str, Any]) -> str:
    results = status.get("results") or []
    if not results:
        return "no scored samples"
    main = results[0]
    if main.get("value") is None:
        return f"{main['name']}: no scored samples"
    low, high = main["ci95"]
    return f"{main['name']} {main['value']:.4g} (95% CI [{low:.4g}, {high:.4g}], n={main['n']})"


def transitions(old: dict[str, Any], new: dict[str, Any]) -> list[Event]:
    """The events a status write from `old` to `new` deserves."""
    found: list[Event] = []
    old_ready, new_ready = _ready(old), _ready(new)
    if old.get("jobName") and new.get("jobName") != old.get("jobName"):
        found.append(
            normal(
                "RerunStarted",
                f"{RERUN_ANNOTATION}={new.get('rerunToken')!r}: run {new.get('jobName')} "
                f"replaces run {old['jobName']}",
            )
        )
    phase, old_phase = new.get("phase"), old.get("phase")
    entered = new_ready.get("reason") != old_ready.get("reason") or phase != old_phase
    if phase == "Succeeded" and old_phase != "Succeeded":
        passed = condition_of(new, "Passed")
        found.append(
            normal(
                "Succeeded",
                f"{_main_score(new)}; Passed={passed.get('status')} ({passed.get('message')})",
            )
        )
    elif entered and new_ready.get("reason") in WARNING_REASONS:
        message = new_ready.get("message", "").split(SPEC_CHANGED_MARK)[0]
        if phase == "Failed" and new.get("results"):
            message += f" Results so far: {_main_score(new)}."
        found.append(Event("Warning", new_ready["reason"], message))
    elif phase == "Failed" and old_phase != "Failed" and new_ready.get("reason") != "Cancelled":
        found.append(
            Event("Warning", new_ready.get("reason") or "Failed", new_ready.get("message", ""))
        )
    stopped = new.get("stoppedEarly")
    if stopped and not old.get("stoppedEarly"):
        found.append(
            normal(
                "StoppingEarly",
                f"execution.earlyStop: {stopped.get('reason')} after {stopped.get('samples')} "
                f"of {stopped.get('of')} samples ({stopped.get('message')}); telling the "
                "shards to stop",
            )
        )
    old_changed = SPEC_CHANGED_MARK in old_ready.get("message", "")
    new_note = new_ready.get("message", "").partition(SPEC_CHANGED_MARK)
    if new_note[1] and (
        not old_changed or old.get("observedGeneration") != new.get("observedGeneration")
    ):
        note = (new_note[1] + new_note[2]).lstrip("; ")
        found.append(normal("SpecChanged", note[:1].upper() + note[1:]))
    return found
