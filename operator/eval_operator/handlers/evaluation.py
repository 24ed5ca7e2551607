"""Reconcile one Evaluation: start its run's Job (once), act on cancel/suspend/rerun, write status.

Called by the work queue with the Evaluation's key, whatever asked for it (a watch event of the
Evaluation, its Job or its pods, the progress loop, a bounded wait ending). Level-based: it
reads what is, makes at most the changes the spec asks for, and writes the status only when
it differs — progress at most every few seconds, anything else at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import ValidationError

from eval_api import cel
from eval_api.checks import spec_problems
from eval_api.shard import ShardSummary
from eval_api.tasks import TaskFileError, task_plan
from eval_api.v1alpha1.common import RERUN_ANNOTATION
from eval_api.v1alpha1.evalsuite import EvalSuiteSpec
from eval_api.v1alpha1.evaluation import EvaluationSpec
from eval_operator import events
from eval_operator.builders import tls
from eval_operator.builders.job import build_job, build_ledger, build_run_config
from eval_operator.builders.meta import RUN_LABEL, run_name
from eval_operator.conditions import condition_of, now_rfc3339
from eval_operator.control import build_control_secret, process_key, stop_token
from eval_operator.kube import Conflict, Forbidden, Kube, Rejected
from eval_operator.ledger import ledger_of
from eval_operator.matrix import gate_of
from eval_operator.platforms import Platforms
from eval_operator.pods import PodTracker, not_starting_in, progress_url, stuck
from eval_operator.progress import MAX_PARALLEL_POLLS
from eval_operator.runplan import KUEUE_QUEUE_LABEL, SUSPEND_ANNOTATION, RunPlan
from eval_operator.settings import OperatorSettings
from eval_operator.status import (
    Observation,
    desired_status,
    run_is_finished,
    run_started,
)

log = logging.getLogger(__name__)

Key = tuple[str, str]
# Status fields that change while samples are scored; a change of only these is throttled.
VOLATILE_FIELDS = ("progress", "results", "usage")
WRITE_ATTEMPTS = 3


@dataclass
class Context:
    """Operator-wide clients, settings and observations, created once at start-up (kopf's memo)."""

    settings: OperatorSettings
    kube: Kube
    http: aiohttp.ClientSession
    # The kopf index of runner Jobs: (namespace, run) -> [job view].
    jobs: Mapping[Any, Any] = field(default_factory=dict)
    pods: PodTracker = field(default_factory=PodTracker)
    # Live summaries of running pods from the progress loop: (namespace, pod) -> summary.
    live: dict[tuple[str, str], ShardSummary] = field(default_factory=dict)
    # Jobs this process created that the Job watch has not delivered yet.
    just_created: dict[Key, dict[str, Any]] = field(default_factory=dict)
    # When each Evaluation's status was last written (monotonic), for the progress throttle.
    last_write: dict[Key, float] = field(default_factory=dict)
    # The ledger last written for each budgeted run: (namespace, run) -> its JSON.
    ledgers: dict[Key, str] = field(default_factory=dict)
    # The kopf index of EvalSuites: (namespace, name) -> [suite view].
    suites: Mapping[Any, Any] = field(default_factory=dict)
    # The kopf index of the suites' StatefulSets and Deployments: (namespace, kind, name) ->
    # [workload view].
    workloads: Mapping[Any, Any] = field(default_factory=dict)
    # What each suite's last prune kept: (namespace, name) -> its key.
    pruned: dict[Key, Any] = field(default_factory=dict)
    # How many passes in a row met refusals of each suite's stack (its back-off).
    stack_failures: dict[Key, int] = field(default_factory=dict)
    # A suite's store volume that is growing or cannot grow: what StoreReady says of it.
    volume_notes: dict[Key, str] = field(default_factory=dict)
    # The kopf index of the Evaluations in each suite: (namespace, suite) -> [member view].
    members: Mapping[Any, Any] = field(default_factory=dict)
    # Which optional platforms the API server serves (eval_operator.platforms).
    platforms: Platforms = field(default_factory=Platforms)
    # The suite each Evaluation was last seen in, with its member view: (namespace, name) ->
    # (suite, view).
    memberships: dict[Key, Any] = field(default_factory=dict)
    # The kopf index of the suites' matrix cells: (namespace, suite) -> [cell view].
    cells: Mapping[Any, Any] = field(default_factory=dict)
    # Cell report Jobs whose reports the pending status write of a suite carries.
    reported: dict[Key, set[str]] = field(default_factory=dict)
    # Each suite's cell report Jobs asked for and not yet deleted: (namespace, suite) -> {Job
    # name: the runs it asks about}. Listed once per suite after a start; it covers the time
    # before the Job watch delivers a Job just made (a pass must not ask for the same cells
    # twice).
    report_batches: dict[Key, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    # The migration Job each suite's older migration Jobs were last deleted for.
    migrations_pruned: dict[Key, str] = field(default_factory=dict)
    # What Evaluations waiting for each suite last saw of it: (namespace, name) -> a key.
    suite_readiness: dict[Key, Any] = field(default_factory=dict)

    # The key the tokens that stop runs early are derived from (eval_operator.control).
    control_key: bytes = field(default_factory=lambda: process_key(None), repr=False)
    # Runs whose shards refused this process's stop (said once in the log).
    stop_refused: set[Key] = field(default_factory=set)

    def forget(self, key: Key) -> None:
        self.last_write.pop(key, None)


def job_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a Job that reconcile needs; the index keeps only this, not whole objects."""
    meta = body["metadata"]
    return {
        "metadata": {
            "name": meta["name"],
            "uid": meta.get("uid"),
            "annotations": dict(meta.get("annotations") or {}),
        },
        "spec": {
            "suspend": bool((body.get("spec") or {}).get("suspend")),
            "completions": (body.get("spec") or {}).get("completions"),
        },
        "status": dict(body.get("status") or {}),
    }


def describe_validation_error(err: ValidationError) -> str:
    parts = []
    for error in err.errors():
        path = ".".join(str(p) for p in ("spec", *error["loc"]))
        parts.append(f"{path}: {error['msg']}")
    return "; ".join(parts)


async def missing_input(kube: Kube, namespace: str, spec: EvaluationSpec) -> tuple[str, str] | None:
    """The first ConfigMap (or key) the spec names that does not exist yet.

    Checked before the Job is created. Secrets are not read at all: the operator has no access
    to them; a missing Secret or key shows up as the pods' CreateContainerConfigError instead.
    """
    wanted: list[tuple[str, str]] = []
    if spec.dataset is not None and spec.dataset.config_map_ref is not None:
        wanted.append((spec.dataset.config_map_ref.name, spec.dataset.config_map_ref.key))
    if spec.task.lm_eval is not None:
        wanted.append((spec.task.lm_eval.config_map_ref.name, spec.task.lm_eval.config_map_ref.key))
    ca = spec.model.ca_bundle
    if ca is not None and ca.config_map_ref is not None:
        wanted.append((ca.config_map_ref.name, ca.config_map_ref.key))
    for name, key in wanted:
        keys = await kube.config_map_keys(namespace, name)
        if keys is None:
            return "ConfigMapNotFound", f"ConfigMap {namespace}/{name} does not exist"
        if key not in keys:
            return "ConfigMapKeyNotFound", f"ConfigMap {namespace}/{name} has no key {key!r}"
    return None


async def read_task_file(
    kube: Kube, namespace: str, spec: EvaluationSpec
) -> tuple[str | None, tuple[str, str] | None]:
    """task.lmEval's task file, read and checked before the run starts; or why it cannot run
    (LmEvalInvalid, LmEvalUnsupported, naming the field). ConfigMaps are not watched: a
    blocked run looks again from time to time, so a fixed file starts it."""
    if spec.task.lm_eval is None:
        return None, None
    ref = spec.task.lm_eval.config_map_ref
    text = await kube.config_map_value(namespace, ref.name, ref.key)
    if text is None:
        return None, (
            "ConfigMapKeyNotFound",
            f"ConfigMap {namespace}/{ref.name} has no key {ref.key!r} in data",
        )
    try:
        task_plan(spec, text)
    except TaskFileError as err:
        return None, (err.reason, f"spec.task.lmEval: {err.message}")
    problems = spec_problems(spec, text)
    if problems:
        return None, ("LmEvalInvalid", "; ".join(problems))
    return text, None


def suite_of(
    ctx: Context, namespace: str, name: str
) -> tuple[tuple[str, EvalSuiteSpec] | None, tuple[str, str] | None]:
    """The suite a run goes into, or why it has to wait: the suite does not exist, or its
    store is not ready yet (the suite's watch events bring the Evaluation back)."""
    view = next(iter(ctx.suites.get((namespace, name), [])), None)
    if view is None:
        return None, (
            "SuiteNotFound",
            f"EvalSuite {namespace}/{name} (spec.suiteRef) does not exist",
        )
    if not view["storeReady"]:
        return None, (
            "SuiteNotReady",
            f"waiting for EvalSuite {name}: {view['storeReason']}: {view['storeMessage']}",
        )
    try:
        spec = EvalSuiteSpec.model_validate(view["spec"], context=cel.ADMITTED)
    except ValidationError as err:
        return None, ("SuiteNotReady", f"EvalSuite {name}: {describe_validation_error(err)}")
    return (name, spec), None


def _validate(raw_spec: Mapping[str, Any]) -> tuple[EvaluationSpec | None, str | None]:
    try:
        # The apiserver has held the spec to its schema and CEL rules already.
        spec = EvaluationSpec.model_validate(raw_spec, context=cel.ADMITTED)
    except ValidationError as err:
        return None, describe_validation_error(err)
    problems = spec_problems(spec)
    return (None, "; ".join(problems)) if problems else (spec, None)


def _rejected_before(old: Mapping[str, Any], run: str, generation: int) -> str | None:
    """The message of a Job rejection already reported for this run and generation."""
    if old.get("jobName") != run or old.get("observedGeneration") != generation:
        return None
    ready = condition_of(old, "Ready")
    if ready.get("reason") != "JobRejected":
        return None
    return str(ready.get("message", "")).removeprefix("the apiserver rejected the run's Job: ")


def _only_volatile_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether only progress, results, usage (and the Running message) differ."""

    def stable(status: Mapping[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in status.items() if k not in VOLATILE_FIELDS}
        kept["conditions"] = [
            {**c, "message": ""} if c.get("reason") == "Running" else c
            for c in status.get("conditions") or []
        ]
        return kept

    return stable(old) == stable(new)


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) that turns `old` into `new`: keys that disappeared are
    set to null, at every depth (a merge patch merges nested objects; lists it replaces)."""
    patch = dict(new)
    for key, before in old.items():
        if key not in new:
            patch[key] = None
        elif isinstance(before, Mapping) and isinstance(new[key], Mapping):
            patch[key] = status_patch(before, new[key])
    return patch


@dataclass
class Step:
    """What one pass of reconcile decided: the status, and what it did on the way."""

    status: dict[str, Any]
    recheck_after: float | None
    actions: list[events.Event]


async def _step(evaluation: dict[str, Any], ctx: Context) -> Step:
    meta = evaluation["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    raw_spec = evaluation.get("spec") or {}
    old = evaluation.get("status") or {}
    token = (meta.get("annotations") or {}).get(RERUN_ANNOTATION)
    run = run_name(name, meta["uid"], token)
    generation = meta.get("generation") or 1
    obs = Observation(
        run=run,
        rerun_token=token,
        generation=generation,
        now=now_rfc3339(),
        cancel=bool(raw_spec.get("cancel")),
    )
    actions: list[events.Event] = []

    previous_run = old.get("jobName")
    if previous_run and previous_run != run:
        # A re-run was asked for: the old run's Job and config go; the new run starts clean.
        # (The RerunStarted event comes with the status that names the new run.)
        await ctx.kube.delete_job(namespace, previous_run)
        await ctx.kube.delete_config_maps(namespace, f"{RUN_LABEL}={previous_run}")
        ctx.pods.forget_run(namespace, previous_run)

    key = (namespace, run)
    job = next(iter(ctx.jobs.get(key, [])), None)
    if job is None:
        job = ctx.just_created.get(key)
    else:
        ctx.just_created.pop(key, None)

    if not run_is_finished(old, run):
        if obs.cancel:
            if job is not None and await ctx.kube.delete_job(namespace, run):
                actions.append(events.normal("Cancelled", f"spec.cancel: deleted Job {run}"))
        elif job is None and not run_started(old, run):
            job = await _start(evaluation, raw_spec, run, generation, old, obs, ctx, actions)
        elif job is not None:
            job = await _follow_suspend(evaluation, raw_spec, job, ctx, actions)

    obs.job = job
    extra_recheck: float | None = None
    if job is not None:
        obs.plan = RunPlan.from_annotations(job["metadata"].get("annotations") or {})
        if obs.plan is None:  # a Job made by an operator version without plans
            spec, _ = _validate(raw_spec)
            if spec is not None and spec.task.lm_eval is None:
                obs.plan = RunPlan.of(spec, raw_spec, generation, run)
        obs.pods = ctx.pods.trusted(namespace, run, job["metadata"].get("uid"))
        obs.live = {
            pod["name"]: ctx.live[(namespace, pod["name"])]
            for pod in obs.pods
            if (namespace, pod["name"]) in ctx.live
        }
        now = datetime.datetime.fromisoformat(obs.now)
        start_timeout = ctx.settings.pod_start_timeout_seconds
        obs.stuck = stuck(obs.pods, now, start_timeout)
        if obs.stuck is None and not run_is_finished(old, run):
            # No watch event comes while the kubelet waits for a volume: look again then.
            starting = not_starting_in(obs.pods, now, start_timeout)
            if starting is not None:
                extra_recheck = starting + 0.1
        if obs.plan is not None and obs.plan.budgeted and not run_is_finished(old, run):
            await _keep_ledger(evaluation, run, obs.pods, ctx)

    outcome = desired_status(old, obs)
    # Told only once the decision is in the stored status (the write that announces it comes
    # first): a decision the operator may lose with an unwritten status never stops a shard.
    stored = old.get("stoppedEarly") if old.get("jobName") == run else None
    stopped = outcome.status.get("stoppedEarly") if stored else None
    if stopped and job is not None and not run_is_finished(outcome.status, run):
        if await _stop_shards(ctx, namespace, run, obs, stopped["reason"]):
            # A pod not told yet (its server not up, or it has not said so since): again soon.
            wait = ctx.settings.progress_interval_seconds
            extra_recheck = wait if extra_recheck is None else min(extra_recheck, wait)
    if run_is_finished(old, run):
        # The outcome is in status: this run's pods need no more watching.
        for pod in ctx.pods.trusted(namespace, run, (job or {}).get("metadata", {}).get("uid")):
            ctx.live.pop((namespace, pod["name"]), None)
        ctx.pods.forget_run(namespace, run)
        ctx.ledgers.pop((namespace, run), None)
    recheck = outcome.recheck_after
    if extra_recheck is not None:
        recheck = extra_recheck if recheck is None else min(recheck, extra_recheck)
    if obs.blocked is not None:
        # ConfigMaps are not watched: look again for the missing one from time to time.
        wait = ctx.settings.missing_input_recheck_seconds
        recheck = wait if recheck is None else min(recheck, wait)
    return Step(outcome.status, recheck, actions)


async def _stop_shards(
    ctx: Context, namespace: str, run: str, obs: Observation, reason: str
) -> bool:
    """Tell every running shard of a decided run to stop (execution.earlyStop), with the
    run's token, all at once; again on every reconcile until each says it stopped
    (level-based). Returns whether a pod is left that has not said so (one starting, or not
    polled since)."""
    token = stop_token(ctx.control_key, namespace, run)
    left = False
    targets = []
    for pod in obs.pods:
        live = obs.live.get(pod["name"])
        if live is not None and (live.stopped or live.state != "running"):
            continue
        if pod.get("phase") in ("Succeeded", "Failed"):
            continue
        left = True
        url = progress_url(pod)
        if url is not None:  # not running yet: told once it is
            targets.append(url.removesuffix("/progress") + "/stop")
    gate = asyncio.Semaphore(MAX_PARALLEL_POLLS)

    async def tell(url: str) -> int | None:
        async with gate:
            try:
                async with ctx.http.post(
                    url,
                    json={"reason": reason},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=aiohttp.ClientTimeout(total=ctx.settings.progress_timeout_seconds),
                ) as response:
                    return response.status
            except (aiohttp.ClientError, TimeoutError):
                return None  # a pod going away, or its server not up yet: tried again

    answers = await asyncio.gather(*map(tell, targets))
    if 403 in answers and (namespace, run) not in ctx.stop_refused:
        ctx.stop_refused.add((namespace, run))
        log.warning(
            "shards refused the stop: the run was started by another operator process (no "
            "shared control key, chart earlyStop.controlKeySecret); it asks every sample",
            extra={"namespace": namespace, "run": run},
        )
    return left


async def _keep_ledger(
    evaluation: dict[str, Any], run: str, pods: list[dict[str, Any]], ctx: Context
) -> None:
    """Write what the ended attempts of each retried shard spent, when that changed."""
    ledger = ledger_of(pods)
    if not ledger.root:
        return  # no attempt failed: no retry can follow
    key = (evaluation["metadata"]["namespace"], run)
    text = ledger.to_json()
    if ctx.ledgers.get(key) != text:
        await ctx.kube.put_config_map(build_ledger(evaluation, run, ledger))
        ctx.ledgers[key] = text


async def _start(
    evaluation: dict[str, Any],
    raw_spec: Mapping[str, Any],
    run: str,
    generation: int,
    old: Mapping[str, Any],
    obs: Observation,
    ctx: Context,
    actions: list[events.Event],
) -> dict[str, Any] | None:
    """Create the run's ConfigMap and Job from the live spec, if it can run; else say why."""
    namespace = evaluation["metadata"]["namespace"]
    spec, obs.spec_problem = _validate(raw_spec)
    if spec is None:
        return None
    obs.job_rejected = _rejected_before(old, run, generation)
    if obs.job_rejected is not None:
        return None  # the same spec would be rejected again: wait for it to change
    obs.blocked = await missing_input(ctx.kube, namespace, spec)
    if obs.blocked is not None:
        return None
    task_file, obs.blocked = await read_task_file(ctx.kube, namespace, spec)
    if obs.blocked is not None:
        return None
    suite: tuple[str, EvalSuiteSpec] | None = None
    if spec.suite_ref is not None:
        suite, obs.blocked = suite_of(ctx, namespace, spec.suite_ref.name)
        if obs.blocked is not None:
            return None
        if suite is not None and tls.undecided(suite[1], ctx.platforms.cert_manager):
            obs.blocked = (
                "SuiteNotReady",
                f"waiting for EvalSuite {suite[0]}: API discovery has not said whether "
                "cert-manager (spec.tls) is served",
            )
            return None
    plan = RunPlan.of(spec, raw_spec, generation, run, task_file)
    if suite is not None:
        view = next(iter(ctx.suites.get((namespace, suite[0]), [])), {})
        plan = plan.model_copy(
            update={
                "suite": suite[0],
                "cached": suite[1].cache.mode != "Disabled",
                "regression": gate_of(evaluation, suite[1], view.get("accepted")),
            }
        )
    try:
        await ctx.kube.create(build_run_config(evaluation, run, plan, task_file))
        if spec.execution.early_stop is not None:
            token = stop_token(ctx.control_key, namespace, run)
            await ctx.kube.create(build_control_secret(evaluation, run, token))
        job = build_job(evaluation, spec, run, plan, ctx.settings, suite)
        if suite is not None and tls.active(suite[1], ctx.platforms.cert_manager):
            job = tls.with_tls_clients(job, suite[0], suite[1])
        created = await ctx.kube.create(job)
    except Rejected as err:
        obs.job_rejected = err.message
        return None
    except Forbidden as err:
        # The operator's own permission, not the spec: waits, and is tried again.
        obs.blocked = ("PermissionDenied", err.explained())
        return None
    if created:
        actions.append(
            events.normal("JobCreated", f"Created Job {run} with {spec.execution.shards} shard(s)")
        )
    view = job_view({**job, "metadata": {**job["metadata"], "uid": None}})
    ctx.just_created[(namespace, run)] = view
    return view


async def _follow_suspend(
    evaluation: dict[str, Any],
    raw_spec: Mapping[str, Any],
    job: dict[str, Any],
    ctx: Context,
    actions: list[events.Event],
) -> dict[str, Any]:
    """Apply a change of spec.suspend to the Job, once: Kueue's and people's changes stand."""
    meta = evaluation["metadata"]
    if KUEUE_QUEUE_LABEL in (meta.get("labels") or {}):
        return job  # Kueue admits and suspends this Job; spec.suspend only applied at creation
    wanted = "true" if raw_spec.get("suspend") else "false"
    applied = (job["metadata"].get("annotations") or {}).get(SUSPEND_ANNOTATION)
    if applied == wanted:
        return job
    name = job["metadata"]["name"]
    await ctx.kube.patch_job(
        meta["namespace"],
        name,
        {
            "metadata": {"annotations": {SUSPEND_ANNOTATION: wanted}},
            "spec": {"suspend": wanted == "true"},
        },
    )
    verb = "Suspended" if wanted == "true" else "Resumed"
    actions.append(events.normal(verb, f"{verb} Job {name} (spec.suspend: {wanted})"))
    annotations = {**(job["metadata"].get("annotations") or {}), SUSPEND_ANNOTATION: wanted}
    return {
        **job,
        "metadata": {**job["metadata"], "annotations": annotations},
        "spec": {**job["spec"], "suspend": wanted == "true"},
    }


async def reconcile(ctx: Context, key: Key, hint: dict[str, Any] | None) -> float | None:
    """Reconcile the Evaluation `key`; returns seconds until it should be reconciled again."""
    namespace, name = key
    evaluation = hint if hint is not None else await ctx.kube.get_evaluation(namespace, name)
    for _ in range(WRITE_ATTEMPTS):
        if evaluation is None:
            ctx.forget(key)
            return None
        step = await _step(evaluation, ctx)
        old = evaluation.get("status") or {}
        for event in step.actions:
            await ctx.kube.post_event(evaluation, event.type, event.reason, event.message)
        step.actions.clear()
        if step.status == old:
            return step.recheck_after
        throttle = ctx.settings.progress_write_interval_seconds
        since = time.monotonic() - ctx.last_write.get(key, float("-inf"))
        if _only_volatile_changes(old, step.status) and since < throttle:
            wait = throttle - since
            return wait if step.recheck_after is None else min(wait, step.recheck_after)
        meta = evaluation["metadata"]
        try:
            written = await ctx.kube.patch_evaluation_status(
                namespace, name, meta["resourceVersion"], status_patch(old, step.status)
            )
        except Conflict:
            # Someone wrote in between (the user, or our own earlier write still in flight):
            # judge again from the current object rather than overwrite it.
            evaluation = await ctx.kube.get_evaluation(namespace, name)
            continue
        ctx.last_write[key] = time.monotonic()
        for event in events.transitions(old, step.status):
            await ctx.kube.post_event(written, event.type, event.reason, event.message)
        if run_is_finished(step.status, step.status["jobName"]):
            # The next event of the Evaluation (this write's) forgets the run's pods.
            return 0.0 if step.recheck_after is None else step.recheck_after
        return step.recheck_after
    return 1.0  # the object kept changing under us: look again shortly
