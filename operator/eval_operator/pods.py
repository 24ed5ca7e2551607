"""Runner pods as the operator sees them: small views, which ones to trust, why one is stuck.

The operator watches only its own pods (a server-side label selector) and keeps a view of each
pod of an unfinished run; a run's pods are forgotten once its outcome is in status. Only pods
controlled by the run's Job (their controller owner reference carries the Job's uid) are trusted
for progress and summaries: a pod made by hand with the same labels cannot change a verdict.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from eval_operator.builders.job import CONTAINER_NAME, PROGRESS_PORT_NAME
from eval_operator.builders.meta import EVALUATION_LABEL, RUN_LABEL

COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# Waiting reasons of the runner container that will not resolve without the user: an image that
# cannot be pulled, a Secret or ConfigMap (or key) that does not exist.
_IMAGE_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
_CONFIG_MESSAGES = (
    (re.compile(r'secret "(?P<name>[^"]+)" not found'), "SecretNotFound"),
    (re.compile(r"couldn't find key (?P<key>\S+) in Secret (?P<name>\S+)"), "SecretKeyNotFound"),
    (re.compile(r'configmap "(?P<name>[^"]+)" not found'), "ConfigMapNotFound"),
    (
        re.compile(r"couldn't find key (?P<key>\S+) in ConfigMap (?P<name>\S+)"),
        "ConfigMapKeyNotFound",
    ),
)


def pod_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a runner pod that status needs; the tracker keeps only this."""
    meta = body["metadata"]
    status = body.get("status") or {}
    port = None
    runner = {}
    for container in (body.get("spec") or {}).get("containers") or []:
        if container.get("name") == CONTAINER_NAME:
            for entry in container.get("ports") or []:
                if entry.get("name") == PROGRESS_PORT_NAME:
                    port = entry.get("containerPort")
    for container in status.get("containerStatuses") or []:
        if container.get("name") == CONTAINER_NAME:
            runner = {"state": container.get("state") or {}}
    controller = next(
        (
            ref
            for ref in meta.get("ownerReferences") or []
            if ref.get("controller") and ref.get("kind") == "Job"
        ),
        {},
    )
    scheduled = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {}
    )
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    index = annotations.get(COMPLETION_INDEX_ANNOTATION) or labels.get(COMPLETION_INDEX_ANNOTATION)
    return {
        "name": meta["name"],
        "evaluation": labels.get(EVALUATION_LABEL),
        "jobUID": controller.get("uid"),
        "creationTimestamp": meta.get("creationTimestamp") or "",
        "index": int(index) if index is not None and index.isdigit() else None,
        "phase": status.get("phase"),
        "podIP": status.get("podIP"),
        "progressPort": port,
        "runner": runner,
        "scheduled": {
            k: scheduled.get(k)
            for k in ("status", "reason", "message", "lastTransitionTime")
            if k in scheduled
        },
    }


def progress_url(pod: Mapping[str, Any]) -> str | None:
    """http://IP:port/progress of a running pod; IPv6 addresses go in brackets."""
    ip, port = pod.get("podIP"), pod.get("progressPort")
    if pod.get("phase") != "Running" or not ip or not port:
        return None
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/progress"


@dataclass
class PodTracker:
    """Views of the pods of unfinished runs, by (namespace, run)."""

    runs: dict[tuple[str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> tuple[str, str] | None:
        """Record a watch event of a runner pod; returns its (namespace, run), if it has one."""
        meta = body.get("metadata") or {}
        run = (meta.get("labels") or {}).get(RUN_LABEL)
        if not run:
            return None
        key = (meta.get("namespace") or "", run)
        if event_type == "DELETED":
            pods = self.runs.get(key)
            if pods is not None:
                pods.pop(meta["name"], None)
                if not pods:
                    del self.runs[key]
        else:
            self.runs.setdefault(key, {})[meta["name"]] = pod_view(body)
        return key

    def forget_run(self, namespace: str, run: str) -> None:
        self.runs.pop((namespace, run), None)

    def trusted(self, namespace: str, run: str, job_uid: str | None) -> list[dict[str, Any]]:
        """The run's pods whose controller is the run's Job."""
        if not job_uid:
            return []
        pods = self.runs.get((namespace, run)) or {}
        return [pod for pod in pods.values() if pod["jobUID"] == job_uid]

    def __iter__(self) -> Iterator[tuple[tuple[str, str], list[dict[str, Any]]]]:
        for key, pods in list(self.runs.items()):
            yield key, list(pods.values())


def _creating_since(pod: Mapping[str, Any]) -> datetime.datetime | None:
    """When a pod that is still creating its runner container was scheduled (the kubelet then
    mounts its volumes and pulls its image), or None."""
    if pod["phase"] not in (None, "Pending"):
        return None
    waiting = (pod.get("runner") or {}).get("state", {}).get("waiting") or {}
    scheduled = pod.get("scheduled") or {}
    if waiting.get("reason") != "ContainerCreating" or scheduled.get("status") != "True":
        return None
    try:
        return datetime.datetime.fromisoformat(scheduled["lastTransitionTime"])
    except (KeyError, TypeError, ValueError):
        return None


def not_starting_in(
    pods: list[dict[str, Any]], now: datetime.datetime, timeout: float
) -> float | None:
    """Seconds until a pod still creating its container has done so for `timeout`: when to look
    again, as nothing else may happen meanwhile (the kubelet retries a missing volume quietly)."""
    waits = [
        timeout - (now - since).total_seconds()
        for since in map(_creating_since, pods)
        if since is not None
    ]
    pending = [w for w in waits if w > 0]
    return min(pending) if pending else None


def stuck(
    pods: list[dict[str, Any]],
    now: datetime.datetime | None = None,
    start_timeout: float | None = None,
) -> tuple[str, str] | None:
    """(reason, message) when a pod waits for something only the user can fix.

    With `now` and `start_timeout`, also a pod that has been creating its container for longer
    than that: the pod shows no reason (a volume from a missing Secret or ConfigMap, a missing
    key of one, or a slow image pull: only the pod's events tell which).
    """
    for pod in sorted(pods, key=lambda p: p["name"]):
        if pod["phase"] not in (None, "Pending"):
            continue
        scheduled = pod.get("scheduled") or {}
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            why = scheduled.get("message") or "no node fits"
            return "Unschedulable", f"pod {pod['name']} cannot be scheduled: {why}"
        waiting = (pod.get("runner") or {}).get("state", {}).get("waiting") or {}
        reason, message = waiting.get("reason") or "", waiting.get("message") or ""
        if reason in _IMAGE_REASONS:
            return reason, f"pod {pod['name']}: {message or reason}"
        if reason == "CreateContainerConfigError":
            for pattern, kind in _CONFIG_MESSAGES:
                if pattern.search(message):
                    return kind, f"pod {pod['name']}: {message}"
            return reason, f"pod {pod['name']}: {message or reason}"
        if reason == "CreateContainerError":
            return reason, f"pod {pod['name']}: {message or reason}"
        since = _creating_since(pod)
        if since is not None and now is not None and start_timeout is not None:
            waited = (now - since).total_seconds()
            if waited >= start_timeout:
                return "PodNotStarting", (
                    f"pod {pod['name']} has been in ContainerCreating for {int(waited)}s: a "
                    "volume may wait for a missing Secret or ConfigMap (model.caBundle, "
                    "dataset.configMapRef) or a key of one, or the image pull is slow; "
                    f"`kubectl describe pod {pod['name']}` shows which"
                )
    return None
