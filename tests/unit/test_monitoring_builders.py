"""An EvalSuite's monitoring objects: the Prometheus Operator's kinds validated against the
upstream CRDs' schemas (../shared/thirdparty-crds), the core kinds with kubernetes-validate
--strict, every alert and panel query parsed as PromQL, and Prometheus' reach in the
NetworkPolicies."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser

from eval_api.v1alpha1 import EvalSuiteSpec
from eval_operator.builders import monitoring
from eval_operator.builders import suite as builders
from eval_operator.builders.netpol import build_network_policies
from tests.support.netpol import Cluster, Pod
from tests.support.thirdparty import unknown_fields, upstream_schema
from tests.unit.test_netpol import SETTINGS as NETPOL_SETTINGS
from tests.unit.test_netpol import pods, suite_body
from tests.unit.test_suite_builders import K8S_VERSION, SETTINGS, suite_object

ON = {"monitoring": {"enabled": True, "labels": {"release": "kps"}, "interval": "15s"}}


def spec_of(extra: dict[str, Any] | None = None) -> EvalSuiteSpec:
    return EvalSuiteSpec.model_validate({**ON, **(extra or {})})


def by_kind(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        found.setdefault(obj["kind"], []).append(obj)
    return found


def test_the_prometheus_operators_objects_are_valid_for_its_crds() -> None:
    suite, spec = suite_object(ON), spec_of()
    objects = by_kind(monitoring.prometheus_objects(suite, spec))
    assert sorted((k, len(v)) for k, v in objects.items()) == [
        ("PodMonitor", 1),
        ("PrometheusRule", 1),
        ("ServiceMonitor", 3),  # the dashboard, the store's and the cache's exporters
    ]
    for kind, found in objects.items():
        schema = upstream_schema(kind)
        for obj in found:
            jsonschema.validate(obj, schema)
            assert unknown_fields(obj, schema) == [], obj["metadata"]["name"]
            assert obj["metadata"]["labels"]["release"] == "kps"
            assert obj["metadata"]["ownerReferences"][0]["kind"] == "EvalSuite"


def test_service_monitors_select_the_services_that_carry_the_ports() -> None:
    suite, spec = suite_object(ON), spec_of()
    services = [o for o in monitoring.core_objects(suite, spec) if o["kind"] == "Service"]
    services += builders.build_store_services(suite)
    services.append(builders.build_cache_service(suite))
    from eval_operator.builders.dashboard import build_dashboard_service

    services.append(build_dashboard_service(suite))
    for sm in by_kind(monitoring.prometheus_objects(suite, spec))["ServiceMonitor"]:
        match = sm["spec"]["selector"]["matchLabels"]
        chosen = [
            s
            for s in services
            if all(s["metadata"]["labels"].get(k) == v for k, v in match.items())
        ]
        assert len(chosen) == 1, sm["metadata"]["name"]
        (endpoint,) = sm["spec"]["endpoints"]
        assert endpoint["interval"] == "15s"
        assert endpoint["port"] in {p["name"] for p in chosen[0]["spec"]["ports"]}


def test_the_exporters_are_sidecars_that_read_the_passwords_by_reference() -> None:
    suite, spec = suite_object(ON), spec_of()
    parsed = EvalSuiteSpec.model_validate(suite["spec"])
    objects = monitoring.with_exporters(
        builders.desired_objects(suite, parsed, SETTINGS), suite, spec, SETTINGS
    )
    objects += monitoring.core_objects(suite, spec)
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    store = next(o for o in objects if o["kind"] == "StatefulSet")
    cache = next(o for o in objects if o["kind"] == "Deployment")
    pg = store["spec"]["template"]["spec"]["containers"][-1]
    redis = cache["spec"]["template"]["spec"]["containers"][-1]
    assert pg["name"] == "pg-metrics" and pg["image"] == SETTINGS.postgres_exporter_image
    assert redis["name"] == "redis-metrics" and redis["image"] == SETTINGS.redis_exporter_image
    for container in (pg, redis):
        assert "readinessProbe" not in container  # never takes the store out of its Service
        assert container["securityContext"]["runAsNonRoot"] is True
        for entry in container["env"]:
            assert "value" not in entry or "password" not in entry["value"].lower()
    env = {e["name"]: e for e in pg["env"]}
    assert env["DATA_SOURCE_PASS"]["valueFrom"]["secretKeyRef"]["name"] == "stack-store-credentials"
    # Without monitoring, the stack is what it was.
    off = EvalSuiteSpec.model_validate({})
    plain = builders.desired_objects(suite_object({}), off, SETTINGS)
    assert monitoring.with_exporters(plain, suite_object({}), off, SETTINGS) == plain
    assert monitoring.core_objects(suite_object({}), off) == []


def test_every_alert_and_panel_is_promql_and_scoped_to_the_suite() -> None:
    suite, spec = (
        suite_object(ON),
        spec_of({"monitoring": {**ON["monitoring"], "costAlertUSDPerHour": "2.5"}}),
    )
    rules = monitoring.alert_rules(suite, spec)
    assert [r["alert"] for r in rules] == [
        "EvalSuiteHighErrorRate",
        "EvalSuiteCircuitBreakerOpen",
        "EvalSuiteHighLatency",
        "EvalSuiteHighCost",
        "EvalSuiteStoreDown",
        "EvalSuiteBackupFailed",
        "EvalSuiteBackupVolumeFilling",
        "EvalSuiteCacheDown",
        "EvalSuiteDashboardDown",
        "EvalSuiteCertificateExpiring",
    ]
    for rule in rules:
        promql_parser.parse(rule["expr"])
        assert 'namespace="team-a"' in rule["expr"] or "exported_namespace" in rule["expr"]
        assert rule["labels"]["suite"] == "stack"
    cost = next(r for r in rules if r["alert"] == "EvalSuiteHighCost")
    assert cost["expr"].endswith("* 3600 > 2.5")
    assert "> 0.05" in rules[0]["expr"] and "> 5" in rules[2]["expr"]
    for title, expr, _ in monitoring.grafana_panels(suite):
        promql_parser.parse(expr)
        assert 'suite="stack"' in expr, title


def test_failed_backups_and_a_filling_backup_volume_alert() -> None:
    """Issue 17, 4.9: a backup that failed, or a volume that fills, said before the dumps
    stop; from kube-state-metrics and kubelet series kube-prometheus-stack scrapes, scoped to
    the suite's backup CronJob's Jobs and volume (not another suite's)."""
    rules = {r["alert"]: r for r in monitoring.alert_rules(suite_object(ON), spec_of())}
    failed, filling = rules["EvalSuiteBackupFailed"], rules["EvalSuiteBackupVolumeFilling"]
    promql_parser.parse(failed["expr"])
    promql_parser.parse(filling["expr"])
    assert "kube_job_status_failed{" in failed["expr"]
    assert "kube_cronjob_status_last_successful_time{" in failed["expr"]
    assert 'job_name=~"stack-store-backup-[0-9]+"' in failed["expr"]
    assert 'cronjob="stack-store-backup"' in failed["expr"]
    for metric in ("available_bytes", "capacity_bytes"):
        assert (
            f'kubelet_volume_stats_{metric}{{namespace="team-a", '
            'persistentvolumeclaim="stack-store-backups"}' in filling["expr"]
        )
    assert filling["expr"].endswith("< 0.1")
    # No backups, no backup alerts; an external store has none either.
    off = spec_of({"store": {"managed": {"backup": {"enabled": False}}}})
    assert not [r for r in monitoring.alert_rules(suite_object(ON), off) if "Backup" in r["alert"]]


def test_the_grafana_dashboard_is_a_configmap_for_the_sidecar() -> None:
    suite, spec = suite_object(ON), spec_of()
    (cm,) = [o for o in monitoring.core_objects(suite, spec) if o["kind"] == "ConfigMap"]
    kubernetes_validate.validate(cm, K8S_VERSION, strict=True)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (board,) = [json.loads(v) for v in cm["data"].values()]
    titles = [p["title"] for p in board["panels"]]
    assert titles == [t for t, _, _ in monitoring.grafana_panels(suite)]
    custom = spec_of(
        {"monitoring": {**ON["monitoring"], "grafanaDashboard": {"labels": {"g": "x"}}}}
    )
    (cm,) = [o for o in monitoring.core_objects(suite, custom) if o["kind"] == "ConfigMap"]
    assert (
        cm["metadata"]["labels"]["g"] == "x" and "grafana_dashboard" not in cm["metadata"]["labels"]
    )


def test_prometheus_from_the_monitoring_namespace_reaches_the_metrics_ports_only() -> None:
    raw = {**ON, "models": [{"name": "m", "model": {"name": "m"}}],
           "tasks": [{"name": "t", "dataset": {"builtin": "arithmetic"},
                      "task": {"scorers": [{"type": "exact_match"}]}}]}  # fmt: skip
    spec = EvalSuiteSpec.model_validate(raw)
    policies = Cluster(build_network_policies(suite_body(), spec, NETPOL_SETTINGS))
    everyone = pods(spec)
    prometheus = Pod("prometheus", "monitoring", {"app": "prometheus"}, "10.0.7.7")
    stranger = Pod("prometheus", "elsewhere", {"app": "prometheus"}, "10.0.7.8")
    allowed = [("runner", 9090), ("dashboard", 8080), ("store", 9187), ("cache", 9121)]
    for target, port in allowed:
        assert policies.allows(prometheus, everyone[target], port), (target, port)
        assert not policies.allows(stranger, everyone[target], port), (target, port)
    for target, port in (("store", 5432), ("cache", 6379)):
        assert not policies.allows(prometheus, everyone[target], port)
    # Without monitoring, Prometheus reaches nothing of the suite.
    plain = EvalSuiteSpec.model_validate({k: v for k, v in raw.items() if k != "monitoring"})
    policies = Cluster(build_network_policies(suite_body(), plain, NETPOL_SETTINGS))
    for target, port in allowed:
        assert not policies.allows(prometheus, pods(plain)[target], port)
