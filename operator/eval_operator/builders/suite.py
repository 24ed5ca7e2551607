"""The objects of an EvalSuite's stack: pure functions of the suite and the operator settings.

The managed store is a single-instance PostgreSQL StatefulSet (official image) with a headless
Service for its pod and a client Service, a tuned postgresql.conf from a ConfigMap, and a
credentials Secret in the shape of a CloudNativePG app Secret; scheduled dumps are a CronJob
writing `pg_dump -Fc` files to a volume of their own. The managed cache is a Redis Deployment
and Service. Before the first run, a Job with the runner image applies the schema migrations
(`eval-runner migrate`): the operator never holds a database password (its RBAC may create
Secrets, not read them), and the migration reaches the store the way runner pods do.

Every pod is restricted Pod Security: non-root with the image's own UID, no privilege
escalation, no capabilities, seccomp RuntimeDefault, read-only root filesystem with emptyDirs
where the server writes. The stack goes with the suite (owner references), except the data
when store.managed.retainOnDelete: the data volume and the credentials Secret stay, and a suite
created again under the same name finds them by name and uses them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from eval_api import environment
from eval_api.exitcodes import EXIT_PERMANENT
from eval_api.quantity import quantity_bytes
from eval_api.v1alpha1.evalsuite import EvalSuiteSpec
from eval_api.v1alpha1.execution import ExecutionSpec
from eval_api.v1alpha1.stack import CacheSpec, ManagedCacheSpec, ManagedStoreSpec, StoreSpec
from eval_operator.builders.meta import (
    MANAGED_BY,
    RUNNER_UID,
    owner_reference,
    restricted_container,
)
from eval_operator.settings import OperatorSettings

SUITE_LABEL = "evals.io/suite"
POSTGRES_UID = 999  # the postgres user of the official image (Debian variants)
REDIS_UID = 999  # the redis user of the official image (Debian variants)
POSTGRES_PORT = 5432
REDIS_PORT = 6379
STORE_USER = "evals"
STORE_DBNAME = "evals"
READER_ROLE = "evals_dashboard"  # the dashboard's read-only role in a managed store
# The managed store's application role (eval_api.store.approle): runners, cell reports,
# comparisons and backups log in as it; only the migration Job and the store keep the superuser.
APP_ROLE = "evals_app"
DATA_DIR = "/var/lib/postgresql/data"
PGDATA = f"{DATA_DIR}/pgdata"  # a subdirectory: a fresh volume's root may hold lost+found
CONFIG_DIR = "/etc/postgresql"
BACKUP_DIR = "/backups"
STORE_CA_DIR = "/etc/eval/store-ca"
STORE_CA_FILE = "ca.crt"
DEFAULT_STORE_RESOURCES = {
    "requests": {"cpu": "250m", "memory": "512Mi"},
    "limits": {"memory": "1Gi"},
}
# The dashboard's store connections per replica (eval-runner dashboard --pool-size), passed by
# its Deployment and counted in the store's max_connections.
DASHBOARD_POOL_SIZE = 10
# max_connections (store_connections): never below PostgreSQL's own default, which leaves room
# for Evaluations outside the matrix that use the suite's store and for a person's psql.
MIN_CONNECTIONS = 100
# What a backend costs at rest, measured on PostgreSQL 15: a runner's connection after its
# COPY batches holds about 1.6 MB of private memory, an idle one about 1.1 MB.
CONNECTION_BYTES = 2 * 1024**2
SUPERUSER_RESERVED_CONNECTIONS = 3  # PostgreSQL's default: kept for an administrator
# A changed max_connections restarts the server (the config hash rolls the pod): it moves in
# steps, so a dashboard bound or maxParallelCells changed by a little does not restart it.
CONNECTIONS_STEP = 50
CACHE_URL_KEY = "url"
CACHE_AUTH_KEY = "auth.conf"  # "requirepass ...": Redis reads it from a file, never argv

_MAX_NAME = 52  # a StatefulSet's pods carry "<name>-<revision hash>" in a label (63)
_HASH_LEN = 6


def child_name(suite: str, suffix: str) -> str:
    """`<suite>-<suffix>`, shortened with a hash of the suite's name when too long."""
    name = f"{suite}-{suffix}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(suite.encode()).hexdigest()[:_HASH_LEN]
    keep = _MAX_NAME - len(suffix) - _HASH_LEN - 2
    return f"{suite[:keep].rstrip('-')}-{digest}-{suffix}"


def store_name(suite: str) -> str:
    return child_name(suite, "store")


def store_secret_name(suite: str) -> str:
    """The managed store's superuser (POSTGRES_USER of the image): only the StatefulSet (and
    its exporter sidecar) and the migration Job reference its password."""
    return child_name(suite, "store-credentials")


def app_secret_name(suite: str) -> str:
    """The managed store's application role (host, port, dbname, username, password, uri)."""
    return child_name(suite, "store-app")


def cache_name(suite: str) -> str:
    return child_name(suite, "cache")


def cache_secret_name(suite: str) -> str:
    return child_name(suite, "cache-credentials")


def store_host(suite: str, namespace: str) -> str:
    # <service>.<namespace>.svc resolves in every pod whatever the cluster domain is.
    return f"{store_name(suite)}.{namespace}.svc"


def cache_host(suite: str, namespace: str) -> str:
    return f"{cache_name(suite)}.{namespace}.svc"


def labels(suite: Mapping[str, Any], component: str, name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": suite["metadata"]["name"],
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "eval-operator",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        SUITE_LABEL: suite["metadata"]["name"],
    }


def selector(suite: Mapping[str, Any], component: str) -> dict[str, str]:
    return {SUITE_LABEL: suite["metadata"]["name"], "app.kubernetes.io/component": component}


def _meta(
    suite: Mapping[str, Any], name: str, component: str, app: str, *, owned: bool = True
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": suite["metadata"]["namespace"],
        "labels": labels(suite, component, app),
    }
    if owned:
        meta["ownerReferences"] = [owner_reference(suite)]
    return meta


def restricted_pod(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        # Only a fresh volume is chowned: a large data volume is not walked at every start.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _data(values: Mapping[str, str]) -> dict[str, str]:
    return {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}


def _resources(given: Any, default: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    if given is None:
        return {section: dict(values) for section, values in default.items()}
    dumped = given.model_dump(exclude_none=True)
    return {section: {k: str(v) for k, v in values.items()} for section, values in dumped.items()}


def managed_store(spec: EvalSuiteSpec) -> ManagedStoreSpec | None:
    """The managed store's settings, or None for an external store."""
    if spec.store.mode != "Managed":
        return None
    return spec.store.managed or ManagedStoreSpec()


def managed_cache(spec: EvalSuiteSpec) -> ManagedCacheSpec | None:
    if spec.cache.mode != "Managed":
        return None
    return spec.cache.managed or ManagedCacheSpec()


# --- the managed store -----------------------------------------------------------------------


def new_password() -> str:
    """32 random bytes, URL-safe (it goes into a connection URI unescaped)."""
    return secrets.token_urlsafe(32)


def build_store_secret(
    suite: Mapping[str, Any], spec: EvalSuiteSpec, password: str
) -> dict[str, Any]:
    """The generated credentials, created once (a 409 keeps the existing password).

    Owned by the suite unless retainOnDelete, so that the data volume kept after a deletion is
    still readable by the suite created again under the same name.
    """
    namespace = suite["metadata"]["namespace"]
    name = suite["metadata"]["name"]
    managed = managed_store(spec)
    retain = managed is None or managed.retain_on_delete
    host = store_host(name, namespace)
    credentials = f"{STORE_USER}:{quote(password, safe='')}"
    uri = f"postgresql://{credentials}@{host}:{POSTGRES_PORT}/{STORE_DBNAME}"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(suite, store_secret_name(name), "store", "postgres", owned=not retain),
        "type": "Opaque",
        "data": _data(
            {
                "username": STORE_USER,
                "password": password,
                "dbname": STORE_DBNAME,
                "host": host,
                "port": str(POSTGRES_PORT),
                "uri": uri,
            }
        ),
    }


def build_app_secret(suite: Mapping[str, Any], password: str) -> dict[str, Any]:
    """The application role's credentials, created once (a 409 keeps the password); the
    migration Job creates the role, or sets its password, from them. The same keys as the
    store's Secret, so that a pod reads either the same way."""
    namespace = suite["metadata"]["namespace"]
    name = suite["metadata"]["name"]
    host = store_host(name, namespace)
    credentials = f"{APP_ROLE}:{quote(password, safe='')}"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(suite, app_secret_name(name), "store", "postgres"),
        "type": "Opaque",
        "data": _data(
            {
                "username": APP_ROLE,
                "password": password,
                "dbname": STORE_DBNAME,
                "host": host,
                "port": str(POSTGRES_PORT),
                "uri": f"postgresql://{credentials}@{host}:{POSTGRES_PORT}/{STORE_DBNAME}",
            }
        ),
    }


def _memory_limit_bytes(resources: Mapping[str, Any]) -> int | None:
    for section in ("limits", "requests"):
        value = (resources.get(section) or {}).get("memory")
        if value is not None:
            return quantity_bytes(value)
    return None


def _megabytes(value: int) -> str:
    return f"{max(value // (1024 * 1024), 1)}MB"


def _store_memory(managed: ManagedStoreSpec) -> int:
    """The memory PostgreSQL is tuned to: its limit, else its request, else 1Gi."""
    resources = _resources(managed.resources, DEFAULT_STORE_RESOURCES)
    return _memory_limit_bytes(resources) or 1024**3


def _shm_bytes(memory: int) -> int:
    """The size of the store's /dev/shm (see build_store_statefulset): an eighth of its memory,
    never below the 64 MB a container gets without it."""
    return max(memory // 8, 64 * 1024**2)


def store_connections(spec: EvalSuiteSpec) -> tuple[int, int, int]:
    """The managed store's max_connections, with what can connect at once and what the memory
    holds: (max_connections, at once, memory's bound).

    At once, one connection each: the runner pods of the cells that may run together
    (maxParallelCells or its default, times a cell's pods: parallelism, else shards), a cell
    report Job per such cell (one starts as its cell finishes), the dashboard's pools at its most
    replicas plus the one a rolling update adds, the migration and the backup Jobs, and the
    superuser's reserved connections. Rounded up to a step, never below PostgreSQL's default.

    The memory bounds it: a quarter of the memory is shared_buffers, an eighth /dev/shm, and
    connections at rest may take half (CONNECTION_BYTES each); the last eighth is work_mem for
    the queries that sort or hash, and maintenance. A suite that asks for more than the memory
    holds gets the bound: clients past it are refused ("too many clients") and retried, where
    more backends would get the server OOM-killed with every run's connection.
    """
    runners = reports = 0
    if spec.has_matrix:
        assert spec.models is not None and spec.tasks is not None
        execution = (spec.defaults.execution if spec.defaults else None) or ExecutionSpec()
        cells = min(spec.parallel_cells, len(spec.models) * len(spec.tasks))
        runners = cells * min(execution.parallelism or execution.shards, execution.shards)
        reports = cells
    dashboard = (spec.dashboard.max_replicas + 1) * DASHBOARD_POOL_SIZE
    at_once = (
        runners
        + reports
        + (dashboard if dashboard_wanted(spec) else 0)
        + 2  # the migration and the backup Jobs
        + SUPERUSER_RESERVED_CONNECTIONS
    )
    managed = managed_store(spec)
    assert managed is not None
    bound = _store_memory(managed) // 2 // CONNECTION_BYTES
    stepped = -(-at_once // CONNECTIONS_STEP) * CONNECTIONS_STEP
    return max(min(stepped, bound), MIN_CONNECTIONS), at_once, bound


def postgresql_conf(spec: EvalSuiteSpec) -> str:
    """postgresql.conf: where the server listens, settings tuned to the memory it has and to the
    clients the suite runs, then the user's parameters (last, so they win; the CRD keeps them off
    the settings above)."""
    managed = managed_store(spec)
    assert managed is not None
    memory = _store_memory(managed)
    connections, at_once, bound = store_connections(spec)
    settings: dict[str, str] = {
        "listen_addresses": "'*'",
        "port": str(POSTGRES_PORT),
        "unix_socket_directories": "'/var/run/postgresql'",
        "password_encryption": "'scram-sha-256'",
        "max_connections": str(connections),
        "superuser_reserved_connections": str(SUPERUSER_RESERVED_CONNECTIONS),
        # The usual starting points: a quarter of memory for shared buffers, three quarters as
        # the planner's cache estimate, SSD-like page costs.
        "shared_buffers": _megabytes(memory // 4),
        "effective_cache_size": _megabytes(memory * 3 // 4),
        "maintenance_work_mem": _megabytes(min(memory // 16, 2 * 1024**3)),
        "work_mem": "8MB",
        "wal_buffers": "16MB",
        "checkpoint_completion_target": "0.9",
        "max_wal_size": "2GB",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        # Per-sample rows arrive in COPY batches; each batch is durable when it is acknowledged.
        "synchronous_commit": "on",
        "log_min_duration_statement": "1000",
        "log_connections": "off",
        "log_timezone": "'UTC'",
        "timezone": "'UTC'",
    }
    lines = [
        "# Generated by eval-operator; spec.store.managed.parameters come last.",
        f"# max_connections: {at_once} clients of the suite may connect at once; "
        f"{bound} fit in {_megabytes(memory)} (raise the store's memory for more).",
    ]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    for key, value in sorted((managed.parameters or {}).items()):
        lines.append(f"{key} = '{_conf_quote(value)}'")
    return "\n".join(lines) + "\n"


def _conf_quote(value: str) -> str:
    # postgresql.conf strings: a quote is doubled, a backslash escapes.
    return value.replace("\\", "\\\\").replace("'", "''")


def build_store_config(suite: Mapping[str, Any], spec: EvalSuiteSpec) -> dict[str, Any]:
    name = suite["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(suite, child_name(name, "store-config"), "store", "postgres"),
        "data": {"postgresql.conf": postgresql_conf(spec)},
    }


def build_store_services(suite: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The client Service (what runners connect to) and the StatefulSet's headless Service."""
    name = suite["metadata"]["name"]
    port = {"name": "postgres", "port": POSTGRES_PORT, "targetPort": "postgres", "protocol": "TCP"}
    client = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(suite, store_name(name), "store", "postgres"),
        "spec": {"type": "ClusterIP", "selector": selector(suite, "store"), "ports": [port]},
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(suite, child_name(name, "store-headless"), "store", "postgres"),
        "spec": {
            "clusterIP": "None",
            "selector": selector(suite, "store"),
            "ports": [port],
            # The pod's DNS name exists while it starts (pg_isready is the readiness gate).
            "publishNotReadyAddresses": True,
        },
    }
    return [client, headless]


def _pg_isready() -> list[str]:
    # The variables come from the credentials Secret; the probe never sees the password.
    return [
        "sh",
        "-c",
        f'exec pg_isready -q -h 127.0.0.1 -p {POSTGRES_PORT} -U "$POSTGRES_USER" -d "$POSTGRES_DB"',
    ]


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def build_store_statefulset(
    suite: Mapping[str, Any], spec: EvalSuiteSpec, settings: OperatorSettings
) -> dict[str, Any]:
    name = suite["metadata"]["name"]
    managed = managed_store(spec)
    assert managed is not None
    secret = store_secret_name(name)
    pod_labels = labels(suite, "store", "postgres")
    claim: dict[str, Any] = {
        "metadata": {"name": "data", "labels": pod_labels},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": str(managed.size)}},
        },
    }
    if managed.storage_class_name:
        claim["spec"]["storageClassName"] = managed.storage_class_name
    container = {
        "name": "postgres",
        "image": managed.image or settings.postgres_image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["-c", f"config_file={CONFIG_DIR}/postgresql.conf"],
        "env": [
            _secret_env("POSTGRES_USER", secret, "username"),
            _secret_env("POSTGRES_PASSWORD", secret, "password"),
            _secret_env("POSTGRES_DB", secret, "dbname"),
            {"name": "PGDATA", "value": PGDATA},
        ],
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT, "protocol": "TCP"}],
        # initdb on a fresh volume takes a while: the startup probe allows up to 5 minutes.
        "startupProbe": {
            "exec": {"command": _pg_isready()},
            "periodSeconds": 5,
            "failureThreshold": 60,
            "timeoutSeconds": 5,
        },
        "readinessProbe": {
            "exec": {"command": _pg_isready()},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        },
        "livenessProbe": {
            "exec": {"command": _pg_isready()},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": _resources(managed.resources, DEFAULT_STORE_RESOURCES),
        "securityContext": restricted_container(POSTGRES_UID),
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "run", "mountPath": "/var/run/postgresql"},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(suite, store_name(name), "store", "postgres"),
        "spec": {
            "replicas": 1,
            "serviceName": child_name(name, "store-headless"),
            "selector": {"matchLabels": selector(suite, "store")},
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain" if managed.retain_on_delete else "Delete",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    # A changed postgresql.conf rolls the pod (the server reads it at start).
                    "annotations": {
                        "evals.io/config-hash": hashlib.sha256(
                            postgresql_conf(spec).encode()
                        ).hexdigest()[:16]
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": restricted_pod(POSTGRES_UID),
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "config",
                            "configMap": {"name": child_name(name, "store-config")},
                        },
                        {"name": "run", "emptyDir": {"sizeLimit": "16Mi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                        # Parallel queries share their data (a parallel hash join's table) in
                        # files of /dev/shm; a container's own is 64 MB, and a big join fails
                        # past it ("could not resize shared memory segment"). Memory-backed,
                        # its pages count against the pod's memory limit: sized inside the
                        # budget of store_connections. The kubelet mounts the tmpfs at
                        # sizeLimit, so a query past it fails alone, not the whole server.
                        {
                            "name": "shm",
                            "emptyDir": {
                                "medium": "Memory",
                                "sizeLimit": f"{_shm_bytes(_store_memory(managed)) // 1024**2}Mi",
                            },
                        },
                    ],
                },
            },
            "volumeClaimTemplates": [claim],
        },
    }


def backup_script() -> str:
    """The backup pod's shell script: pruning first, then one dump, written whole or not at all.

    Pruning comes first and keeps the newest $RETENTION - 1 whole dumps (and no leftover
    partial file), so that a volume filled by the previous dumps frees the room of one before
    the next is written: pruning only after a successful dump would never run again once the
    volume is full. The dump goes to a temporary name and is renamed when pg_dump succeeded; a
    failed or killed run removes its partial file (trap) and exits non-zero, so that the Job
    fails (kube_job_status_failed, the suite's EvalSuiteBackupFailed alert) and never leaves a
    truncated file that looks like a backup.
    """
    return "\n".join(
        [
            "set -eu",
            'stamp="$(date -u +%Y%m%dT%H%M%SZ)"',
            'dump="$BACKUP_DIR/$BACKUP_PREFIX-$stamp.dump"',
            'partial="$dump.partial"',
            "trap 'rm -f -- \"$partial\"' EXIT",
            "trap 'exit 143' TERM",
            "trap 'exit 130' INT",
            'rm -f -- "$BACKUP_DIR"/*.partial',
            'ls -1t "$BACKUP_DIR/$BACKUP_PREFIX"-*.dump 2>/dev/null | tail -n +"$RETENTION" | '
            'while read -r old; do rm -f -- "$old"; echo "pruned $old"; done',
            'if ! pg_dump --format=custom --no-password --file="$partial"; then',
            '  echo "backup failed: pg_dump did not complete; $partial removed" >&2',
            '  df -h "$BACKUP_DIR" >&2 || true',
            "  exit 1",
            "fi",
            'mv "$partial" "$dump"',
            'echo "wrote $dump ($(wc -c < "$dump") bytes)"',
        ]
    )


def build_backup_volume(suite: Mapping[str, Any], managed: ManagedStoreSpec) -> dict[str, Any]:
    name = suite["metadata"]["name"]
    backup = managed.backup
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": str(backup.size)}},
    }
    if backup.storage_class_name:
        spec["storageClassName"] = backup.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        # Backups are data: kept with the data volume when retainOnDelete.
        "metadata": _meta(
            suite,
            child_name(name, "store-backups"),
            "store-backup",
            "postgres",
            owned=not managed.retain_on_delete,
        ),
        "spec": spec,
    }


def build_backup_cronjob(
    suite: Mapping[str, Any], managed: ManagedStoreSpec, settings: OperatorSettings
) -> dict[str, Any]:
    name = suite["metadata"]["name"]
    namespace = suite["metadata"]["namespace"]
    # The application role, not the superuser: it reads every table and sequence, and
    # pg_dump's transaction is READ ONLY (eval_api.store.approle).
    secret = app_secret_name(name)
    backup = managed.backup
    container = {
        "name": "backup",
        "image": managed.image or settings.postgres_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", backup_script()],
        "env": [
            {"name": "PGHOST", "value": store_host(name, namespace)},
            {"name": "PGPORT", "value": str(POSTGRES_PORT)},
            _secret_env("PGUSER", secret, "username"),
            _secret_env("PGPASSWORD", secret, "password"),
            _secret_env("PGDATABASE", secret, "dbname"),
            {"name": "BACKUP_DIR", "value": BACKUP_DIR},
            {"name": "BACKUP_PREFIX", "value": name},
            {"name": "RETENTION", "value": str(backup.retention)},
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": restricted_container(POSTGRES_UID),
        "volumeMounts": [
            {"name": "backups", "mountPath": BACKUP_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    cron: dict[str, Any] = {
        "schedule": backup.schedule,
        # One dump at a time; a schedule missed while the cluster was down runs once.
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 3600,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 3,
        "suspend": not backup.enabled,
        "jobTemplate": {
            "metadata": {"labels": labels(suite, "store-backup", "postgres")},
            "spec": {
                "backoffLimit": 2,
                "activeDeadlineSeconds": 6 * 3600,
                "template": {
                    "metadata": {"labels": labels(suite, "store-backup", "postgres")},
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "securityContext": restricted_pod(POSTGRES_UID),
                        "containers": [container],
                        "volumes": [
                            {
                                "name": "backups",
                                "persistentVolumeClaim": {
                                    "claimName": child_name(name, "store-backups")
                                },
                            },
                            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                        ],
                    },
                },
            },
        },
    }
    if backup.time_zone:
        cron["timeZone"] = backup.time_zone
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _meta(suite, child_name(name, "store-backup"), "store-backup", "postgres"),
        "spec": cron,
    }


# --- how pods reach the store and the cache ---------------------------------------------------


def reader_secret_name(suite: str) -> str:
    """The dashboard's read-only role of a managed store (username, password)."""
    return child_name(suite, "dashboard-store")


def dashboard_wanted(spec: EvalSuiteSpec) -> bool:
    """The dashboard is on and can be given read-only credentials."""
    return spec.dashboard.enabled and (
        spec.store.mode == "Managed" or spec.dashboard.store_secret_ref is not None
    )


def reader_env(suite_name: str, spec: EvalSuiteSpec) -> list[dict[str, Any]]:
    """What the migration Job needs to make the dashboard's read-only role: only for a
    managed store (an external store's read-only Secret is the user's)."""
    if spec.store.mode != "Managed" or not dashboard_wanted(spec):
        return []
    secret = reader_secret_name(suite_name)
    return [
        {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for variable, key in (
            (environment.READER_USER, "username"),
            (environment.READER_PASSWORD, "password"),
        )
    ]


def app_env(suite_name: str, spec: EvalSuiteSpec) -> list[dict[str, Any]]:
    """What the migration Job needs to make the application role: only for a managed store
    (an external store's Secret is the user's, with the role the user chose)."""
    if spec.store.mode != "Managed":
        return []
    secret = app_secret_name(suite_name)
    return [
        {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for variable, key in (
            (environment.APP_USER, "username"),
            (environment.APP_PASSWORD, "password"),
        )
    ]


def client_secret_of(suite_name: str, spec: EvalSuiteSpec) -> str:
    """The Secret the store's clients connect with (runner pods, cell reports, comparisons):
    the application role's for a managed store, never the superuser's; the external one."""
    if spec.store.mode == "Managed":
        return app_secret_name(suite_name)
    return store_secret_of(suite_name, spec)


def store_secret_of(suite_name: str, spec: EvalSuiteSpec) -> str:
    """The Secret holding the store's owner connection (what the migration Job uses): the
    generated one, or the external one."""
    if spec.store.mode == "External":
        assert spec.store.external is not None  # the CRD demands it
        return spec.store.external.secret_ref.name
    return store_secret_name(suite_name)


def store_env(store: StoreSpec, secret: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The store variables of a pod, as (env, envFrom). The managed store's generated Secret
    by secretKeyRef, key by key; an external store's Secret imported whole (envFrom with a
    prefix), as it may hold uri, or the parts, or both (a CloudNativePG app Secret does), and a
    missing one must stop the pod (CreateContainerConfigError: the suite says
    ExternalSecretNotFound). The operator never reads it: the runner uses uri when set."""
    if store.mode == "External":
        assert store.external is not None
        env = [{"name": environment.STORE_SSLMODE, "value": store.external.sslmode}]
        if store.external.ca_bundle is not None:
            env.append(
                {
                    "name": environment.STORE_SSLROOTCERT,
                    "value": f"{STORE_CA_DIR}/{STORE_CA_FILE}",
                }
            )
        env_from = [{"prefix": environment.STORE_SECRET_PREFIX, "secretRef": {"name": secret}}]
        return env, env_from
    env = [
        {
            "name": environment.STORE_SECRET_KEYS[key],
            "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
        }
        for key in ("host", "port", "dbname", "username", "password")
    ]
    # In-cluster traffic to the managed store; TLS comes with spec.tls (a later field).
    env.append({"name": environment.STORE_SSLMODE, "value": "disable"})
    return env, []


def store_ca_volume(store: StoreSpec) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The external store's CA bundle as a volume and its mount, when sslmode verifies."""
    if store.mode != "External" or store.external is None or store.external.ca_bundle is None:
        return None
    ca = store.external.ca_bundle
    if ca.config_map_ref is not None:
        source: dict[str, Any] = {
            "configMap": {
                "name": ca.config_map_ref.name,
                "items": [{"key": ca.config_map_ref.key, "path": STORE_CA_FILE}],
            }
        }
    else:
        assert ca.secret_ref is not None
        source = {
            "secret": {
                "secretName": ca.secret_ref.name,
                "items": [{"key": ca.secret_ref.key, "path": STORE_CA_FILE}],
            }
        }
    volume = {"name": "store-ca", **source}
    mount = {"name": "store-ca", "mountPath": STORE_CA_DIR, "readOnly": True}
    return volume, mount


def cache_env(suite_name: str, cache: CacheSpec) -> list[dict[str, Any]]:
    """The cache URL by secretKeyRef (it holds the password) and the TTL; none when disabled."""
    if cache.mode == "Disabled":
        return []
    if cache.mode == "External":
        assert cache.external is not None
        ref = {"name": cache.external.secret_ref.name, "key": cache.external.secret_ref.key}
    else:
        ref = {"name": cache_secret_name(suite_name), "key": CACHE_URL_KEY}
    return [
        {"name": environment.CACHE_URL, "valueFrom": {"secretKeyRef": ref}},
        {"name": environment.CACHE_TTL_SECONDS, "value": str(cache.ttl_seconds)},
    ]


# --- the schema migration -------------------------------------------------------------------


def migration_job_name(suite: str, fingerprint: str) -> str:
    return child_name(suite, f"migrate-{fingerprint[:8]}")


def migration_fingerprint(spec: EvalSuiteSpec, schema_version: int) -> str:
    """What the migration depends on: where the store is, how it is reached, which schema."""
    store = spec.store.model_dump(mode="json", by_alias=True, exclude_none=True)
    store.pop("managed", None)  # sizes, resources and backups do not change the schema
    # The read-only role is made by the migration: a dashboard turned on needs it again.
    reader = spec.store.mode == "Managed" and dashboard_wanted(spec)
    # TLS turned on or off: the migration checks the store (and the cache) the new way.
    state = {"store": store, "schema": schema_version, "reader": reader, "tls": spec.tls.enabled}
    # The application role is made by the migration too (a store of an older operator has none).
    if spec.store.mode == "Managed":
        state["app"] = APP_ROLE
    canonical = json.dumps(state, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def build_migration_job(
    suite: Mapping[str, Any],
    spec: EvalSuiteSpec,
    schema_version: int,
    settings: OperatorSettings,
) -> dict[str, Any]:
    """`eval-runner migrate`: applies the schema under an advisory lock and reports the version
    it reached (and whether the cache answers) in its termination message.

    The Job controller retries a failed attempt with its capped exponential backoff, so a store
    that is still starting, a wrong password or a missing Secret that gets fixed recovers by
    itself, and never in a hot loop; each failed attempt's reason is shown meanwhile.
    """
    name = suite["metadata"]["name"]
    fingerprint = migration_fingerprint(spec, schema_version)
    env, env_from = store_env(spec.store, store_secret_of(name, spec))
    env += cache_env(name, spec.cache)
    env += reader_env(name, spec)
    env += app_env(name, spec)
    env.append({"name": "PYTHONUNBUFFERED", "value": "1"})
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}]
    ca = store_ca_volume(spec.store)
    if ca is not None:
        volumes.append(ca[0])
        mounts.append(ca[1])
    container = {
        "name": "migrate",
        "image": settings.runner_image,
        "imagePullPolicy": settings.runner_image_pull_policy,
        "args": ["migrate"],
        "env": env,
        **({"envFrom": env_from} if env_from else {}),
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": restricted_container(RUNNER_UID),
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    job_labels = labels(suite, "store-migration", "eval-runner")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            **_meta(suite, migration_job_name(name, fingerprint), "store-migration", "eval-runner"),
            "annotations": {"evals.io/schema-version": str(schema_version)},
        },
        "spec": {
            "backoffLimit": 100,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                    # Exit 3 is a migration that cannot succeed by retrying (a checksum
                    # mismatch, a schema newer than this runner's): the Job fails at once.
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "migrate",
                            "operator": "In",
                            "values": [EXIT_PERMANENT],
                        },
                    },
                ]
            },
            "template": {
                "metadata": {"labels": job_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": restricted_pod(RUNNER_UID),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


# --- the managed cache ------------------------------------------------------------------------


def build_cache_secret(suite: Mapping[str, Any], password: str) -> dict[str, Any]:
    name = suite["metadata"]["name"]
    host = cache_host(name, suite["metadata"]["namespace"])
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(suite, cache_secret_name(name), "cache", "redis"),
        "type": "Opaque",
        "data": _data(
            {
                "password": password,
                CACHE_URL_KEY: f"redis://:{quote(password, safe='')}@{host}:{REDIS_PORT}/0",
                CACHE_AUTH_KEY: f"requirepass {password}\n",
            }
        ),
    }


def _cache_memory(managed: ManagedCacheSpec) -> int:
    return quantity_bytes(managed.max_memory)


def redis_conf(managed: ManagedCacheSpec) -> str:
    return "\n".join(
        [
            "# Generated by eval-operator: a cache, not a database.",
            f"port {REDIS_PORT}",
            "bind * -::*",
            f"maxmemory {_cache_memory(managed)}",
            "maxmemory-policy allkeys-lru",
            'save ""',
            "appendonly no",
            "dir /data",
            # The password, from the Secret's file: never on the command line.
            "include /etc/redis-auth/auth.conf",
            "",
        ]
    )


def _cache_resources(managed: ManagedCacheSpec) -> dict[str, Any]:
    if managed.resources is not None:
        return _resources(managed.resources, {})
    # Room above maxmemory for Redis's own overhead and fragmentation.
    limit = _cache_memory(managed) * Decimal("1.25") + 64 * 1024 * 1024
    request = _cache_memory(managed) + 32 * 1024 * 1024
    return {
        "requests": {"cpu": "100m", "memory": str(int(request))},
        "limits": {"memory": str(int(limit))},
    }


def build_cache_config(suite: Mapping[str, Any], managed: ManagedCacheSpec) -> dict[str, Any]:
    name = suite["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(suite, child_name(name, "cache-config"), "cache", "redis"),
        "data": {"redis.conf": redis_conf(managed)},
    }


def build_cache_service(suite: Mapping[str, Any]) -> dict[str, Any]:
    name = suite["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(suite, cache_name(name), "cache", "redis"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(suite, "cache"),
            "ports": [
                {"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}
            ],
        },
    }


def build_cache_deployment(
    suite: Mapping[str, Any], managed: ManagedCacheSpec, settings: OperatorSettings
) -> dict[str, Any]:
    name = suite["metadata"]["name"]
    secret = cache_secret_name(name)
    # redis-cli reads the password from REDISCLI_AUTH: the probe's argv holds none.
    probe = ["sh", "-c", "exec redis-cli -p 6379 ping | grep -q PONG"]
    container = {
        "name": "redis",
        "image": managed.image or settings.redis_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["redis-server"],
        "args": ["/etc/redis-conf/redis.conf"],
        "env": [_secret_env("REDISCLI_AUTH", secret, "password")],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"exec": {"command": probe}, "periodSeconds": 10, "timeoutSeconds": 5},
        "livenessProbe": {
            "exec": {"command": probe},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": _cache_resources(managed),
        "securityContext": restricted_container(REDIS_UID),
        "volumeMounts": [
            # Two directories side by side: a mount inside a ConfigMap's read-only volume
            # would need a directory created in it.
            {"name": "config", "mountPath": "/etc/redis-conf", "readOnly": True},
            {"name": "auth", "mountPath": "/etc/redis-auth", "readOnly": True},
            {"name": "data", "mountPath": "/data"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(suite, cache_name(name), "cache", "redis"),
        "spec": {
            "replicas": 1,
            # One cache at a time: a second pod would be a second, empty cache.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector(suite, "cache")},
            "template": {
                "metadata": {
                    "labels": labels(suite, "cache", "redis"),
                    "annotations": {
                        "evals.io/config-hash": hashlib.sha256(
                            redis_conf(managed).encode()
                        ).hexdigest()[:16]
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": restricted_pod(REDIS_UID),
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "config",
                            "configMap": {"name": child_name(name, "cache-config")},
                        },
                        {
                            "name": "auth",
                            "secret": {
                                "secretName": secret,
                                "items": [{"key": CACHE_AUTH_KEY, "path": "auth.conf"}],
                            },
                        },
                        # No persistence: nothing is written here but Redis's scratch files.
                        {"name": "data", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def desired_objects(
    suite: Mapping[str, Any], spec: EvalSuiteSpec, settings: OperatorSettings
) -> list[dict[str, Any]]:
    """Every object of the stack but the Secrets (create-only, made apart) and the migration
    Job (made once the store is up)."""
    objects: list[dict[str, Any]] = []
    store = managed_store(spec)
    if store is not None:
        objects.append(build_store_config(suite, spec))
        objects += build_store_services(suite)
        objects.append(build_store_statefulset(suite, spec, settings))
        objects.append(build_backup_volume(suite, store))
        objects.append(build_backup_cronjob(suite, store, settings))
    cache = managed_cache(spec)
    if cache is not None:
        objects.append(build_cache_config(suite, cache))
        objects.append(build_cache_service(suite))
        objects.append(build_cache_deployment(suite, cache, settings))
    return objects
