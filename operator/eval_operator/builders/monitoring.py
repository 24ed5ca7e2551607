"""An EvalSuite's monitoring (spec.monitoring): pure builders.

- exporter sidecars of the managed store (postgres_exporter, 9187) and cache (redis_exporter,
  9121), each with a metrics Service of its own (label evals.io/metrics) so that the store's
  and cache's client Services stay as they are;
- ServiceMonitors for the dashboard and the two exporters, a PodMonitor for the suite's runner
  pods (adding the labels suite, evaluation and run), a PrometheusRule with the suite's alerts;
- a Grafana dashboard ConfigMap for Grafana's sidecar.

The Prometheus Operator's kinds are made only where its CRDs are served (eval_operator.platforms);
the sidecars, metrics Services and the Grafana ConfigMap need nothing but the core API.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from eval_api.v1alpha1.evalsuite import EvalSuiteSpec
from eval_operator.builders import dashboard as dashboards
from eval_operator.builders.job import PROGRESS_PORT_NAME
from eval_operator.builders.meta import restricted_container
from eval_operator.builders.suite import (
    POSTGRES_PORT,
    REDIS_PORT,
    STORE_DBNAME,
    SUITE_LABEL,
    _meta,
    cache_name,
    cache_secret_name,
    child_name,
    managed_cache,
    managed_store,
    selector,
    store_name,
    store_secret_name,
)
from eval_operator.settings import OperatorSettings

MONITORING_API = "monitoring.coreos.com/v1"
METRICS_LABEL = "evals.io/metrics"
POSTGRES_EXPORTER_PORT = 9187
REDIS_EXPORTER_PORT = 9121
# The store's own user: the exporter shares the server's socket directory (an emptyDir).
EXPORTER_UID = 999
POSTGRES_SOCKET_DIR = "/var/run/postgresql"
EXPORTER_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "96Mi"}}
DEFAULT_GRAFANA_LABELS = {"grafana_dashboard": "1"}
CERT_EXPIRY_DAYS = 30


def monitored(spec: EvalSuiteSpec) -> bool:
    return spec.monitoring.enabled


def _exporter(name: str, image: str, port: int, env: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "env": env,
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"}],
        # No readiness probe: an exporter that fails must not take the store out of its
        # Service. Prometheus' `up` and the alerts say it.
        "livenessProbe": {
            "tcpSocket": {"port": name},
            "periodSeconds": 20,
            "failureThreshold": 3,
        },
        "resources": copy.deepcopy(EXPORTER_RESOURCES),
        "securityContext": restricted_container(EXPORTER_UID),
    }


def _secret_env(variable: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def with_exporters(
    objects: list[dict[str, Any]],
    suite: Mapping[str, Any],
    spec: EvalSuiteSpec,
    settings: OperatorSettings,
) -> list[dict[str, Any]]:
    """The stack's objects with the exporter sidecars added (copies; the input is kept)."""
    if not (monitored(spec) and spec.monitoring.exporters):
        return objects
    name = suite["metadata"]["name"]
    found = []
    for obj in objects:
        kind, obj_name = obj["kind"], obj["metadata"]["name"]
        if kind == "StatefulSet" and obj_name == store_name(name) and managed_store(spec):
            obj = copy.deepcopy(obj)
            secret = store_secret_name(name)
            pod = obj["spec"]["template"]["spec"]
            pod["containers"].append(
                _exporter(
                    "pg-metrics",
                    settings.postgres_exporter_image,
                    POSTGRES_EXPORTER_PORT,
                    [
                        # The server's socket, in the pod (the directory the two share): no
                        # TCP, so no TLS needed when spec.tls takes only TLS from the network.
                        {
                            "name": "DATA_SOURCE_URI",
                            "value": f":{POSTGRES_PORT}/{STORE_DBNAME}"
                            f"?host={POSTGRES_SOCKET_DIR}&sslmode=disable",
                        },
                        _secret_env("DATA_SOURCE_USER", secret, "username"),
                        _secret_env("DATA_SOURCE_PASS", secret, "password"),
                    ],
                )
            )
            pod["containers"][-1]["volumeMounts"] = [
                {"name": "run", "mountPath": POSTGRES_SOCKET_DIR}
            ]
        elif kind == "Deployment" and obj_name == cache_name(name) and managed_cache(spec):
            obj = copy.deepcopy(obj)
            obj["spec"]["template"]["spec"]["containers"].append(
                _exporter(
                    "redis-metrics",
                    settings.redis_exporter_image,
                    REDIS_EXPORTER_PORT,
                    [
                        {"name": "REDIS_ADDR", "value": f"redis://localhost:{REDIS_PORT}"},
                        _secret_env("REDIS_PASSWORD", cache_secret_name(name), "password"),
                    ],
                )
            )
        found.append(obj)
    return found


def _metrics_service(
    suite: Mapping[str, Any], component: str, port_name: str, port: int
) -> dict[str, Any]:
    name = suite["metadata"]["name"]
    meta = _meta(suite, child_name(name, f"{component}-metrics"), component, "eval-operator")
    meta["labels"][METRICS_LABEL] = component
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": selector(suite, component),
            "ports": [
                {"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}
            ],
        },
    }


def _monitor_meta(suite: Mapping[str, Any], name: str, spec: EvalSuiteSpec) -> dict[str, Any]:
    meta = _meta(suite, name, "monitoring", "eval-operator")
    meta["labels"].update(spec.monitoring.labels or {})
    return meta


def _service_monitor(
    suite: Mapping[str, Any],
    spec: EvalSuiteSpec,
    name: str,
    match: dict[str, str],
    port: str,
) -> dict[str, Any]:
    return {
        "apiVersion": MONITORING_API,
        "kind": "ServiceMonitor",
        "metadata": _monitor_meta(suite, name, spec),
        "spec": {
            "selector": {"matchLabels": match},
            "namespaceSelector": {"matchNames": [suite["metadata"]["namespace"]]},
            "endpoints": [{"port": port, "path": "/metrics", "interval": spec.monitoring.interval}],
        },
    }


def build_pod_monitor(suite: Mapping[str, Any], spec: EvalSuiteSpec) -> dict[str, Any]:
    name = suite["metadata"]["name"]

    def label(pod_label: str, target: str) -> dict[str, Any]:
        source = "__meta_kubernetes_pod_label_" + "".join(
            c if c.isalnum() else "_" for c in pod_label
        )
        return {"sourceLabels": [source], "targetLabel": target}

    return {
        "apiVersion": MONITORING_API,
        "kind": "PodMonitor",
        "metadata": _monitor_meta(suite, child_name(name, "runners"), spec),
        "spec": {
            "selector": {
                "matchLabels": {SUITE_LABEL: name, "app.kubernetes.io/component": "runner"}
            },
            "namespaceSelector": {"matchNames": [suite["metadata"]["namespace"]]},
            "podMetricsEndpoints": [
                {
                    "port": PROGRESS_PORT_NAME,
                    "path": "/metrics",
                    "interval": spec.monitoring.interval,
                    "relabelings": [
                        label(SUITE_LABEL, "suite"),
                        label("evals.io/evaluation", "evaluation"),
                        label("evals.io/run", "run"),
                    ],
                }
            ],
        },
    }


def _runners(suite: Mapping[str, Any]) -> str:
    meta = suite["metadata"]
    return f'namespace="{meta["namespace"]}", suite="{meta["name"]}"'


def _service(suite: Mapping[str, Any], service: str) -> str:
    return f'namespace="{suite["metadata"]["namespace"]}", service="{service}"'


BACKUP_FREE_FRACTION = 0.1


def _backup_rules(suite: Mapping[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """The managed store's backups, from what kube-prometheus-stack scrapes anyway:
    kube-state-metrics (the backup CronJob's Jobs; the Jobs it makes are named
    <cronjob>-<minutes>) and the kubelet (the backup volume's room)."""
    name, namespace = suite["metadata"]["name"], suite["metadata"]["namespace"]
    cronjob = child_name(name, "store-backup")
    jobs = f'namespace="{namespace}", job_name=~"{cronjob}-[0-9]+"'
    cron = f'namespace="{namespace}", cronjob="{cronjob}"'
    volume = f'namespace="{namespace}", persistentvolumeclaim="{child_name(name, "store-backups")}"'
    # The newest backup Job with a failed pod started after the last successful backup (or
    # there never was one): a Job whose retry succeeded does not count.
    failed_start = (
        f"max(kube_job_status_start_time{{{jobs}}}"
        f" and on (namespace, job_name) (kube_job_status_failed{{{jobs}}} > 0))"
    )
    last_success = f"max(kube_cronjob_status_last_successful_time{{{cron}}})"
    return [
        (
            "EvalSuiteBackupFailed",
            f"({failed_start} > {last_success})"
            f" or ({failed_start} unless on () kube_cronjob_status_last_successful_time{{{cron}}})",
            "5m",
            "warning",
            "The store's latest backup failed (kubectl logs of the newest "
            f"{cronjob} Job's pod says why: a full volume, a store that did not answer).",
        ),
        (
            "EvalSuiteBackupVolumeFilling",
            f"max(kubelet_volume_stats_available_bytes{{{volume}}}"
            f" / kubelet_volume_stats_capacity_bytes{{{volume}}}) < {BACKUP_FREE_FRACTION}",
            "30m",
            "warning",
            f"The store's backup volume has less than {BACKUP_FREE_FRACTION:.0%} free: the next "
            "dump may not fit (raise store.managed.backup.size or lower retention).",
        ),
    ]


def alert_rules(suite: Mapping[str, Any], spec: EvalSuiteSpec) -> list[dict[str, Any]]:
    """The suite's alerts: (name, PromQL, for, severity, summary)."""
    name, namespace = suite["metadata"]["name"], suite["metadata"]["namespace"]
    runners = _runners(suite)
    cost = spec.monitoring.cost_alert_usd_per_hour
    rules: list[tuple[str, str, str, str, str]] = [
        (
            "EvalSuiteHighErrorRate",
            f'(sum by (model) (rate(eval_runner_requests_total{{{runners}, outcome!="ok"}}[5m]))'
            f" / sum by (model) (rate(eval_runner_requests_total{{{runners}}}[5m]))) > 0.05",
            "5m",
            "warning",
            "More than 5% of the model requests of a suite's runners fail (by model).",
        ),
        (
            "EvalSuiteCircuitBreakerOpen",
            f"max by (model) (eval_runner_circuit_breaker_state{{{runners}}}) == 2",
            "1m",
            "warning",
            "A model endpoint's circuit breaker is open: its samples fail fast.",
        ),
        (
            "EvalSuiteHighLatency",
            "histogram_quantile(0.99, sum by (le, model) "
            f"(rate(eval_runner_request_duration_seconds_bucket{{{runners}}}[5m]))) > 5",
            "10m",
            "warning",
            "The 99th percentile of model request latency is above 5 s.",
        ),
        (
            "EvalSuiteHighCost",
            f"sum(rate(eval_runner_cost_usd_total{{{runners}}}[15m])) * 3600 > {cost}",
            "15m",
            "warning",
            f"The suite's runners spend more than {cost} USD an hour.",
        ),
    ]
    if managed_store(spec) and spec.monitoring.exporters:
        store = _service(suite, child_name(name, "store-metrics"))
        rules.append(
            (
                "EvalSuiteStoreDown",
                f"max(pg_up{{{store}}}) < 1 or absent(up{{{store}}} == 1)",
                "5m",
                "critical",
                "The suite's PostgreSQL store does not answer: runs cannot store samples.",
            )
        )
    store_spec = managed_store(spec)
    if store_spec is not None and store_spec.backup.enabled:
        rules += _backup_rules(suite)
    if managed_cache(spec) and spec.monitoring.exporters:
        cache = _service(suite, child_name(name, "cache-metrics"))
        rules.append(
            (
                "EvalSuiteCacheDown",
                f"max(redis_up{{{cache}}}) < 1 or absent(up{{{cache}}} == 1)",
                "5m",
                "warning",
                "The suite's Redis cache does not answer: runs go on without it, at full cost.",
            )
        )
    if dashboards.wanted(spec):
        dash = _service(suite, dashboards.dashboard_name(name))
        rules.append(
            (
                "EvalSuiteDashboardDown",
                f"absent(up{{{dash}}} == 1)",
                "10m",
                "warning",
                "No replica of the suite's results dashboard is scraped.",
            )
        )
    rules.append(
        (
            "EvalSuiteCertificateExpiring",
            "(certmanager_certificate_expiration_timestamp_seconds"
            f'{{exported_namespace="{namespace}", name=~"{name}-.*"}} - time())'
            f" < {CERT_EXPIRY_DAYS} * 86400",
            "1h",
            "warning",
            f"A certificate of the suite expires in less than {CERT_EXPIRY_DAYS} days "
            "(cert-manager did not renew it).",
        )
    )
    return [
        {
            "alert": alert,
            "expr": expr,
            "for": for_,
            "labels": {"severity": severity, "namespace": namespace, "suite": name},
            "annotations": {
                "summary": summary,
                "description": (
                    f"EvalSuite {namespace}/{name}: {summary} "
                    f"See kubectl -n {namespace} describe evalsuite {name}."
                ),
            },
        }
        for alert, expr, for_, severity, summary in rules
    ]


def build_prometheus_rule(suite: Mapping[str, Any], spec: EvalSuiteSpec) -> dict[str, Any]:
    name = suite["metadata"]["name"]
    return {
        "apiVersion": MONITORING_API,
        "kind": "PrometheusRule",
        "metadata": _monitor_meta(suite, child_name(name, "alerts"), spec),
        "spec": {"groups": [{"name": f"evalsuite-{name}", "rules": alert_rules(suite, spec)}]},
    }


def grafana_panels(suite: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(title, PromQL, unit) of each panel."""
    runners = _runners(suite)
    return [
        (
            "Model requests / s",
            f"sum by (model, outcome) (rate(eval_runner_requests_total{{{runners}}}[5m]))",
            "reqps",
        ),
        (
            "Model latency p95",
            "histogram_quantile(0.95, sum by (le, model) "
            f"(rate(eval_runner_request_duration_seconds_bucket{{{runners}}}[5m])))",
            "s",
        ),
        (
            "Tokens / s",
            f"sum by (model, kind) (rate(eval_runner_tokens_total{{{runners}}}[5m]))",
            "short",
        ),
        (
            "Cost (USD / hour)",
            f"sum by (model) (rate(eval_runner_cost_usd_total{{{runners}}}[15m])) * 3600",
            "currencyUSD",
        ),
        (
            "Response cache hit rate",
            f'sum(rate(eval_runner_cache_lookups_total{{{runners}, result="hit"}}[5m]))'
            f" / sum(rate(eval_runner_cache_lookups_total{{{runners}}}[5m]))",
            "percentunit",
        ),
        (
            "Circuit breaker (0 closed, 1 half-open, 2 open)",
            f"max by (model) (eval_runner_circuit_breaker_state{{{runners}}})",
            "short",
        ),
    ]


def build_grafana_dashboard(suite: Mapping[str, Any], spec: EvalSuiteSpec) -> dict[str, Any]:
    name, namespace = suite["metadata"]["name"], suite["metadata"]["namespace"]
    panels = [
        {
            "id": i + 1,
            "type": "timeseries",
            "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": "A", "expr": expr, "legendFormat": "__auto"}],
        }
        for i, (title, expr, unit) in enumerate(grafana_panels(suite))
    ]
    board = {
        "uid": f"evalsuite-{namespace}-{name}"[:40],
        "title": f"EvalSuite {namespace}/{name}",
        "tags": ["eval-operator", "evalsuite"],
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Data source",
                }
            ]
        },
        "panels": panels,
    }
    meta = _meta(suite, child_name(name, "grafana-dashboard"), "monitoring", "eval-operator")
    meta["labels"].update(spec.monitoring.grafana_dashboard.labels or DEFAULT_GRAFANA_LABELS)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {f"evalsuite-{namespace}-{name}.json": json.dumps(board, indent=1)},
    }


def core_objects(suite: Mapping[str, Any], spec: EvalSuiteSpec) -> list[dict[str, Any]]:
    """What monitoring needs of the core API: the exporters' metrics Services, the Grafana
    ConfigMap."""
    if not monitored(spec):
        return []
    objects = []
    if spec.monitoring.exporters and managed_store(spec):
        objects.append(_metrics_service(suite, "store", "pg-metrics", POSTGRES_EXPORTER_PORT))
    if spec.monitoring.exporters and managed_cache(spec):
        objects.append(_metrics_service(suite, "cache", "redis-metrics", REDIS_EXPORTER_PORT))
    if spec.monitoring.grafana_dashboard.enabled:
        objects.append(build_grafana_dashboard(suite, spec))
    return objects


def prometheus_objects(suite: Mapping[str, Any], spec: EvalSuiteSpec) -> list[dict[str, Any]]:
    """The Prometheus Operator's objects (only where its CRDs are served)."""
    if not monitored(spec):
        return []
    name = suite["metadata"]["name"]
    objects = [build_pod_monitor(suite, spec), build_prometheus_rule(suite, spec)]
    if dashboards.wanted(spec):
        objects.append(
            _service_monitor(
                suite,
                spec,
                dashboards.dashboard_name(name),
                selector(suite, dashboards.COMPONENT),
                "http",
            )
        )
    for component, port in (("store", "pg-metrics"), ("cache", "redis-metrics")):
        present = managed_store(spec) if component == "store" else managed_cache(spec)
        if spec.monitoring.exporters and present:
            objects.append(
                _service_monitor(
                    suite,
                    spec,
                    child_name(name, f"{component}-metrics"),
                    {SUITE_LABEL: name, METRICS_LABEL: component},
                    port,
                )
            )
    return objects
