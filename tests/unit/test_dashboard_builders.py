"""The dashboard's Deployment, Service, HorizontalPodAutoscaler and PodDisruptionBudget
(kubernetes-validate --strict and restricted Pod Security are checked with the rest of the
stack in test_suite_builders.py): what they say, and that the dashboard holds nothing but
read-only store credentials."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from eval_api.v1alpha1 import EvalSuiteSpec
from eval_operator.builders import dashboard
from eval_operator.builders import suite as builders
from tests.unit.test_matrix import schema_errors, suite_body
from tests.unit.test_suite_builders import K8S_VERSION, SETTINGS, suite_object


def objects_of(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    suite = suite_object(spec)
    parsed = EvalSuiteSpec.model_validate(spec)
    return {o["kind"]: o for o in dashboard.dashboard_objects(suite, parsed, SETTINGS)}


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_by_default_a_deployment_a_service_and_an_autoscaler_at_70_and_80_percent() -> None:
    found = objects_of({})
    assert sorted(found) == ["Deployment", "HorizontalPodAutoscaler", "Service"]
    hpa = found["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "stack-dashboard",
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 3)
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["metrics"]}
    assert targets == {
        "cpu": {"type": "Utilization", "averageUtilization": 70},
        "memory": {"type": "Utilization", "averageUtilization": 80},
    }
    deployment = found["Deployment"]
    # The autoscaler owns the replica count: an applied one would fight it.
    assert "replicas" not in deployment["spec"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert container["args"][:7] == [
        "dashboard", "--port", "8080", "--namespace", "team-a", "--suite", "stack",
    ]  # fmt: skip
    # The pool the store's max_connections counts (builders.suite.store_connections).
    assert container["args"][7:] == ["--rate", "20", "--burst", "40", "--pool-size", "10"]
    service = found["Service"]["spec"]
    assert service["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["selector"] == deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in service["selector"].items())


def test_more_than_one_replica_brings_a_disruption_budget() -> None:
    spec = {"dashboard": {"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50}}
    found = objects_of(spec)
    pdb = found["PodDisruptionBudget"]
    kubernetes_validate.validate(pdb, K8S_VERSION, strict=True)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == found["Deployment"]["spec"]["selector"]
    hpa = found["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 50


def test_requests_the_autoscaler_needs_are_kept_when_resources_name_only_limits() -> None:
    found = objects_of({"dashboard": {"resources": {"limits": {"memory": "1Gi"}}}})
    container = found["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {
        "limits": {"memory": "1Gi"},
        "requests": {"cpu": "100m", "memory": "256Mi"},
    }


def test_the_rate_limit_reaches_the_process() -> None:
    found = objects_of({"dashboard": {"rateLimit": {"requestsPerSecond": 5, "burst": 9}}})
    args = found["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[7:11] == ["--rate", "5", "--burst", "9"]


def test_trusted_proxies_reach_the_dashboard_and_admission_takes_only_cidrs() -> None:
    found = objects_of({"dashboard": {"trustedProxies": ["10.244.0.0/16", "fd00:10::/64"]}})
    kubernetes_validate.validate(found["Deployment"], K8S_VERSION, strict=True)
    env = env_of(found["Deployment"])
    assert env["EVAL_DASHBOARD_TRUSTED_PROXIES"] == "10.244.0.0/16,fd00:10::/64"
    # None by default: the peer is the client and X-Forwarded-For is ignored.
    assert "EVAL_DASHBOARD_TRUSTED_PROXIES" not in env_of(objects_of({})["Deployment"])
    assert schema_errors(suite_body({"dashboard": {"trustedProxies": ["10.0.0.1/8"]}})) == []
    for wrong in ("10.244.0.0/33", "10.244.0.0", "ingress-nginx/16", "2001:db8::/129", "1.2/8"):
        spec = {"dashboard": {"trustedProxies": [wrong]}}
        assert schema_errors(suite_body(spec)), wrong  # refused at kubectl apply
        with pytest.raises(ValidationError, match="not a CIDR|pattern"):
            EvalSuiteSpec.model_validate(spec)


def test_with_a_managed_store_the_dashboard_logs_in_as_the_read_only_role() -> None:
    env = env_of(objects_of({})["Deployment"])
    store, reader = "stack-store-credentials", "stack-dashboard-store"
    assert env["EVAL_STORE_HOST"] == {"secretKeyRef": {"name": store, "key": "host"}}
    assert env["EVAL_STORE_USER"] == {"secretKeyRef": {"name": reader, "key": "username"}}
    assert env["EVAL_STORE_PASSWORD"] == {"secretKeyRef": {"name": reader, "key": "password"}}
    # Never the owner's password or URI, never the cache's URL: the cache by host:port only.
    refs = [v for v in env.values() if isinstance(v, dict)]
    assert {"name": store, "key": "password"} not in [r["secretKeyRef"] for r in refs]
    assert {"name": store, "key": "uri"} not in [r["secretKeyRef"] for r in refs]
    assert "EVAL_CACHE_URL" not in env
    assert env["EVAL_CACHE_ENDPOINT"] == "stack-cache.team-a.svc:6379"
    # The migration Job makes the role with the reader Secret's password.
    suite = suite_object({})
    job = builders.build_migration_job(suite, EvalSuiteSpec.model_validate({}), 5, SETTINGS)
    job_env = {
        e["name"]: e.get("valueFrom")
        for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert job_env["EVAL_READER_PASSWORD"] == {"secretKeyRef": {"name": reader, "key": "password"}}
    secret = dashboard.build_reader_secret(suite, "pw")
    assert secret["metadata"]["name"] == reader and set(secret["data"]) == {"username", "password"}


def test_turning_the_dashboard_on_runs_the_migration_again_for_its_role() -> None:
    on = EvalSuiteSpec.model_validate({})
    off = EvalSuiteSpec.model_validate({"dashboard": {"enabled": False}})
    assert builders.migration_fingerprint(on, 5) != builders.migration_fingerprint(off, 5)
    job = builders.build_migration_job(suite_object({}), off, 5, SETTINGS)
    names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "EVAL_READER_PASSWORD" not in names
    assert objects_of({"dashboard": {"enabled": False}}) == {}


def test_an_external_store_needs_read_only_credentials_of_its_own() -> None:
    external = {"mode": "External", "external": {"secretRef": {"name": "pg-app"}}}
    assert objects_of({"store": external}) == {}
    reason = dashboard.blocked_reason(EvalSuiteSpec.model_validate({"store": external}))
    assert reason is not None and reason[0] == "ReadOnlyCredentialsNeeded"
    found = objects_of({"store": external, "dashboard": {"storeSecretRef": {"name": "pg-ro"}}})
    container = found["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [
        {"prefix": "EVAL_STORE_SECRET_", "secretRef": {"name": "pg-ro"}}
    ]
    assert "pg-app" not in str(found)
