"""The results dashboard of an EvalSuite: pure builders of its Deployment, Service,
HorizontalPodAutoscaler (autoscaling/v2), PodDisruptionBudget and read-only credentials.

The dashboard runs `eval-runner dashboard` from the runner image (it has the HTTP server, the
store driver and the statistics already: a second image would only repeat them). It reads the
store as a read-only role: for a managed store, the migration Job makes the role with the
password of the Secret made here; for an external store, the user gives a read-only Secret
(spec.dashboard.storeSecretRef). It never gets the store's own credentials, nor the cache's:
its readiness check pings the managed cache without a password (a NOAUTH answer is an
answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eval_api import environment
from eval_api.v1alpha1.dashboard import DashboardSpec
from eval_api.v1alpha1.evalsuite import EvalSuiteSpec
from eval_operator.builders.meta import RUNNER_UID, restricted_container
from eval_operator.builders.suite import (
    DASHBOARD_POOL_SIZE,
    READER_ROLE,
    REDIS_PORT,
    _data,
    _meta,
    _resources,
    cache_host,
    child_name,
    labels,
    reader_secret_name,
    restricted_pod,
    selector,
    store_ca_volume,
    store_env,
    store_secret_name,
)
from eval_operator.builders.suite import (
    dashboard_wanted as wanted,
)
from eval_operator.settings import OperatorSettings

COMPONENT = "dashboard"
PORT = 8080
SERVICE_PORT = 80
# About 70 MB at rest, 150 MB once a comparison loaded scipy: the autoscaler's 80% of the
# memory request must sit above that, or it would scale out for good.
DEFAULT_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "512Mi"},
}
# Why the dashboard is not deployed although enabled (DashboardReady False).
NEEDS_READ_ONLY_SECRET = "ReadOnlyCredentialsNeeded"


def dashboard_name(suite: str) -> str:
    return child_name(suite, "dashboard")


def dashboard_url(suite: str, namespace: str, tls: bool = False) -> str:
    if tls:  # spec.tls with cert-manager (eval_operator.builders.tls)
        return f"https://{dashboard_name(suite)}.{namespace}.svc:443"
    return f"http://{dashboard_name(suite)}.{namespace}.svc:{SERVICE_PORT}"


def blocked_reason(spec: EvalSuiteSpec) -> tuple[str, str] | None:
    """Why an enabled dashboard cannot be made yet, as (reason, message); None when it can."""
    if spec.dashboard.enabled and not wanted(spec):
        return (
            NEEDS_READ_ONLY_SECRET,
            "an external store needs spec.dashboard.storeSecretRef: a Secret with read-only "
            "credentials (the dashboard is never given the store's own)",
        )
    return None


def build_reader_secret(suite: Mapping[str, Any], password: str) -> dict[str, Any]:
    """The managed store's read-only role, created once (a 409 keeps the password); the
    migration Job sets the role's password from it."""
    name = suite["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(suite, reader_secret_name(name), COMPONENT, "postgres"),
        "type": "Opaque",
        "data": _data({"username": READER_ROLE, "password": password}),
    }


def _store_env(suite_name: str, spec: EvalSuiteSpec) -> tuple[list[dict], list[dict]]:
    if spec.store.mode == "External":
        assert spec.dashboard.store_secret_ref is not None
        return store_env(spec.store, spec.dashboard.store_secret_ref.name)
    store_secret = store_secret_name(suite_name)
    reader = reader_secret_name(suite_name)

    def ref(variable: str, secret: str, key: str) -> dict[str, Any]:
        return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    env = [
        ref(environment.STORE_HOST, store_secret, "host"),
        ref(environment.STORE_PORT, store_secret, "port"),
        ref(environment.STORE_DBNAME, store_secret, "dbname"),
        ref(environment.STORE_USER, reader, "username"),
        ref(environment.STORE_PASSWORD, reader, "password"),
        {"name": environment.STORE_SSLMODE, "value": "disable"},
    ]
    return env, []


def _dashboard_resources(dashboard: DashboardSpec) -> dict[str, Any]:
    resources = _resources(dashboard.resources, DEFAULT_RESOURCES)
    # The autoscaler computes utilisation against the requests: both must be there.
    requests = resources.setdefault("requests", {})
    for key, value in DEFAULT_RESOURCES["requests"].items():
        requests.setdefault(key, value)
    return resources


def build_dashboard_deployment(
    suite: Mapping[str, Any], spec: EvalSuiteSpec, settings: OperatorSettings
) -> dict[str, Any]:
    meta = suite["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    dashboard = spec.dashboard
    env, env_from = _store_env(name, spec)
    if spec.cache.mode == "Managed":
        env.append(
            {
                "name": environment.CACHE_ENDPOINT,
                "value": f"{cache_host(name, namespace)}:{REDIS_PORT}",
            }
        )
    if dashboard.trusted_proxies:
        env.append(
            {
                "name": environment.DASHBOARD_TRUSTED_PROXIES,
                "value": ",".join(dashboard.trusted_proxies),
            }
        )
    env.append({"name": "PYTHONUNBUFFERED", "value": "1"})
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    ca = store_ca_volume(spec.store) if spec.store.mode == "External" else None
    if ca is not None:
        volumes.append(ca[0])
        mounts.append(ca[1])
    args = [
        "dashboard",
        "--port",
        str(PORT),
        "--namespace",
        namespace,
        "--suite",
        name,
        "--rate",
        str(dashboard.rate_limit.requests_per_second),
        "--burst",
        str(dashboard.rate_limit.burst),
        # The store's max_connections counts this pool (builders.suite.store_connections).
        "--pool-size",
        str(DASHBOARD_POOL_SIZE),
    ]
    container = {
        "name": "dashboard",
        "image": settings.runner_image,
        "imagePullPolicy": settings.runner_image_pull_policy,
        "args": args,
        "env": env,
        **({"envFrom": env_from} if env_from else {}),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 30,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 6,
            "failureThreshold": 3,
        },
        "resources": _dashboard_resources(dashboard),
        "securityContext": restricted_container(RUNNER_UID),
        "volumeMounts": mounts,
    }
    pod_labels = labels(suite, COMPONENT, "eval-runner")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(suite, dashboard_name(name), COMPONENT, "eval-runner"),
        # No replicas: the HorizontalPodAutoscaler owns them (an applied count would fight it).
        "spec": {
            "selector": {"matchLabels": selector(suite, COMPONENT)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": restricted_pod(RUNNER_UID),
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": selector(suite, COMPONENT)},
                        }
                    ],
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def build_dashboard_service(suite: Mapping[str, Any]) -> dict[str, Any]:
    name = suite["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(suite, dashboard_name(name), COMPONENT, "eval-runner"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(suite, COMPONENT),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def build_dashboard_hpa(suite: Mapping[str, Any], spec: EvalSuiteSpec) -> dict[str, Any]:
    name = suite["metadata"]["name"]
    dashboard = spec.dashboard

    def utilization(resource: str, percent: int) -> dict[str, Any]:
        return {
            "type": "Resource",
            "resource": {
                "name": resource,
                "target": {"type": "Utilization", "averageUtilization": percent},
            },
        }

    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(suite, dashboard_name(name), COMPONENT, "eval-runner"),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": dashboard_name(name),
            },
            "minReplicas": dashboard.min_replicas,
            "maxReplicas": dashboard.max_replicas,
            "metrics": [
                utilization("cpu", dashboard.target_cpu_utilization_percentage),
                utilization("memory", dashboard.target_memory_utilization_percentage),
            ],
        },
    }


def build_dashboard_pdb(suite: Mapping[str, Any]) -> dict[str, Any]:
    name = suite["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(suite, dashboard_name(name), COMPONENT, "eval-runner"),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(suite, COMPONENT)},
        },
    }


def dashboard_objects(
    suite: Mapping[str, Any], spec: EvalSuiteSpec, settings: OperatorSettings
) -> list[dict[str, Any]]:
    """The dashboard's objects (none when disabled or blocked)."""
    if not wanted(spec):
        return []
    objects = [
        build_dashboard_deployment(suite, spec, settings),
        build_dashboard_service(suite),
        build_dashboard_hpa(suite, spec),
    ]
    if spec.dashboard.min_replicas > 1:
        objects.append(build_dashboard_pdb(suite))
    return objects
