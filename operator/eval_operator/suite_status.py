"""An EvalSuite's status from what the operator observed of its stack: a pure function.

StoreReady: the managed StatefulSet has a ready pod (or the store is external) and the schema
migration Job reached the shipped schema version; until then StoreProvisioning, and after a
failed migration attempt its reason (StoreUnreachable, StoreAuthenticationFailed,
InvalidStoreSecret, MigrationFailed, ExternalSecretNotFound) while the Job retries.
CacheReady: the managed Deployment is available, or the external cache answered the migration
Job's check; Disabled counts as ready. Ready: both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from eval_api.stackcheck import StackReport
from eval_api.v1alpha1.evalsuite import EvalSuiteSpec
from eval_api.v1alpha1.matrix import ACCEPT_RUN_ANNOTATION
from eval_operator.builders import dashboard as dashboards
from eval_operator.builders import suite as builders
from eval_operator.builders import tls
from eval_operator.conditions import condition_of, set_condition

# The kubelet's reasons for a pod that cannot start its container: for a migration pod, the
# external Secret (or one of the keys it names) does not exist, or the image is wrong.
CANNOT_START = ("CreateContainerConfigError", "ErrImagePull", "ImagePullBackOff")
# Reasons of a stack on its way up: nothing is wrong yet.
PROVISIONING_REASONS = frozenset(
    {"StoreProvisioning", "CacheProvisioning", "DashboardProvisioning"}
)
STORE_WARNINGS = frozenset(
    {
        "StoreUnreachable",
        "StoreAuthenticationFailed",
        "InvalidStoreSecret",
        "MigrationFailed",
        "ExternalSecretNotFound",
        "CacheUnreachable",
        "CacheUnavailable",
        "InvalidCacheURL",
        "ImagePullBackOff",
        "ErrImagePull",
        "ReadOnlyCredentialsNeeded",
        "ReaderRoleFailed",
        "DashboardUnavailable",
        "PrometheusOperatorNotInstalled",
        "CertManagerNotInstalled",
        "PermissionDenied",
        "ObjectRejected",
    }
)


@dataclass(frozen=True)
class StackFailure:
    """An object of the stack the apiserver would not take: it blocks only the condition of
    the part it belongs to (a PrometheusRule refused leaves the store Ready)."""

    condition: str  # StoreReady, CacheReady, DashboardReady, MonitoringReady, TLSReady, Ready
    reason: str  # PermissionDenied (the operator's RBAC) or ObjectRejected
    message: str


@dataclass
class SuiteObservation:
    """What one reconcile saw of the suite's stack."""

    namespace: str
    name: str
    generation: int
    spec: EvalSuiteSpec
    schema_version: int  # the schema this operator ships
    now: str
    store_ready_replicas: int | None = None  # the managed StatefulSet's; None: not seen yet
    cache_available_replicas: int | None = None  # the managed Deployment's
    dashboard_available_replicas: int | None = None  # the dashboard Deployment's
    dashboard_progress: str | None = None  # its Progressing condition's reason
    # Its CRDs are served (eval_operator.platforms); None: discovery has not said.
    prometheus_operator: bool | None = False
    cert_manager: bool | None = False
    # The suite's Certificates: (name, Ready condition status, its message).
    certificates: list[tuple[str, str, str]] = field(default_factory=list)
    # Their status.revision (cert-manager's count of issuances), by name: a renewal rolls
    # the server that uses it.
    certificate_revisions: dict[str, int | None] = field(default_factory=dict)
    migration_job: str = ""
    migration: Mapping[str, Any] | None = None  # the migration Job's status, None: not made
    # The migration pods, newest first: (waiting reason, message, termination message).
    migration_pods: list[tuple[str | None, str, str]] = field(default_factory=list)
    waiting_for_store: bool = False  # the Job is not made before the managed store is up
    failures: list[StackFailure] = field(default_factory=list)
    # What a condition's message adds, without changing its status: (condition, text), e.g.
    # a volume the StorageClass does not let grow (the store still works at its old size).
    notes: list[tuple[str, str]] = field(default_factory=list)
    store_set_replaced: bool = False  # the store's StatefulSet deleted to be made again


def _finished(job_status: Mapping[str, Any], type_: str) -> bool:
    return any(
        c.get("type") == type_ and c.get("status") == "True"
        for c in job_status.get("conditions") or []
    )


def _report(message: str) -> StackReport | None:
    try:
        return StackReport.model_validate_json(message) if message.strip() else None
    except ValidationError:
        return None


def store_condition(obs: SuiteObservation) -> tuple[str, str, str, StackReport | None]:
    """StoreReady as (status, reason, message) and the last migration report seen."""
    managed = obs.spec.store.mode == "Managed"
    reports = [r for r in (_report(p[2]) for p in obs.migration_pods) if r is not None]
    succeeded = next((r for r in reports if r.state == "done"), None)
    if managed and not obs.store_ready_replicas:
        if obs.migration is not None and _finished(obs.migration, "Complete") and succeeded:
            return "False", "StoreUnreachable", "the PostgreSQL pod is not ready", succeeded
        return (
            "False",
            "StoreProvisioning",
            f"waiting for PostgreSQL (StatefulSet {builders.store_name(obs.name)}) to be ready",
            None,
        )
    if obs.migration is None:
        return "False", "StoreProvisioning", "applying the schema migrations", None
    if _finished(obs.migration, "Complete"):
        version = succeeded.schema_version if succeeded else obs.schema_version
        endpoint = succeeded.endpoint if succeeded else None
        where = f"PostgreSQL at {endpoint}" if endpoint else "PostgreSQL"
        return "True", "Ready", f"{where}, schema version {version}", succeeded
    waiting = next((p for p in obs.migration_pods if p[0] in CANNOT_START), None)
    if waiting is not None and obs.migration_pods and waiting is obs.migration_pods[0]:
        reason, message, _ = waiting
        if reason == "CreateContainerConfigError" and not managed:
            return "False", "ExternalSecretNotFound", f"store.external.secretRef: {message}", None
        return "False", reason or "StoreProvisioning", message, None
    failed = next((r for r in reports if r.state == "error"), None)
    if failed is not None:
        retrying = "" if _finished(obs.migration, "Failed") else " (retrying)"
        return (
            "False",
            failed.reason or "MigrationFailed",
            f"{failed.message or 'the migration failed'}{retrying}",
            failed,
        )
    if _finished(obs.migration, "Failed"):
        return "False", "MigrationFailed", f"Job {obs.migration_job} failed", None
    return (
        "False",
        "StoreProvisioning",
        f"applying the schema migrations (Job {obs.migration_job})",
        None,
    )


def cache_condition(obs: SuiteObservation, report: StackReport | None) -> tuple[str, str, str]:
    mode = obs.spec.cache.mode
    if mode == "Disabled":
        return "True", "Disabled", "the response cache is disabled"
    if mode == "Managed":
        if obs.cache_available_replicas:
            endpoint = f"{builders.cache_host(obs.name, obs.namespace)}:{builders.REDIS_PORT}"
            return "True", "Ready", f"Redis at {endpoint}"
        deployment = builders.cache_name(obs.name)
        if obs.cache_available_replicas == 0:
            # Seen, and not available: down (or starting); runs go on without the cache.
            return "False", "CacheUnavailable", f"Redis (Deployment {deployment}) is not available"
        return "False", "CacheProvisioning", f"waiting for Redis (Deployment {deployment})"
    if report is None:
        return "False", "CacheProvisioning", "checked with the store's schema migration"
    if report.cache.state == "ok":
        return "True", "Ready", f"Redis at {report.cache.endpoint or 'the external URL'}"
    return (
        "False",
        report.cache.reason or "CacheUnreachable",
        report.cache.message or "the cache did not answer",
    )


def dashboard_condition(
    obs: SuiteObservation, report: StackReport | None, store_ready: bool
) -> tuple[str, str, str, bool]:
    """DashboardReady as (status, reason, message, deployed): a dashboard that cannot be
    deployed as configured says why but does not hold Ready back (the runs do not need it)."""
    if not obs.spec.dashboard.enabled:
        return "True", "Disabled", "the dashboard is disabled", False
    blocked = dashboards.blocked_reason(obs.spec)
    if blocked is not None:
        return "False", blocked[0], blocked[1], False
    deployment = dashboards.dashboard_name(obs.name)
    if report is not None and report.reader.state == "failed":
        message = f"the store's read-only role: {report.reader.message or 'not made'}"
        return "False", "ReaderRoleFailed", message, True
    if obs.dashboard_available_replicas:
        url = dashboards.dashboard_url(obs.name, obs.namespace, _tls(obs))
        return "True", "Ready", f"{url} ({obs.dashboard_available_replicas} replica(s))", True
    if not store_ready:
        # Its readiness is the store's: nothing is wrong with the dashboard itself.
        return "False", "DashboardProvisioning", "waiting for the store", True
    if obs.dashboard_progress == "ProgressDeadlineExceeded" or (
        obs.dashboard_available_replicas == 0 and obs.dashboard_progress == "NewReplicaSetAvailable"
    ):
        return (
            "False",
            "DashboardUnavailable",
            f"no replica of Deployment {deployment} is ready (kubectl describe deployment "
            f"{deployment}; its /readyz says which component does not answer)",
            True,
        )
    return "False", "DashboardProvisioning", f"waiting for Deployment {deployment}", True


def _tls(obs: SuiteObservation) -> bool:
    # While discovery has not answered, the stack keeps the TLS it has.
    return tls.active(obs.spec, obs.cert_manager) or tls.undecided(obs.spec, obs.cert_manager)


def tls_condition(obs: SuiteObservation) -> tuple[str, str, str]:
    """TLSReady: an optional platform; without cert-manager the stack runs without TLS."""
    if not obs.spec.tls.enabled:
        return "True", "Disabled", "spec.tls.enabled is false"
    if obs.cert_manager is None:
        return (
            "Unknown",
            "PlatformUnknown",
            "API discovery of cert-manager.io/v1 has not answered yet: the stack's TLS is kept "
            "as it is (nothing stripped, nothing added) until it does; retried shortly",
        )
    if not obs.cert_manager:
        return (
            "False",
            "CertManagerNotInstalled",
            "cert-manager.io/v1 (Issuer, Certificate) is not served: the stack runs without "
            "TLS; install cert-manager and it is noticed without a restart",
        )
    wanted = set(tls.certificate_names(obs.name, obs.spec))
    seen = {name: (status, message) for name, status, message in obs.certificates}
    waiting = sorted(n for n in wanted if seen.get(n, ("", ""))[0] != "True")
    if waiting:
        detail = "; ".join(f"{n}: {seen[n][1]}" if n in seen and seen[n][1] else n for n in waiting)
        return "False", "CertificatesNotReady", f"waiting for cert-manager to issue {detail}"
    issuer = obs.spec.tls.issuer_ref.name if obs.spec.tls.issuer_ref else "the suite's own CA"
    return (
        "True",
        "Ready",
        f"{len(wanted)} certificate(s) issued by {issuer}, renewed "
        f"{obs.spec.tls.renew_before} before they expire",
    )


def monitoring_condition(obs: SuiteObservation) -> tuple[str, str, str]:
    """MonitoringReady: an optional platform; it never holds Ready back."""
    if not obs.spec.monitoring.enabled:
        return "True", "Disabled", "spec.monitoring.enabled is false"
    if obs.prometheus_operator is None:
        return (
            "Unknown",
            "PlatformUnknown",
            "API discovery of monitoring.coreos.com/v1 has not answered yet: the suite's "
            "monitors are kept as they are until it does; retried shortly",
        )
    if not obs.prometheus_operator:
        return (
            "False",
            "PrometheusOperatorNotInstalled",
            "monitoring.coreos.com/v1 (ServiceMonitor, PodMonitor, PrometheusRule) is not "
            "served: install the Prometheus Operator (kube-prometheus-stack); it is noticed "
            "without a restart",
        )
    alerts = builders.child_name(obs.name, "alerts")
    runners = builders.child_name(obs.name, "runners")
    return (
        "True",
        "Ready",
        f"ServiceMonitors, PodMonitor {runners} and PrometheusRule {alerts} applied",
    )


def desired_suite_status(old: Mapping[str, Any], obs: SuiteObservation) -> dict[str, Any]:
    conditions = list(old.get("conditions") or [])

    def failed(type_: str, found: tuple[str, str, str]) -> tuple[str, str, str]:
        """The condition as observed, unless an object of its part was refused; with the
        notes about its part."""
        mine = [f for f in obs.failures if f.condition == type_]
        status, reason, message = (
            ("False", mine[0].reason, "; ".join(f.message for f in mine)) if mine else found
        )
        notes = [text for condition, text in obs.notes if condition == type_]
        return status, reason, "; ".join([message, *notes]) if notes else message

    store_status, store_reason, store_message, report = store_condition(obs)
    store_status, store_reason, store_message = failed(
        "StoreReady", (store_status, store_reason, store_message)
    )
    cache_status, cache_reason, cache_message = failed("CacheReady", cache_condition(obs, report))
    dash_status, dash_reason, dash_message, deployed = dashboard_condition(
        obs, report, store_status == "True"
    )
    dash_status, dash_reason, dash_message = failed(
        "DashboardReady", (dash_status, dash_reason, dash_message)
    )

    def set_(type_: str, status: str, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(
            conditions, type_, status, reason, message, obs.generation, obs.now
        )

    set_("StoreReady", store_status, store_reason, store_message)
    set_("CacheReady", cache_status, cache_reason, cache_message)
    set_("DashboardReady", dash_status, dash_reason, dash_message)
    set_("MonitoringReady", *failed("MonitoringReady", monitoring_condition(obs)))
    set_("TLSReady", *failed("TLSReady", tls_condition(obs)))
    own = failed("Ready", ("True", "Ready", ""))  # what belongs to no part: NetworkPolicies
    if store_status != "True":
        ready_reason, ready_message = store_reason, f"store: {store_message}"
    elif cache_status != "True":
        ready_reason, ready_message = cache_reason, f"cache: {cache_message}"
    elif deployed and dash_status != "True":
        ready_reason, ready_message = dash_reason, f"dashboard: {dash_message}"
    elif own[0] != "True":
        ready_reason, ready_message = own[1], own[2]
    else:
        ready_reason, ready_message = "Ready", "the stack is ready"
    set_("Ready", "True" if ready_reason == "Ready" else "False", ready_reason, ready_message)
    # The kstatus pair that GitOps health checks read (Argo CD's Lua, Flux's CEL): the stack
    # is coming up (Progressing), or it waits for a person to fix something (Stalled). The
    # stack retries on its own either way, and recovers once the cause is gone.
    provisioning = ready_reason in PROVISIONING_REASONS
    if ready_reason == "Ready":
        set_("Progressing", "False", "Ready", "")
        set_("Stalled", "False", "Ready", "")
    elif provisioning:
        set_("Progressing", "True", ready_reason, ready_message)
        set_("Stalled", "False", ready_reason, "")
    else:
        set_("Progressing", "False", ready_reason, ready_message)
        set_("Stalled", "True", ready_reason, ready_message)

    store: dict[str, Any] = {
        "mode": obs.spec.store.mode,
        "secretName": builders.store_secret_of(obs.name, obs.spec),
    }
    if obs.spec.store.mode == "Managed":
        host = builders.store_host(obs.name, obs.namespace)
        store["endpoint"] = f"{host}:{builders.POSTGRES_PORT}/{builders.STORE_DBNAME}"
    elif report is not None and report.endpoint:
        store["endpoint"] = report.endpoint
    elif (old.get("store") or {}).get("endpoint"):
        store["endpoint"] = old["store"]["endpoint"]
    if store_status == "True" and report is not None and report.schema_version is not None:
        store["schemaVersion"] = report.schema_version
    elif (old.get("store") or {}).get("schemaVersion") is not None:
        store["schemaVersion"] = old["store"]["schemaVersion"]

    cache: dict[str, Any] = {"mode": obs.spec.cache.mode}
    if obs.spec.cache.mode == "Managed":
        cache["endpoint"] = f"{builders.cache_host(obs.name, obs.namespace)}:{builders.REDIS_PORT}"
        cache["secretName"] = builders.cache_secret_name(obs.name)
    elif obs.spec.cache.mode == "External":
        assert obs.spec.cache.external is not None
        cache["secretName"] = obs.spec.cache.external.secret_ref.name
        if report is not None and report.cache.endpoint:
            cache["endpoint"] = report.cache.endpoint
    status = {
        "observedGeneration": obs.generation,
        "conditions": conditions,
        "store": store,
        "cache": cache,
    }
    if deployed:
        status["dashboard"] = {
            "url": dashboards.dashboard_url(obs.name, obs.namespace, _tls(obs)),
            "replicas": obs.dashboard_available_replicas or 0,
        }
    return status


def suite_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """What Evaluations need of a suite (the kopf index keeps only this)."""
    status = body.get("status") or {}
    store = condition_of(status, "StoreReady")
    return {
        "uid": body["metadata"].get("uid"),
        "spec": dict(body.get("spec") or {}),
        # The suite run accepted as the baseline (kubectl evals accept): a cell's gate pairs
        # with it.
        "accepted": (body["metadata"].get("annotations") or {}).get(ACCEPT_RUN_ANNOTATION),
        "storeReady": store.get("status") == "True"
        and status.get("observedGeneration") == body["metadata"].get("generation"),
        "storeReason": store.get("reason") or "StoreProvisioning",
        "storeMessage": store.get("message") or "the suite's stack is being created",
    }
