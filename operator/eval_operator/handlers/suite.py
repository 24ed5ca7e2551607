"""Reconcile one EvalSuite: its stack exists as the spec says, and its status says how it is.

Called by the work queue (key ("EvalSuite", namespace, name)) on watch events of the suite, its
StatefulSet, Deployment and migration Job. Level-based: every pass applies the desired objects
with server-side apply (only the fields the operator owns; unchanged objects cost the apiserver
nothing), creates the generated Secrets once (a 409 keeps the existing password), removes what
the spec no longer asks for (never a volume or a Secret: data goes only with the suite, and only
when store.managed.retainOnDelete is false), and writes the status only when it changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from eval_api import cel
from eval_api.cellreport import BatchReport
from eval_api.matrix import regression_of
from eval_api.quantity import parse_quantity
from eval_api.store.migrate import LATEST_VERSION
from eval_api.v1alpha1.evalsuite import EvalSuiteSpec
from eval_operator import clock, events, matrix, schedule
from eval_operator.builders import dashboard, monitoring, tls
from eval_operator.builders import suite as builders
from eval_operator.builders.netpol import build_network_policies
from eval_operator.conditions import condition_of, now_rfc3339, set_condition
from eval_operator.handlers.evaluation import Context, describe_validation_error, status_patch
from eval_operator.kube import Conflict, Forbidden, Rejected
from eval_operator.suite_status import (
    STORE_WARNINGS,
    StackFailure,
    SuiteObservation,
    desired_suite_status,
)

log = logging.getLogger(__name__)

SUITE_KIND = "EvalSuite"
WRITE_ATTEMPTS = 3
# A migration pod waiting for its Secret or image produces no Job event: look again.
MIGRATION_RECHECK_SECONDS = 10.0
# What prune may delete when the spec stops asking for it (never volumes or Secrets).
PRUNABLE_KINDS = (
    "StatefulSet",
    "Deployment",
    "CronJob",
    "Service",
    "ConfigMap",
    "NetworkPolicy",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
)
# Listed only where the Prometheus Operator's CRDs are served (a list would be a 404).
MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
TLS_KINDS = ("Issuer", "Certificate")  # where cert-manager's CRDs are served
MATRIX_CONDITIONS = ("Passed", "Regressed")
# The condition each part of the stack (its objects' app.kubernetes.io/component) belongs to:
# an object the apiserver refuses blocks that condition only. NetworkPolicies have none of
# their own: without them the suite is not isolated, so not Ready.
PART_CONDITIONS = {
    "store": "StoreReady",
    "store-backup": "StoreReady",
    "cache": "CacheReady",
    "dashboard": "DashboardReady",
    "monitoring": "MonitoringReady",
    "tls": "TLSReady",
}
# A pass that met refusals looks again after 5 s, doubling to 5 min: a fixed Role or a fixed
# object takes effect without a restart, and nothing is retried in a hot loop.
FAILURE_RECHECK_SECONDS = 5.0
FAILURE_RECHECK_MAX_SECONDS = 300.0
# How the apiserver refuses what a StatefulSet cannot change in place (its volumeClaimTemplates).
IMMUTABLE_SET = "updates to statefulset spec for fields other than"
# A volume growing is not watched (no watch on claims): look at it again this often.
VOLUME_RECHECK_SECONDS = 10.0


def suite_key(namespace: str, name: str) -> tuple[str, str, str]:
    return (SUITE_KIND, namespace, name)


def workload_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a StatefulSet or Deployment a suite's status needs."""
    status = body.get("status") or {}
    templates = (body.get("spec") or {}).get("volumeClaimTemplates") or [{}]
    # The size a StatefulSet makes its claims with: a store whose spec asks for another
    # size has a volume to grow.
    claim_size = ((templates[0].get("spec") or {}).get("resources") or {}).get("requests", {})
    view: dict[str, Any] = {"claimSize": claim_size.get("storage")}
    if not status.get("observedGeneration"):
        # Not reported on by its controller yet: starting, not down.
        return {**view, "readyReplicas": None, "availableReplicas": None}
    progressing = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {}
    )
    return {
        **view,
        "readyReplicas": status.get("readyReplicas") or 0,
        "availableReplicas": status.get("availableReplicas") or 0,
        # A Deployment's rollout: NewReplicaSetAvailable once it was complete (it stays when
        # pods are lost later), ProgressDeadlineExceeded when it is stuck.
        "progress": progressing.get("reason"),
    }


async def reconcile(
    ctx: Context, key: tuple[str, str], hint: dict[str, Any] | None
) -> float | None:
    namespace, name = key
    suite = hint if hint is not None else await ctx.kube.get_suite(namespace, name)
    for _ in range(WRITE_ATTEMPTS):
        if suite is None:
            return None
        old = suite.get("status") or {}
        status, recheck, actions = await _step(suite, ctx)
        for event in actions:
            await ctx.kube.post_event(suite, event.type, event.reason, event.message)
        if status == old:
            return recheck
        try:
            written = await ctx.kube.patch_suite_status(
                namespace, name, suite["metadata"]["resourceVersion"], status_patch(old, status)
            )
        except Conflict:
            suite = await ctx.kube.get_suite(namespace, name)
            continue
        for event in _transitions(old, status):
            await ctx.kube.post_event(written, event.type, event.reason, event.message)
        for job_name in ctx.reported.pop((namespace, name), set()):
            # Its report is in the status now: the Job has done its work.
            await ctx.kube.delete("Job", namespace, job_name)
            ctx.report_batches.get((namespace, name), {}).pop(job_name, None)
        return recheck
    return 1.0


async def _step(
    suite: dict[str, Any], ctx: Context
) -> tuple[dict[str, Any], float | None, list[events.Event]]:
    meta = suite["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = meta.get("generation") or 1
    old = suite.get("status") or {}
    try:
        spec = EvalSuiteSpec.model_validate(suite.get("spec") or {}, context=cel.ADMITTED)
    except ValidationError as err:
        # The apiserver held the spec to the CRD; this is an object older than the schema.
        return _invalid(old, generation, describe_validation_error(err)), None, []
    actions: list[events.Event] = []
    obs = SuiteObservation(
        namespace=namespace,
        name=name,
        generation=generation,
        spec=spec,
        schema_version=LATEST_VERSION,
        now=now_rfc3339(),
        # One view of the optional platforms for the whole pass: the discovery loop may
        # change them meanwhile (and then reconciles every suite again).
        prometheus_operator=ctx.platforms.prometheus_operator,
        cert_manager=ctx.platforms.cert_manager,
    )
    recheck: float | None = None
    try:
        # Before the stack: a renewed certificate's revision rolls its server.
        recheck = await _observe_certificates(spec, obs, ctx)
    except Forbidden as err:
        obs.failures.append(_denied("TLSReady", "reading the suite's Certificates", err))
        # Their revisions unseen: the servers are kept as they are, not rolled or stripped.
        obs.cert_manager = None
    await _ensure_stack(suite, spec, ctx, actions, obs)
    if spec.store.mode == "Managed":
        sts = next(
            iter(ctx.workloads.get((namespace, "StatefulSet", builders.store_name(name)), [])), None
        )
        obs.store_ready_replicas = sts["readyReplicas"] if sts else None
    if spec.cache.mode == "Managed":
        deployment = next(
            iter(ctx.workloads.get((namespace, "Deployment", builders.cache_name(name)), [])), None
        )
        obs.cache_available_replicas = deployment["availableReplicas"] if deployment else None
    if dashboard.wanted(spec):
        deployment = next(
            iter(ctx.workloads.get((namespace, "Deployment", dashboard.dashboard_name(name)), [])),
            None,
        )
        obs.dashboard_available_replicas = deployment["availableReplicas"] if deployment else None
        obs.dashboard_progress = deployment.get("progress") if deployment else None
    try:
        migration_recheck = await _follow_migration(suite, spec, obs, ctx, actions)
    except Forbidden as err:
        obs.failures.append(_denied("StoreReady", "the schema migration Job", err))
    else:
        recheck = _earliest(recheck, migration_recheck)
    if (namespace, name) in ctx.volume_notes or obs.store_set_replaced:
        recheck = _earliest(recheck, 1.0 if obs.store_set_replaced else VOLUME_RECHECK_SECONDS)
    if obs.failures:
        failures = ctx.stack_failures.get((namespace, name), 0)
        ctx.stack_failures[(namespace, name)] = failures + 1
        backoff = min(FAILURE_RECHECK_SECONDS * 2**failures, FAILURE_RECHECK_MAX_SECONDS)
        recheck = _earliest(recheck, backoff)
    else:
        ctx.stack_failures.pop((namespace, name), None)
    status = desired_suite_status(old, obs)
    status, matrix_recheck = await _reconcile_matrix(suite, spec, status, ctx, actions, obs)
    return status, _earliest(recheck, matrix_recheck), actions


def _earliest(*delays: float | None) -> float | None:
    return min((d for d in delays if d is not None), default=None)


def _denied(condition: str, what: str, err: Forbidden) -> StackFailure:
    return StackFailure(
        condition,
        "PermissionDenied",
        f"{what}: {err.explained()}",
    )


async def _observe_certificates(
    spec: EvalSuiteSpec, obs: SuiteObservation, ctx: Context
) -> float | None:
    """The suite's Certificates' Ready conditions (TLSReady); look again while cert-manager
    is at work."""
    if not tls.active(spec, obs.cert_manager):
        return None
    selector = f"{builders.SUITE_LABEL}={obs.name}"
    for cert in await ctx.kube.list_objects("Certificate", obs.namespace, selector):
        ready = next(
            (
                c
                for c in (cert.get("status") or {}).get("conditions") or []
                if c.get("type") == "Ready"
            ),
            {},
        )
        obs.certificates.append(
            (cert["metadata"]["name"], ready.get("status", "Unknown"), ready.get("message", ""))
        )
        obs.certificate_revisions[cert["metadata"]["name"]] = (cert.get("status") or {}).get(
            "revision"
        )
    if any(status != "True" for _, status, _ in obs.certificates) or not obs.certificates:
        return MIGRATION_RECHECK_SECONDS
    return None


async def _follow_migration(
    suite: dict[str, Any],
    spec: EvalSuiteSpec,
    obs: SuiteObservation,
    ctx: Context,
    actions: list[events.Event],
) -> float | None:
    """The schema migration Job: made once the store is up, followed to its end, made again
    after the Job controller gave up."""
    namespace = obs.namespace
    job = builders.build_migration_job(suite, spec, LATEST_VERSION, ctx.settings)
    if tls.active(spec, obs.cert_manager):
        job = tls.with_tls_clients(job, obs.name, spec)
    obs.migration_job = job["metadata"]["name"]
    store_up = spec.store.mode == "External" or bool(obs.store_ready_replicas)
    # Whether the store speaks TLS is not known yet: the Job waits (platforms' change
    # brings every suite back).
    store_up = store_up and not tls.undecided(spec, obs.cert_manager)
    seen = next(iter(ctx.jobs.get((namespace, obs.migration_job), [])), None)
    if seen is None and store_up:
        if await ctx.kube.create(job):
            actions.append(events.normal("MigrationStarted", f"Created Job {obs.migration_job}"))
        seen = {"status": {}}
    if seen is None:
        return None
    obs.migration = seen.get("status") or {}
    finished = any(
        c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
        for c in obs.migration.get("conditions") or []
    )
    pods = await ctx.kube.list_objects("Pod", namespace, f"job-name={obs.migration_job}")
    obs.migration_pods = _pod_facts(pods)
    if not finished:
        return MIGRATION_RECHECK_SECONDS
    if _backoff_exhausted(obs.migration):
        # The Job controller gave up after its retries: start over, at its pace.
        await ctx.kube.delete("Job", namespace, obs.migration_job)
        return MIGRATION_RECHECK_SECONDS
    if any(
        c.get("type") == "Complete" and c.get("status") == "True"
        for c in obs.migration.get("conditions") or []
    ):
        await _prune_migrations(suite, obs, ctx, actions)
    return None


async def _prune_migrations(
    suite: dict[str, Any], obs: SuiteObservation, ctx: Context, actions: list[events.Event]
) -> None:
    """The suite's older migration Jobs (of another fingerprint: an older operator, TLS turned
    on, ...) deleted once the current one has completed; once per current Job. The current Job
    stays: StoreReady reads it, and without it the migration would run again."""
    key = (obs.namespace, obs.name)
    if ctx.migrations_pruned.get(key) == obs.migration_job:
        return
    selector = f"{builders.SUITE_LABEL}={obs.name},app.kubernetes.io/component=store-migration"
    uid = suite["metadata"].get("uid")
    for job in await ctx.kube.list_objects("Job", obs.namespace, selector):
        job_name = job["metadata"]["name"]
        owners = {ref.get("uid") for ref in job["metadata"].get("ownerReferences") or []}
        if job_name == obs.migration_job or uid not in owners:
            continue
        if await ctx.kube.delete("Job", obs.namespace, job_name):
            actions.append(
                events.normal(
                    "Pruned",
                    f"Deleted Job {job_name} (an older schema migration; "
                    f"{obs.migration_job} has completed)",
                )
            )
    ctx.migrations_pruned[key] = obs.migration_job


async def _reconcile_matrix(
    suite: dict[str, Any],
    spec: EvalSuiteSpec,
    status: dict[str, Any],
    ctx: Context,
    actions: list[events.Event],
    obs: SuiteObservation,
) -> tuple[dict[str, Any], float | None]:
    """The cells, their reports and the verdict: see eval_operator.matrix."""
    meta = suite["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = meta.get("generation") or 1
    old = suite.get("status") or {}
    views = {v["name"]: v for v in ctx.cells.get((namespace, name), [])}
    if not spec.has_matrix:
        for view in views.values():
            if meta.get("uid") in view["owners"]:
                await ctx.kube.delete("Evaluation", namespace, view["name"])
        conditions = [c for c in status["conditions"] if c["type"] not in MATRIX_CONDITIONS]
        return {**status, "conditions": conditions}, None
    batches = await _report_batches(ctx, namespace, name)
    inp = matrix.MatrixInput(
        suite=suite,
        spec=spec,
        old=old,
        cells=views,
        reports={},
        now=clock.now(),
        batches=dict(batches),
    )
    planned = matrix.plan(inp, ctx.settings)
    reports: dict[str, Any] = {}
    alpha = regression_of(spec).alpha
    for job in planned.report_jobs:
        if tls.active(spec, obs.cert_manager):
            job = tls.with_tls_clients(job, name, spec)
        job_name = job["metadata"]["name"]
        seen = next(iter(ctx.jobs.get((namespace, job_name), [])), None)
        if seen is None:
            if tls.undecided(spec, obs.cert_manager):
                continue  # made once discovery says whether the store speaks TLS
            # New, or not delivered by the watch yet (a 409 then), or gone: asked (again).
            runs = matrix.report_runs(job)
            if await ctx.kube.create(job):
                actions.append(
                    events.normal(
                        "CellReportStarted", f"Created Job {job_name} ({len(runs)} cells)"
                    )
                )
            batches.setdefault(job_name, runs)
            continue
        job_status = seen.get("status") or {}
        if _backoff_exhausted(job_status):
            await ctx.kube.delete("Job", namespace, job_name)  # the store was down: again
            batches.pop(job_name, None)
            continue
        if not any(
            c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
            for c in job_status.get("conditions") or []
        ):
            continue
        runs = matrix.report_runs(seen) or batches.get(job_name) or matrix.report_runs(job)
        pods = await ctx.kube.list_objects("Pod", namespace, f"job-name={job_name}")
        message = next((m for _, _, m in _pod_facts(pods) if m), "")
        try:
            batch = BatchReport.model_validate_json(message)
        except ValidationError:
            batch = BatchReport.failed("ReportMissing", f"Job {job_name} left no report")
        reports[job_name] = batch.reports(runs, alpha)
    if reports:
        inp.reports = reports
        planned = matrix.plan(inp, ctx.settings)
    for job_name in planned.stale_reports:
        # No cell waits for it any more (its cells were run again, or reported).
        await ctx.kube.delete("Job", namespace, job_name)
        batches.pop(job_name, None)
    ctx.reported[(namespace, name)] = set(reports)
    denied: list[StackFailure] = []
    for cell in planned.apply:
        try:
            await ctx.kube.apply(cell)
        except Rejected as err:
            planned.problems.append(
                f"Evaluation {cell['metadata']['name']}: the apiserver rejected it: {err.message}"
            )
        except Forbidden as err:
            denied.append(_denied("Ready", f"Evaluation {cell['metadata']['name']}", err))
    for cell_name in planned.delete:
        if await ctx.kube.delete("Evaluation", namespace, cell_name):
            actions.append(
                events.normal("CellDeleted", f"Deleted Evaluation {cell_name} (not in the matrix)")
            )
    for type_, reason, message in planned.events:
        actions.append(events.Event(type_, reason, message))
    conditions = status["conditions"]
    now = now_rfc3339()

    def set_(type_: str, value: str, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_, value, reason, message, generation, now)

    if denied:
        # The operator's permission, not the spec: retried with the stack's back-off.
        message = "; ".join(f.message for f in denied)
        set_("Ready", "False", "PermissionDenied", message)
        set_("Progressing", "False", "PermissionDenied", message)
        set_("Stalled", "True", "PermissionDenied", message)
        planned.recheck = _earliest(planned.recheck, FAILURE_RECHECK_SECONDS)
    elif planned.problems:
        message = "; ".join(planned.problems)
        set_("Ready", "False", "InvalidSpec", message)
        set_("Progressing", "False", "InvalidSpec", message)
        set_("Stalled", "True", "InvalidSpec", message)
        set_("Passed", "Unknown", "InvalidSpec", message)
    else:
        stack_ready = condition_of(status, "Ready").get("status") == "True"
        for type_, value, reason, message in planned.conditions:
            if type_ == "Progressing" and not stack_ready:
                continue  # the stack coming up (or stalled) is what Progressing says
            set_(type_, value, reason, message)
    if spec.baseline is None:
        conditions = [c for c in conditions if c["type"] != "Regressed"]
    return {**status, **planned.status, "conditions": conditions}, planned.recheck


async def _report_batches(ctx: Context, namespace: str, name: str) -> dict[str, tuple[str, ...]]:
    """The suite's report Jobs asked for so far and the runs each asks about; after a start,
    the ones the cluster holds (listed once)."""
    batches = ctx.report_batches.get((namespace, name))
    if batches is None:
        selector = (
            f"{builders.SUITE_LABEL}={name},app.kubernetes.io/component={matrix.REPORT_COMPONENT}"
        )
        batches = {
            job["metadata"]["name"]: runs
            for job in await ctx.kube.list_objects("Job", namespace, selector)
            if (runs := matrix.report_runs(job))
        }
        ctx.report_batches[(namespace, name)] = batches
    return batches


def _invalid(old: Mapping[str, Any], generation: int, message: str) -> dict[str, Any]:
    conditions = list(old.get("conditions") or [])
    now = now_rfc3339()
    for type_ in ("Ready", "StoreReady", "CacheReady"):
        conditions = set_condition(
            conditions, type_, "False", "InvalidSpec", message, generation, now
        )
    return {**old, "observedGeneration": generation, "conditions": conditions}


def _backoff_exhausted(job_status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Failed"
        and c.get("status") == "True"
        and c.get("reason") == "BackoffLimitExceeded"
        for c in job_status.get("conditions") or []
    )


def _pod_facts(pods: list[dict[str, Any]]) -> list[tuple[str | None, str, str]]:
    """(waiting reason, its message, termination message) of each pod, newest first."""
    facts = []
    ordered = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    for pod in ordered:
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        state = (statuses[0].get("state") if statuses else None) or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or {}
        facts.append(
            (waiting.get("reason"), waiting.get("message") or "", terminated.get("message") or "")
        )
    return facts


def _failure(obj: Mapping[str, Any], err: Forbidden | Rejected) -> StackFailure:
    labels = obj["metadata"].get("labels") or {}
    condition = PART_CONDITIONS.get(labels.get("app.kubernetes.io/component", ""), "Ready")
    what = f"{obj['kind']} {obj['metadata']['name']}"
    if isinstance(err, Forbidden):
        return _denied(condition, what, err)
    return StackFailure(condition, "ObjectRejected", f"{what}: {err.message}")


async def _ensure_stack(
    suite: dict[str, Any],
    spec: EvalSuiteSpec,
    ctx: Context,
    actions: list[events.Event],
    obs: SuiteObservation,
) -> None:
    """Every object of the stack applied; what the apiserver refuses is kept in the
    observation's failures and the rest goes on, so that one refusal blocks only its part."""
    name = suite["metadata"]["name"]
    failures = obs.failures
    secrets = []
    if spec.store.mode == "Managed":
        secrets.append(builders.build_store_secret(suite, spec, builders.new_password()))
        secrets.append(builders.build_app_secret(suite, builders.new_password()))
    if spec.cache.mode == "Managed":
        secrets.append(builders.build_cache_secret(suite, builders.new_password()))
    if spec.store.mode == "Managed" and dashboard.wanted(spec):
        secrets.append(dashboard.build_reader_secret(suite, builders.new_password()))
    for secret in secrets:
        try:
            created = await ctx.kube.create(secret)
        except (Forbidden, Rejected) as err:
            failures.append(_failure(secret, err))
            continue
        if created:
            what = f"Generated Secret {secret['metadata']['name']}"
            if secret["metadata"]["name"] == dashboard.reader_secret_name(name):
                what += " (the dashboard's read-only role)"
            elif secret["metadata"]["name"] == builders.app_secret_name(name):
                what += " (the store's application role)"
            actions.append(events.normal("SecretCreated", what))
    desired = builders.desired_objects(suite, spec, ctx.settings)
    desired = monitoring.with_exporters(desired, suite, spec, ctx.settings)
    desired += dashboard.dashboard_objects(suite, spec, ctx.settings)
    desired += monitoring.core_objects(suite, spec)
    if obs.prometheus_operator:
        desired += monitoring.prometheus_objects(suite, spec)
    # With cert-manager, the servers on TLS and every pod's clients verifying them; while
    # discovery has not said whether it is served, what TLS would change is kept as it is.
    desired, kept = tls.stack_objects(
        desired, suite, spec, obs.cert_manager, obs.certificate_revisions
    )
    members = ctx.members.get((suite["metadata"]["namespace"], name), [])
    ports = sorted({port for member in members for port in member["ports"]})
    desired += build_network_policies(suite, spec, ctx.settings, extra_ports=ports)
    if spec.store.mode == "Managed":
        try:
            await _grow_store_volume(suite, spec, ctx, actions, obs)
        except Forbidden as err:
            failures.append(_denied("StoreReady", "growing the store's volume", err))
    backup_problems = _backup_problems(spec)
    if backup_problems:
        failures.append(StackFailure("StoreReady", "InvalidSpec", "; ".join(backup_problems)))
    for obj in desired:
        if obj["kind"] == "CronJob" and backup_problems:
            continue  # the backup CronJob stays as it was (prune keeps it: still desired)
        try:
            await ctx.kube.apply(obj)
        except Rejected as err:
            if obj["kind"] == "StatefulSet" and IMMUTABLE_SET in err.message:
                await _replace_store_set(obj, ctx, actions)
                obs.store_set_replaced = True
            elif obj["kind"] == "PersistentVolumeClaim":
                # The backup volume: a class that cannot grow it (or a claim not bound yet)
                # leaves it at its size; the store itself is not held back for it.
                size = obj["spec"]["resources"]["requests"]["storage"]
                obs.notes.append(
                    ("StoreReady", f"the backup volume stays as it is, not {size}: {err.message}")
                )
            else:
                failures.append(_failure(obj, err))
        except Forbidden as err:
            failures.append(_failure(obj, err))
    try:
        await _prune(suite, desired + kept, ctx, actions, obs)
    except Forbidden as err:
        failures.append(_denied("Ready", "pruning what the spec no longer asks for", err))


def _backup_problems(spec: EvalSuiteSpec) -> list[str]:
    """A backup schedule the apiserver would refuse in the CronJob (a cron field out of range,
    an unknown time zone), named by the suite's field rather than as the CronJob's refusal."""
    managed = builders.managed_store(spec)
    if managed is None or not managed.backup.enabled:
        return []
    return schedule.problems(
        managed.backup.schedule,
        managed.backup.time_zone,
        cron_at="spec.store.managed.backup.schedule",
        zone_at="spec.store.managed.backup.timeZone",
    )


async def _prune(
    suite: dict[str, Any],
    desired: list[dict[str, Any]],
    ctx: Context,
    actions: list[events.Event],
    obs: SuiteObservation,
) -> None:
    """Delete the objects of this suite that the spec no longer asks for (a cache disabled, a
    store made external). Volumes and Secrets stay: data is never pruned."""
    namespace, name = suite["metadata"]["namespace"], suite["metadata"]["name"]
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    uid = suite["metadata"].get("uid")
    selector = f"{builders.SUITE_LABEL}={name},app.kubernetes.io/managed-by={builders.MANAGED_BY}"
    kinds = PRUNABLE_KINDS + (MONITORING_KINDS if obs.prometheus_operator else ())
    kinds += TLS_KINDS if obs.cert_manager else ()
    key = (namespace, name, tuple(sorted(wanted)), kinds)
    if ctx.pruned.get((namespace, name)) == key:
        return  # nothing was wanted differently since the last pass that pruned
    for kind in kinds:
        for obj in await ctx.kube.list_objects(kind, namespace, selector):
            owners = {ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or []}
            component = (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
            if component == "store-migration" or uid not in owners:
                continue
            if (kind, obj["metadata"]["name"]) not in wanted:
                await ctx.kube.delete(kind, namespace, obj["metadata"]["name"])
                actions.append(
                    events.normal(
                        "Pruned",
                        f"Deleted {kind} {obj['metadata']['name']} (no longer in the spec)",
                    )
                )
    ctx.pruned[(namespace, name)] = key


def _transitions(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[events.Event]:
    """Events for the suite's conditions that changed: Warnings for what needs a person."""
    found = []
    for type_ in (
        "StoreReady",
        "CacheReady",
        "DashboardReady",
        "MonitoringReady",
        "TLSReady",
        "Ready",
    ):
        before, after = condition_of(old, type_), condition_of(new, type_)
        if (before.get("status"), before.get("reason")) == (
            after.get("status"),
            after.get("reason"),
        ):
            continue
        reason = after.get("reason", "")
        if after.get("status") == "True":
            if type_ != "Ready":
                found.append(events.normal(type_, after.get("message", "")))
        elif reason in STORE_WARNINGS or reason == "InvalidSpec":
            found.append(events.Event("Warning", reason, f"{type_}: {after.get('message', '')}"))
    return found


async def _grow_store_volume(
    suite: dict[str, Any],
    spec: EvalSuiteSpec,
    ctx: Context,
    actions: list[events.Event],
    obs: SuiteObservation,
) -> None:
    """store.managed.size grown on the live volume: a StatefulSet cannot change the claims it
    made, so the claim itself is asked for more (the volume grows online where its
    StorageClass allows expansion); where it does not, StoreReady says so and the store goes
    on at its size. Read only while a change is pending or a volume is growing."""
    namespace, name = obs.namespace, obs.name
    managed = builders.managed_store(spec)
    assert managed is not None  # the store's mode is Managed
    store = builders.store_name(name)
    view = next(iter(ctx.workloads.get((namespace, "StatefulSet", store), [])), None)
    template_size = (view or {}).get("claimSize")
    if (namespace, name) not in ctx.volume_notes and (
        template_size is None or parse_quantity(template_size) == parse_quantity(managed.size)
    ):
        return
    claim_name = f"data-{store}-0"
    claim = await ctx.kube.get_object("PersistentVolumeClaim", namespace, claim_name)
    if claim is None:
        ctx.volume_notes.pop((namespace, name), None)
        return  # the set makes it from its template, at the new size
    wanted = str(managed.size)
    requested = (claim["spec"].get("resources") or {}).get("requests", {}).get("storage", "0")
    capacity = ((claim.get("status") or {}).get("capacity") or {}).get("storage")
    note = None
    if parse_quantity(wanted) > parse_quantity(requested):
        try:
            await ctx.kube.merge_patch(
                "PersistentVolumeClaim",
                namespace,
                claim_name,
                {"spec": {"resources": {"requests": {"storage": wanted}}}},
            )
        except Rejected as err:
            note = (
                f"the data volume {claim_name} stays {requested} (store.managed.size asks "
                f"{wanted}): {err.message}"
            )
            if ctx.volume_notes.get((namespace, name)) != note:
                actions.append(events.Event("Warning", "VolumeNotExpandable", note))
        else:
            actions.append(
                events.normal(
                    "VolumeExpanding", f"Asked {claim_name} for {wanted} (was {requested})"
                )
            )
            requested = wanted
    if (
        note is None
        and capacity is not None
        and parse_quantity(capacity) < parse_quantity(requested)
    ):
        note = f"the data volume {claim_name} is growing to {requested} (now {capacity})"
    if note is None:
        ctx.volume_notes.pop((namespace, name), None)
        return
    ctx.volume_notes[(namespace, name)] = note
    obs.notes.append(("StoreReady", note))


async def _replace_store_set(
    sts: dict[str, Any], ctx: Context, actions: list[events.Event]
) -> None:
    """A StatefulSet whose volumeClaimTemplates changed (a bigger store) cannot be updated in
    place: it is deleted with its pod left running (propagation Orphan) and the next pass,
    woken by the deletion, makes it again; the new set adopts the pod and the claims, which
    _grow_store_volume has grown already. The database never stops."""
    meta = sts["metadata"]
    if await ctx.kube.delete("StatefulSet", meta["namespace"], meta["name"], propagation="Orphan"):
        actions.append(
            events.normal(
                "StoreSetReplaced",
                f"StatefulSet {meta['name']} deleted with its pod kept, to be made again with "
                "its new volumeClaimTemplates (store.managed.size)",
            )
        )


def forget(ctx: Context, namespace: str, name: str) -> None:
    ctx.pruned.pop((namespace, name), None)
    ctx.volume_notes.pop((namespace, name), None)
    ctx.stack_failures.pop((namespace, name), None)
    ctx.reported.pop((namespace, name), None)
    ctx.report_batches.pop((namespace, name), None)
    ctx.migrations_pruned.pop((namespace, name), None)
