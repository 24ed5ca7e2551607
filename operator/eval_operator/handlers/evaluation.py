"""Reconcile one Evaluation: make sure its run's Job exists (once), then compute its status."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import ValidationError

from eval_api.v1alpha1 import RERUN_ANNOTATION, EvaluationSpec
from eval_operator.builders.job import (
    CONTAINER_NAME,
    PROGRESS_PORT_NAME,
    build_job,
    build_run_config,
)
from eval_operator.builders.meta import run_name
from eval_operator.conditions import now_rfc3339
from eval_operator.kube import Kube
from eval_operator.progress import poll_pods
from eval_operator.settings import OperatorSettings
from eval_operator.status import Observation, desired_status, run_is_finished

log = logging.getLogger(__name__)


@dataclass
class Context:
    """Operator-wide clients and settings, created once at start-up (kopf's memo)."""

    settings: OperatorSettings
    kube: Kube
    http: aiohttp.ClientSession
    # kopf runs an object's event handlers and its timer concurrently; one reconcile at a time
    # per Evaluation keeps them from both creating the Job.
    _locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )
    # Jobs this process created that the Job watch has not delivered yet.
    just_created: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def lock_for(self, namespace: str, name: str) -> asyncio.Lock:
        lock = self._locks.get((namespace, name))
        if lock is None:
            lock = self._locks[(namespace, name)] = asyncio.Lock()
        return lock


def job_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a Job that status needs; indexes keep only this, not whole objects."""
    return {
        "metadata": {"name": body["metadata"]["name"]},
        "spec": {"suspend": bool((body.get("spec") or {}).get("suspend"))},
        "status": dict(body.get("status") or {}),
    }


def pod_view(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    status = body.get("status") or {}
    port = None
    for container in (body.get("spec") or {}).get("containers") or []:
        if container.get("name") == CONTAINER_NAME:
            for entry in container.get("ports") or []:
                if entry.get("name") == PROGRESS_PORT_NAME:
                    port = entry.get("containerPort")
    return {
        "metadata": {
            "name": meta["name"],
            "creationTimestamp": meta.get("creationTimestamp"),
            "annotations": {
                k: v
                for k, v in (meta.get("annotations") or {}).items()
                if k == "batch.kubernetes.io/job-completion-index"
            },
        },
        "status": {
            "phase": status.get("phase"),
            "podIP": status.get("podIP"),
            "containerStatuses": list(status.get("containerStatuses") or []),
        },
        "progressPort": port,
    }


def describe_validation_error(err: ValidationError) -> str:
    parts = []
    for error in err.errors():
        path = ".".join(str(p) for p in ("spec", *error["loc"]))
        parts.append(f"{path}: {error['msg']}")
    return "; ".join(parts)


async def missing_input(kube: Kube, namespace: str, spec: EvaluationSpec) -> tuple[str, str] | None:
    """The first Secret/ConfigMap (or key) the spec names that does not exist yet.

    Checked before the Job is created, so the user sees a condition instead of pods stuck in
    CreateContainerConfigError; the periodic reconcile notices when it appears.
    """
    wanted: list[tuple[str, str, str]] = []
    if spec.model.api_key_secret_ref is not None:
        ref = spec.model.api_key_secret_ref
        wanted.append(("Secret", ref.name, ref.key))
    for scorer in spec.task.scorers:
        if scorer.judge is not None and scorer.judge.api_key_secret_ref is not None:
            judge_ref = scorer.judge.api_key_secret_ref
            wanted.append(("Secret", judge_ref.name, judge_ref.key))
    if spec.dataset.config_map_ref is not None:
        ref2 = spec.dataset.config_map_ref
        wanted.append(("ConfigMap", ref2.name, ref2.key))
    if spec.model.ca_bundle is not None:
        ca = spec.model.ca_bundle
        if ca.config_map_ref is not None:
            wanted.append(("ConfigMap", ca.config_map_ref.name, ca.config_map_ref.key))
        if ca.secret_ref is not None:
            wanted.append(("Secret", ca.secret_ref.name, ca.secret_ref.key))
    for kind, name, key in wanted:
        if kind == "Secret":
            keys = await kube.secret_keys(namespace, name)
        else:
            keys = await kube.config_map_keys(namespace, name)
        if keys is None:
            return f"{kind}NotFound", f"{kind} {namespace}/{name} does not exist"
        if key not in keys:
            return f"{kind}KeyNotFound", f"{kind} {namespace}/{name} has no key {key!r}"
    return None


async def reconcile(
    evaluation: dict[str, Any],
    ctx: Context,
    jobs: Mapping[Any, Iterable[dict[str, Any]]],
    pods: Mapping[Any, Iterable[dict[str, Any]]],
) -> tuple[dict[str, Any], list[str]]:
    """Bring the cluster towards the Evaluation and return (status, events to report).

    `jobs` and `pods` are kopf indexes keyed by (namespace, run name): what the watches saw,
    without an API call per reconcile.
    """
    meta = evaluation["metadata"]
    async with ctx.lock_for(meta["namespace"], meta["name"]):
        return await _reconcile(evaluation, ctx, jobs, pods)


async def _reconcile(
    evaluation: dict[str, Any],
    ctx: Context,
    jobs: Mapping[Any, Iterable[dict[str, Any]]],
    pods: Mapping[Any, Iterable[dict[str, Any]]],
) -> tuple[dict[str, Any], list[str]]:
    meta = evaluation["metadata"]
    namespace = meta["namespace"]
    token = (meta.get("annotations") or {}).get(RERUN_ANNOTATION)
    run = run_name(meta["name"], meta["uid"], token)
    old = evaluation.get("status") or {}
    obs = Observation(run=run, rerun_token=token, now=now_rfc3339())
    events: list[str] = []

    try:
        spec = EvaluationSpec.model_validate(evaluation["spec"])
    except ValidationError as err:
        obs.invalid = describe_validation_error(err)
        return desired_status(evaluation, obs), events

    previous_run = old.get("jobName")
    if previous_run and previous_run != run:
        # A re-run was asked for: the old run's Job and config go; the new run starts clean.
        if await ctx.kube.delete_job(namespace, previous_run):
            events.append(f"Deleted Job {previous_run} of the previous run")
        await ctx.kube.delete_config_map(namespace, previous_run)

    key = (namespace, run)
    obs.job = next(iter(jobs.get(key, [])), None)
    if obs.job is None:
        obs.job = ctx.just_created.get(key)
    else:
        ctx.just_created.pop(key, None)
    obs.pods = list(pods.get((namespace, run), []))

    if not run_is_finished(old, run):
        if spec.cancel:
            if obs.job is not None and await ctx.kube.delete_job(namespace, run):
                events.append(f"Cancelled: deleted Job {run}")
        elif obs.job is None:
            obs.blocked = await missing_input(ctx.kube, namespace, spec)
            if obs.blocked is None:
                await ctx.kube.create(build_run_config(evaluation, run))
                job = build_job(evaluation, run, ctx.settings)
                if await ctx.kube.create(job):
                    events.append(f"Created Job {run} with {spec.execution.shards} shard(s)")
                obs.job = ctx.just_created[key] = job_view(job)
        else:
            if obs.job["spec"]["suspend"] != spec.suspend:
                await ctx.kube.set_job_suspend(namespace, run, spec.suspend)
                obs.job["spec"]["suspend"] = spec.suspend
                events.append(f"{'Suspended' if spec.suspend else 'Resumed'} Job {run}")
            obs.live = await poll_pods(ctx.http, obs.pods, ctx.settings.progress_timeout_seconds)

    return desired_status(evaluation, obs), events


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that turns `old` into `new`: keys that disappeared are set to null."""
    patch = dict(new)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch
