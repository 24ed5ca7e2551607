"""An EvalSuite's status from what the operator saw (a pure function), and what GitOps makes of
it: Argo CD's Lua health check and Flux's CEL expressions, run on the very statuses."""

from __future__ import annotations

from typing import Any

import pytest

from eval_api.stackcheck import CacheCheck, StackReport
from eval_api.v1alpha1 import EvalSuiteSpec
from eval_operator.suite_status import SuiteObservation, desired_suite_status
from tests.unit.test_health_flux import flux_health
from tests.unit.test_health_lua import health as argo_health

COMPLETE = {"conditions": [{"type": "Complete", "status": "True"}]}
FAILED = {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]}


def report(**fields: Any) -> str:
    return StackReport.model_validate(fields).to_message()


def observe(spec: dict[str, Any] | None = None, **seen: Any) -> SuiteObservation:
    seen.setdefault("dashboard_available_replicas", 1)
    return SuiteObservation(
        namespace="team",
        name="stack",
        generation=2,
        spec=EvalSuiteSpec.model_validate(spec or {}),
        schema_version=3,
        now="2026-12-01T12:00:00Z",
        migration_job="stack-migrate-1234abcd",
        **seen,
    )


def as_object(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "EvalSuite",
        "metadata": {"name": "stack", "namespace": "team", "generation": 2},
        "spec": {},
        "status": status,
    }


DONE = report(state="done", endpoint="stack-store.team.svc:5432/evals", schemaVersion=3)
CASES = {
    "store starting": (
        observe(store_ready_replicas=None, cache_available_replicas=1),
        ("StoreReady", "False", "StoreProvisioning"),
        "Progressing",
    ),
    "migrating": (
        observe(store_ready_replicas=1, cache_available_replicas=1, migration={}),
        ("StoreReady", "False", "StoreProvisioning"),
        "Progressing",
    ),
    "ready": (
        observe(
            store_ready_replicas=1,
            cache_available_replicas=1,
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("Ready", "True", "Ready"),
        "Healthy",
    ),
    "store pod lost after the migration": (
        observe(
            store_ready_replicas=0,
            cache_available_replicas=1,
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("StoreReady", "False", "StoreUnreachable"),
        "Degraded",
    ),
    "external secret missing": (
        observe(
            {"store": {"mode": "External", "external": {"secretRef": {"name": "pg-app"}}}},
            cache_available_replicas=1,
            migration={},
            migration_pods=[("CreateContainerConfigError", 'secret "pg-app" not found', "")],
        ),
        ("StoreReady", "False", "ExternalSecretNotFound"),
        "Degraded",
    ),
    "wrong password, retrying": (
        observe(
            store_ready_replicas=1,
            cache_available_replicas=1,
            migration={},
            migration_pods=[
                (None, "", report(state="error", reason="StoreAuthenticationFailed", message="x"))
            ],
        ),
        ("StoreReady", "False", "StoreAuthenticationFailed"),
        "Degraded",
    ),
    "migration failed for good": (
        observe(
            store_ready_replicas=1,
            cache_available_replicas=1,
            migration=FAILED,
            migration_pods=[
                (None, "", report(state="error", reason="MigrationFailed", message="changed"))
            ],
        ),
        ("StoreReady", "False", "MigrationFailed"),
        "Degraded",
    ),
    "cache down": (
        observe(
            store_ready_replicas=1,
            cache_available_replicas=0,
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("CacheReady", "False", "CacheUnavailable"),
        "Degraded",
    ),
    "cache disabled": (
        observe(
            {"cache": {"mode": "Disabled"}},
            store_ready_replicas=1,
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("CacheReady", "True", "Disabled"),
        "Healthy",
    ),
    "dashboard starting": (
        observe(
            store_ready_replicas=1,
            cache_available_replicas=1,
            dashboard_available_replicas=None,
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("DashboardReady", "False", "DashboardProvisioning"),
        "Progressing",
    ),
    "dashboard down": (
        observe(
            store_ready_replicas=1,
            cache_available_replicas=1,
            dashboard_available_replicas=0,
            dashboard_progress="NewReplicaSetAvailable",
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("DashboardReady", "False", "DashboardUnavailable"),
        "Degraded",
    ),
    "dashboard rolling out": (
        observe(
            store_ready_replicas=1,
            cache_available_replicas=1,
            dashboard_available_replicas=0,
            dashboard_progress="ReplicaSetUpdated",
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("DashboardReady", "False", "DashboardProvisioning"),
        "Progressing",
    ),
    "read-only role not made": (
        observe(
            store_ready_replicas=1,
            cache_available_replicas=1,
            dashboard_available_replicas=0,
            migration=COMPLETE,
            migration_pods=[
                (
                    None,
                    "",
                    report(
                        state="done",
                        schemaVersion=3,
                        reader={"state": "failed", "role": "r", "message": "denied"},
                    ),
                )
            ],
        ),
        ("DashboardReady", "False", "ReaderRoleFailed"),
        "Degraded",
    ),
    # The runs do not need the dashboard: one that cannot be deployed as configured says why
    # and holds nothing back.
    "external store without read-only credentials": (
        observe(
            {"store": {"mode": "External", "external": {"secretRef": {"name": "pg-app"}}}},
            cache_available_replicas=1,
            dashboard_available_replicas=None,
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("DashboardReady", "False", "ReadOnlyCredentialsNeeded"),
        "Healthy",
    ),
    # An optional platform missing never holds the suite back: GitOps sees it healthy.
    "monitoring without the Prometheus Operator": (
        observe(
            {"monitoring": {"enabled": True}},
            store_ready_replicas=1,
            cache_available_replicas=1,
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("MonitoringReady", "False", "PrometheusOperatorNotInstalled"),
        "Healthy",
    ),
    "monitoring with the Prometheus Operator": (
        observe(
            {"monitoring": {"enabled": True}},
            store_ready_replicas=1,
            cache_available_replicas=1,
            prometheus_operator=True,
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("MonitoringReady", "True", "Ready"),
        "Healthy",
    ),
    "TLS without cert-manager": (
        observe(
            {"tls": {"enabled": True}},
            store_ready_replicas=1,
            cache_available_replicas=1,
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("TLSReady", "False", "CertManagerNotInstalled"),
        "Healthy",
    ),
    "TLS waiting for its certificates": (
        observe(
            {"tls": {"enabled": True}},
            store_ready_replicas=1,
            cache_available_replicas=1,
            cert_manager=True,
            certificates=[("stack-store-tls", "True", ""), ("stack-cache-tls", "False", "Issuing")],
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("TLSReady", "False", "CertificatesNotReady"),
        "Healthy",
    ),
    "TLS on": (
        observe(
            {"tls": {"enabled": True}},
            store_ready_replicas=1,
            cache_available_replicas=1,
            cert_manager=True,
            certificates=[
                ("stack-store-tls", "True", ""),
                ("stack-cache-tls", "True", ""),
                ("stack-dashboard-tls", "True", ""),
            ],
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("TLSReady", "True", "Ready"),
        "Healthy",
    ),
    "monitoring off": (
        observe(
            store_ready_replicas=1,
            cache_available_replicas=1,
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("MonitoringReady", "True", "Disabled"),
        "Healthy",
    ),
    "dashboard disabled": (
        observe(
            {"dashboard": {"enabled": False}},
            store_ready_replicas=1,
            cache_available_replicas=1,
            dashboard_available_replicas=None,
            migration=COMPLETE,
            migration_pods=[(None, "", DONE)],
        ),
        ("DashboardReady", "True", "Disabled"),
        "Healthy",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_conditions_and_what_gitops_makes_of_them(case: str) -> None:
    obs, (type_, status, reason), argo = CASES[case]
    new = desired_suite_status({}, obs)
    found = {c["type"]: c for c in new["conditions"]}
    assert (found[type_]["status"], found[type_]["reason"]) == (status, reason)
    assert set(found) == {
        "StoreReady",
        "CacheReady",
        "DashboardReady",
        "MonitoringReady",
        "TLSReady",
        "Ready",
        "Progressing",
        "Stalled",
    }
    assert all(c["observedGeneration"] == 2 for c in found.values())
    assert argo_health("EvalSuite", as_object(new))["status"] == argo
    flux = {"Healthy": "current", "Progressing": "inProgress", "Degraded": "failed"}[argo]
    assert flux_health(as_object(new)) == flux


def test_the_status_says_where_the_store_is_and_never_more() -> None:
    obs, _, _ = CASES["ready"]
    new = desired_suite_status({}, obs)
    assert new["store"] == {
        "mode": "Managed",
        "secretName": "stack-store-credentials",
        "endpoint": "stack-store.team.svc:5432/evals",
        "schemaVersion": 3,
    }
    assert new["cache"]["endpoint"] == "stack-cache.team.svc:6379"
    assert new["dashboard"] == {"url": "http://stack-dashboard.team.svc:80", "replicas": 1}


def test_an_external_cache_is_judged_by_the_migration_check() -> None:
    spec = {"cache": {"mode": "External", "external": {"secretRef": {"name": "r", "key": "url"}}}}
    bad = StackReport(
        state="done",
        schema_version=3,
        cache=CacheCheck(state="unavailable", reason="CacheUnreachable", message="refused"),
    ).to_message()
    obs = observe(
        spec, store_ready_replicas=1, migration=COMPLETE, migration_pods=[(None, "", bad)]
    )
    found = {c["type"]: c for c in desired_suite_status({}, obs)["conditions"]}
    assert (found["CacheReady"]["reason"], found["CacheReady"]["message"]) == (
        "CacheUnreachable",
        "refused",
    )
    assert found["StoreReady"]["status"] == "True"


def test_a_transition_time_moves_only_when_the_status_changes() -> None:
    obs, _, _ = CASES["ready"]
    first = desired_suite_status({}, obs)
    later = observe(
        store_ready_replicas=1,
        cache_available_replicas=1,
        migration=COMPLETE,
        migration_pods=[(None, "", DONE)],
    )
    later.now = "2026-12-01T13:00:00Z"
    again = desired_suite_status(first, later)
    assert again == first
