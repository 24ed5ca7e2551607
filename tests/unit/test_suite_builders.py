"""The EvalSuite stack's objects: valid Kubernetes objects (kubernetes-validate --strict),
restricted Pod Security, secrets only by reference, data kept when the suite asks for it."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from eval_api.quantity import parse_quantity, quantity_bytes
from eval_api.v1alpha1 import EvalSuiteSpec
from eval_operator.builders import dashboard
from eval_operator.builders import suite as builders
from eval_operator.settings import OperatorSettings
from tests.support.servers import as_postgres_user, postgres_bin

K8S_VERSION = "1.30"
SETTINGS = OperatorSettings(runner_image="registry.example/eval-runner:1.2.3")


def suite_object(spec: dict[str, Any] | None = None, name: str = "stack") -> dict[str, Any]:
    return {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "EvalSuite",
        "metadata": {"name": name, "namespace": "team-a", "uid": "u-1"},
        "spec": spec or {},
    }


def every_object(spec: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    suite = suite_object(spec)
    parsed = EvalSuiteSpec.model_validate(suite["spec"])
    objects = builders.desired_objects(suite, parsed, SETTINGS)
    objects += dashboard.dashboard_objects(suite, parsed, SETTINGS)
    objects.append(builders.build_migration_job(suite, parsed, 2, SETTINGS))
    if parsed.store.mode == "Managed":
        objects.append(builders.build_store_secret(suite, parsed, "pw"))
        objects.append(dashboard.build_reader_secret(suite, "reader-pw"))
    if parsed.cache.mode == "Managed":
        objects.append(builders.build_cache_secret(suite, "pw"))
    return objects


SPECS = {
    "defaults": {},
    "tuned": {
        "store": {
            "managed": {
                "size": "50Gi",
                "storageClassName": "fast",
                "resources": {
                    "requests": {"cpu": "1", "memory": "2Gi"},
                    "limits": {"memory": "4Gi"},
                },
                "parameters": {"work_mem": "16MB", "search_path": "it's"},
                "retainOnDelete": False,
                "backup": {"schedule": "@daily", "timeZone": "Europe/Paris", "retention": 3},
            }
        },
        "cache": {"managed": {"maxMemory": "1Gi"}, "ttlSeconds": 3600},
    },
    "external": {
        "store": {
            "mode": "External",
            "external": {
                "secretRef": {"name": "pg-app"},
                "sslmode": "verify-full",
                "caBundle": {"configMapRef": {"name": "pg-ca", "key": "ca.crt"}},
            },
        },
        "cache": {"mode": "External", "external": {"secretRef": {"name": "redis", "key": "url"}}},
    },
    "no cache": {"cache": {"mode": "Disabled"}},
    "external with a read-only secret": {
        "store": {"mode": "External", "external": {"secretRef": {"name": "pg-app"}}},
        "dashboard": {
            "storeSecretRef": {"name": "pg-readonly"},
            "minReplicas": 2,
            "maxReplicas": 6,
            "resources": {"limits": {"memory": "1Gi"}},
        },
    },
}


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec") or {}
    if obj["kind"] in ("StatefulSet", "Deployment", "Job"):
        return [spec["template"]["spec"]]
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return []


@pytest.mark.parametrize("case", sorted(SPECS))
def test_every_object_is_valid_for_the_apiserver(case: str) -> None:
    objects = every_object(SPECS[case])
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        assert len(obj["metadata"]["name"]) <= 52
        assert obj["metadata"]["labels"]["evals.io/suite"] == "stack"


@pytest.mark.parametrize("case", sorted(SPECS))
def test_every_pod_is_restricted(case: str) -> None:
    for obj in every_object(SPECS[case]):
        for pod in pod_specs(obj):
            assert pod["automountServiceAccountToken"] is False
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
            for container in pod["containers"]:
                sc = container["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False
                assert sc["readOnlyRootFilesystem"] is True
                assert sc["capabilities"] == {"drop": ["ALL"]}
                assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
                assert "resources" in container
                writable = {
                    m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")
                }
                assert "/tmp" in writable or obj["kind"] == "Deployment"


def test_the_store_is_a_statefulset_with_probes_a_volume_and_the_image_uid() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in every_object(SPECS["tuned"])}
    sts = objects["StatefulSet", "stack-store"]
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == "stack-store-headless"
    assert objects["Service", "stack-store-headless"]["spec"]["clusterIP"] == "None"
    assert objects["Service", "stack-store"]["spec"]["ports"][0]["port"] == 5432
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    # retainOnDelete false: the StatefulSet controller deletes the claim with the set.
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Retain",
    }
    assert (
        pod["securityContext"]["runAsUser"] == 999
        and container["securityContext"]["runAsUser"] == 999
    )
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "pg_isready" in " ".join(container[probe]["exec"]["command"])
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/postgresql/data", "/var/run/postgresql", "/tmp", "/etc/postgresql"} <= mounts
    env = {e["name"]: e for e in container["env"]}
    assert env["PGDATA"]["value"].startswith("/var/lib/postgresql/data/")
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "stack-store-credentials",
        "key": "password",
    }
    assert container["args"] == ["-c", "config_file=/etc/postgresql/postgresql.conf"]


def test_postgresql_conf_is_tuned_to_the_memory_and_ends_with_the_users_parameters() -> None:
    spec = EvalSuiteSpec.model_validate(SPECS["tuned"])
    conf = builders.postgresql_conf(spec)
    lines = dict(
        line.split(" = ", 1)
        for line in conf.splitlines()
        if " = " in line and not line.startswith("#")
    )
    assert lines["shared_buffers"] == "1024MB"  # a quarter of the 4Gi limit
    assert lines["effective_cache_size"] == "3072MB"
    assert lines["listen_addresses"] == "'*'"
    assert lines["work_mem"] == "'16MB'"  # the user's, after the operator's 8MB
    assert lines["search_path"] == "'it''s'"  # quoted the way postgresql.conf reads it
    assert conf.index("work_mem = 8MB") < conf.index("work_mem = '16MB'")


def test_the_store_has_a_memory_backed_dev_shm_sized_from_its_memory() -> None:
    """PostgreSQL's parallel queries share data in /dev/shm: a container's own is 64 MB."""
    for spec, size in (({}, "128Mi"), (SPECS["tuned"], "512Mi")):  # an eighth of 1Gi, 4Gi
        store = next(o for o in every_object(spec) if o["kind"] == "StatefulSet")
        kubernetes_validate.validate(store, K8S_VERSION, strict=True)
        pod = store["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": size}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["/dev/shm"] == "shm"


def _conf_value(spec: dict[str, Any], key: str) -> str:
    conf = builders.postgresql_conf(EvalSuiteSpec.model_validate(spec))
    values = [line.split(" = ", 1)[1] for line in conf.splitlines() if line.startswith(key + " =")]
    assert len(values) == 1, conf
    return values[0]


def _matrix(cells_at_once: int | None, shards: int, memory: str) -> dict[str, Any]:
    """A 20 x 20 matrix of `shards`-pod cells on a store with this memory limit."""
    return {
        "models": [
            {"name": f"m{i}", "model": {"name": "m", "baseURL": "https://llm.example/v1"}}
            for i in range(20)
        ],
        "tasks": [
            {
                "name": f"t{j}",
                "dataset": {"builtin": "arithmetic"},
                "task": {"scorers": [{"type": "exact_match"}]},
            }
            for j in range(20)
        ],
        "defaults": {"execution": {"shards": shards}},
        **({"maxParallelCells": cells_at_once} if cells_at_once else {}),
        "store": {"managed": {"resources": {"limits": {"memory": memory}}}},
    }


@pytest.mark.parametrize(
    ("spec", "max_connections"),
    [
        # No matrix: the dashboard's pools (3 replicas + 1 surge, 10 each), the migration and
        # backup Jobs, 3 reserved: 45, under PostgreSQL's default of 100.
        ({}, "100"),
        # 400 cells, maxParallelCells unset: 20 at once, 4 pods each, plus a report per cell:
        # 80 + 20 + 45 = 145, in steps of 50.
        (_matrix(None, 4, "4Gi"), "150"),
        # All 400 at once: 1600 + 400 + 45 = 2045. Half of 4Gi holds 1024 backends at 2 MiB;
        # 16Gi holds them all.
        (_matrix(400, 4, "4Gi"), "1024"),
        (_matrix(400, 4, "16Gi"), "2050"),
        # The default 1Gi store holds 256.
        (_matrix(400, 1, "1Gi"), "256"),
        # Fewer pods than shards at once: parallelism counts.
        ({**_matrix(10, 8, "4Gi"), "defaults": {"execution": {"shards": 8, "parallelism": 2}}},
         "100"),
    ],
)  # fmt: skip
def test_max_connections_counts_the_clients_that_run_at_once_within_the_memory(
    spec: dict[str, Any], max_connections: str
) -> None:
    assert _conf_value(spec, "max_connections") == max_connections
    assert _conf_value(spec, "superuser_reserved_connections") == "3"


@pytest.mark.parametrize("memory", ["256Mi", "512Mi", "1Gi", "4Gi", "64Gi"])
def test_the_store_memory_budget_holds_at_max_connections(memory: str) -> None:
    """shared_buffers, /dev/shm and every connection at rest fit in the memory, with room left
    for work_mem (the floor of 100 connections aside: PostgreSQL's own default)."""
    spec = _matrix(400, 8, memory)
    limit = quantity_bytes(memory)
    connections = int(_conf_value(spec, "max_connections"))
    shared_buffers = int(_conf_value(spec, "shared_buffers").removesuffix("MB")) * 1024**2
    store = next(o for o in every_object(spec) if o["kind"] == "StatefulSet")
    shm = next(v for v in store["spec"]["template"]["spec"]["volumes"] if v["name"] == "shm")
    shm_bytes = quantity_bytes(shm["emptyDir"]["sizeLimit"])
    used = shared_buffers + shm_bytes + max(connections - 100, 0) * builders.CONNECTION_BYTES
    assert used <= limit * 7 // 8


def test_postgresql_conf_is_read_by_a_real_postgres() -> None:
    """`postgres -C` parses the file as the server does at start (an error names the line)."""
    spec = EvalSuiteSpec.model_validate(SPECS["tuned"])
    # 8 kB pages: 1 GB, a quarter of the 4Gi limit
    assert _read_by_postgres(spec, "shared_buffers") == "131072"


def test_a_parameter_value_with_quotes_stays_one_value() -> None:
    """A quote is doubled, so a value cannot end its string and set something else (a line
    break, which would, is refused at admission: no setting needs one)."""
    value = "x' work_mem = '64MB"
    spec = EvalSuiteSpec.model_validate(
        {"store": {"managed": {"parameters": {"application_name": value}}}}
    )
    assert _read_by_postgres(spec, "application_name") == value
    assert _read_by_postgres(spec, "work_mem") == "8192"  # kB: the operator's 8MB, untouched


def _read_by_postgres(spec: EvalSuiteSpec, setting: str) -> str:
    """The setting's value as a real postgres reads the generated file at start."""
    root = Path(tempfile.mkdtemp(prefix="evals-conf-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    subprocess.run(
        [*as_postgres_user(), postgres_bin("initdb"), "-D", str(data), "--no-sync"],
        check=True,
        capture_output=True,
    )
    conf = root / "postgresql.conf"
    conf.write_text(builders.postgresql_conf(spec))
    done = subprocess.run(
        [
            *as_postgres_user(),
            postgres_bin("postgres"),
            "-D",
            str(data),
            "-c",
            f"config_file={conf}",
            "-C",
            setting,
        ],
        capture_output=True,
        text=True,
    )
    shutil.rmtree(root, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_generated_secrets_are_in_the_cloudnativepg_shape_and_never_elsewhere() -> None:
    suite = suite_object()
    spec = EvalSuiteSpec.model_validate({})
    password = builders.new_password()
    secret = builders.build_store_secret(suite, spec, password)
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == {"uri", "host", "port", "dbname", "username", "password"}
    assert data["password"] == password and len(password) >= 40
    assert data["host"] == "stack-store.team-a.svc"
    assert data["uri"] == f"postgresql://evals:{password}@stack-store.team-a.svc:5432/evals"
    # Kept with the data by default: no owner reference, so deleting the suite leaves it.
    assert "ownerReferences" not in secret["metadata"]
    # Nothing else the operator creates holds the password.
    for obj in every_object():
        if obj["kind"] != "Secret":
            assert "pw" not in json.dumps(obj).replace("pwfile", ""), obj["kind"]


def test_pods_read_the_store_and_cache_only_by_secret_key_reference() -> None:
    for case in SPECS:
        for obj in every_object(SPECS[case]):
            for pod in pod_specs(obj):
                for container in pod["containers"]:
                    for entry in container.get("env", []):
                        if entry["name"] in (
                            "EVAL_STORE_URI",
                            "EVAL_STORE_PASSWORD",
                            "EVAL_CACHE_URL",
                            "POSTGRES_PASSWORD",
                            "PGPASSWORD",
                            "REDISCLI_AUTH",
                        ):
                            assert "value" not in entry and "secretKeyRef" in entry["valueFrom"]


def test_an_external_store_is_wired_from_its_secret_and_ca() -> None:
    suite = suite_object(SPECS["external"])
    spec = EvalSuiteSpec.model_validate(SPECS["external"])
    assert builders.desired_objects(suite, spec, SETTINGS) == []  # nothing to run
    job = builders.build_migration_job(suite, spec, 2, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    # The Secret whole, whatever keys of the CloudNativePG shape it holds; not optional: a
    # missing one stops the pod (CreateContainerConfigError), never runs it storeless.
    assert pod["containers"][0]["envFrom"] == [
        {"prefix": "EVAL_STORE_SECRET_", "secretRef": {"name": "pg-app"}}
    ]
    assert "EVAL_STORE_URI" not in env and "EVAL_STORE_PASSWORD" not in env
    assert env["EVAL_STORE_SSLMODE"]["value"] == "verify-full"
    assert env["EVAL_STORE_SSLROOTCERT"]["value"] == "/etc/eval/store-ca/ca.crt"
    assert env["EVAL_CACHE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis", "key": "url"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["store-ca"]["configMap"]["name"] == "pg-ca"


def test_the_migration_job_is_named_by_what_it_depends_on() -> None:
    def name(spec: dict[str, Any], version: int = 2) -> str:
        parsed = EvalSuiteSpec.model_validate(spec)
        return builders.build_migration_job(suite_object(spec), parsed, version, SETTINGS)[
            "metadata"
        ]["name"]

    assert name({}) == name({})
    assert name({}) != name({}, version=3)  # a newer schema migrates again
    assert name({}) == name({"store": {"managed": {"size": "99Gi"}}})  # sizes do not matter
    assert name({}) != name(SPECS["external"])


def test_backups_are_a_cronjob_that_keeps_the_newest_dumps() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in every_object(SPECS["tuned"])}
    cron = objects["CronJob", "stack-store-backup"]["spec"]
    assert cron["schedule"] == "@daily" and cron["timeZone"] == "Europe/Paris"
    assert cron["concurrencyPolicy"] == "Forbid"
    container = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["RETENTION"]["value"] == "3"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    pvc = objects["PersistentVolumeClaim", "stack-store-backups"]
    assert "ownerReferences" in pvc["metadata"]  # retainOnDelete false: goes with the suite
    default = {(o["kind"], o["metadata"]["name"]): o for o in every_object()}
    assert (
        "ownerReferences" not in default["PersistentVolumeClaim", "stack-store-backups"]["metadata"]
    )


def test_the_cache_has_no_persistence_evicts_lru_and_keeps_its_password_off_argv() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in every_object(SPECS["tuned"])}
    conf = objects["ConfigMap", "stack-cache-config"]["data"]["redis.conf"]
    assert f"maxmemory {2**30}" in conf
    assert "maxmemory-policy allkeys-lru" in conf and 'save ""' in conf
    assert "appendonly no" in conf
    deployment = objects["Deployment", "stack-cache"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "requirepass" not in " ".join(container["args"] + container["command"])
    limit = quantity_bytes(container["resources"]["limits"]["memory"])
    assert limit > 2**30  # room above maxmemory
    secret = builders.build_cache_secret(suite_object(), "p@ss")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["url"] == "redis://:p%40ss@stack-cache.team-a.svc:6379/0"
    assert data["auth.conf"] == "requirepass p@ss\n"


def test_long_suite_names_give_short_unique_child_names() -> None:
    long_a, long_b = "a" * 60 + "x", "a" * 60 + "y"
    a = builders.child_name(long_a, "store-credentials")
    b = builders.child_name(long_b, "store-credentials")
    assert len(a) <= 52 and len(b) <= 52 and a != b
    assert builders.child_name("stack", "store") == "stack-store"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Gi", Decimal(2**30)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("500m", Decimal("0.5")),
        ("2e3", Decimal(2000)),
        ("1E3", Decimal(1000)),
        ("1E", Decimal(10**18)),
        ("+.5k", Decimal(500)),
        ("128974848", Decimal(128974848)),
        (1024, Decimal(1024)),
    ],
)
def test_quantities_parse_as_the_apiserver_reads_them(text: Any, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "ten", "1 Gi", "-1Gi", "1gi", "1Gb", "1e", "1e1.5", "1e999", "Gi", True, -3, ".", "1..2"],
)
def test_what_is_not_a_quantity_is_refused(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)
