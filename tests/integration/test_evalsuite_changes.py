"""A suite changed while it lives, against an emulator that refuses what a real apiserver
refuses (a StatefulSet's volumeClaimTemplates, a claim that shrinks or grows in a class that
cannot expand it): a bigger store grows its volume online and keeps its data and its running
database; where the StorageClass cannot grow it, StoreReady says so and the store runs on.
Real operator, real PostgreSQL (tests/support/stack_controller.py plays the StatefulSet
controller, the provisioner, the binder and the resizer)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.clis import Cluster as Kubectl
from tests.support.factories import storage_class
from tests.support.model_server import Faults, ModelServer
from tests.support.operator_cluster import NS, Cluster, events_when, manifest, running_cluster
from tests.support.suites import reason, store_rows, suite_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

GROUP, VERSION = "evals.io", "v1alpha1"
RECORDS = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(20)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    model = ModelServer(wrong=[], faults=Faults(latency=0.02))
    with running_cluster(tmp_path_factory.mktemp("changes"), stack=True, model=model) as cluster:
        cluster.api.create(storage_class("standard", expandable=True, default=True))
        cluster.api.create(storage_class("fixed", expandable=False))
        yield cluster


def current(suite: dict[str, Any]) -> bool:
    status = suite.get("status") or {}
    return status.get("observedGeneration") == suite["metadata"]["generation"]


def condition(suite: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in suite["status"]["conditions"] if c["type"] == type_)


def run_in(cluster: Cluster, name: str, suite: str) -> None:
    cluster.apply(
        manifest(
            name,
            cluster.model,
            suiteRef={"name": suite},
            dataset={"inline": RECORDS, "inputField": "question", "targetField": "answer"},
            execution={"shards": 1},
        )
    )
    cluster.wait_phase(name, "Succeeded", timeout=120)


def claim(cluster: Cluster, name: str) -> dict[str, Any]:
    found = cluster.api.get("", "v1", "persistentvolumeclaims", NS, name)
    assert found is not None, name
    return found


def suite_events(cluster: Cluster, suite: str) -> list[dict[str, Any]]:
    return [
        e
        for e in cluster.api.list("", "v1", "events", NS)
        if e["involvedObject"].get("kind") == "EvalSuite" and e["involvedObject"]["name"] == suite
    ]


def test_a_bigger_store_grows_its_volume_online_and_keeps_its_data(cluster: Cluster) -> None:
    spec = {"cache": {"mode": "Disabled"}, "store": {"managed": {"size": "1Gi"}}}
    cluster.apply(suite_manifest("grow", spec))
    cluster.wait_suite("grow", lambda s: current(s) and reason(s, "Ready") == "Ready", 120)
    run_in(cluster, "before-growth", "grow")
    assert cluster.stack is not None
    database = cluster.stack.postgres(NS, "grow-store")
    process = database.process
    old_set = cluster.api.get("apps", "v1", "statefulsets", NS, "grow-store")
    assert old_set is not None

    cluster.api.patch(
        GROUP, VERSION, "evalsuites", NS, "grow", {"spec": {"store": {"managed": {"size": "2Gi"}}}}
    )

    def grown(suite: dict[str, Any]) -> bool:
        sts = cluster.api.get("apps", "v1", "statefulsets", NS, "grow-store")
        capacity = (claim(cluster, "data-grow-store-0").get("status") or {}).get("capacity")
        return (
            current(suite)
            and reason(suite, "StoreReady") == "Ready"
            and "growing" not in condition(suite, "StoreReady")["message"]
            and sts is not None
            and sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
            == {"storage": "2Gi"}
            and capacity == {"storage": "2Gi"}
        )

    suite = cluster.wait_suite("grow", grown, timeout=120)
    # The set was made again around its pod: the same database process, the same data.
    new_set = cluster.api.get("apps", "v1", "statefulsets", NS, "grow-store")
    assert new_set is not None and new_set["metadata"]["uid"] != old_set["metadata"]["uid"]
    assert cluster.stack.postgres(NS, "grow-store").process is process
    assert process is not None and process.poll() is None
    rows = store_rows(cluster, "grow", "SELECT count(*) AS n FROM samples")
    assert rows[0]["n"] == len(RECORDS)

    def both(events: list[dict[str, Any]]) -> bool:
        about = {e["reason"] for e in events if e["involvedObject"].get("name") == "grow"}
        return {"VolumeExpanding", "StoreSetReplaced"} <= about

    events_when(cluster.api, both)
    reasons = {e["reason"] for e in suite_events(cluster, "grow")}
    assert not reasons & {"InvalidSpec", "ObjectRejected", "PermissionDenied"}
    assert reason(suite, "CacheReady") == "Disabled"
    run_in(cluster, "after-growth", "grow")


def test_a_store_whose_class_cannot_grow_says_so_and_runs_on(cluster: Cluster) -> None:
    spec = {
        "cache": {"mode": "Disabled"},
        "store": {"managed": {"size": "1Gi", "storageClassName": "fixed"}},
    }
    cluster.apply(suite_manifest("fixed", spec))
    cluster.wait_suite("fixed", lambda s: current(s) and reason(s, "Ready") == "Ready", 120)
    cluster.api.patch(
        GROUP, VERSION, "evalsuites", NS, "fixed", {"spec": {"store": {"managed": {"size": "3Gi"}}}}
    )
    suite = cluster.wait_suite(
        "fixed",
        lambda s: (
            current(s)
            and reason(s, "StoreReady") == "Ready"
            and "stays 1Gi" in condition(s, "StoreReady")["message"]
        ),
        timeout=120,
    )
    store = condition(suite, "StoreReady")
    assert store["status"] == "True", store  # the store works, at its old size
    assert (
        "the data volume data-fixed-store-0 stays 1Gi (store.managed.size asks 3Gi): "
        'persistentvolumeclaims "data-fixed-store-0" is forbidden: only dynamically '
        "provisioned pvc can be resized and the storageclass that provisions the pvc must "
        "support resize"
    ) in store["message"]
    assert reason(suite, "Ready") == "Ready"

    def warned(events: list[dict[str, Any]]) -> bool:
        return any(
            e["reason"] == "VolumeNotExpandable" and e["involvedObject"].get("name") == "fixed"
            for e in events
        )

    events_when(cluster.api, warned)
    warnings = [e for e in suite_events(cluster, "fixed") if e["reason"] == "VolumeNotExpandable"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    assert claim(cluster, "data-fixed-store-0")["status"]["capacity"] == {"storage": "1Gi"}
    run_in(cluster, "on-a-fixed-volume", "fixed")


# --- every field of a live suite, one change at a time, with a run in flight ------------------

SLOW_RECORDS = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(120)]
WEDGED = {"InvalidSpec", "ObjectRejected", "PermissionDenied"}


def merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """`change` laid over `base` as a JSON merge patch would (None removes a field)."""
    out = dict(base)
    for key, value in change.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def get(cluster: Cluster, group: str, version: str, plural: str, name: str) -> Any:
    return cluster.api.get(group, version, plural, NS, name)


def sts_template(c: Cluster) -> dict[str, Any]:
    return get(c, "apps", "v1", "statefulsets", "live-store")["spec"]["template"]["spec"]


def store_conf(c: Cluster) -> str:
    return get(c, "", "v1", "configmaps", "live-store-config")["data"]["postgresql.conf"]


def cronjob(c: Cluster) -> dict[str, Any] | None:
    return get(c, "batch", "v1", "cronjobs", "live-store-backup")


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


MODEL = {"name": "stand-in", "apiKeySecretRef": {"name": "model-key", "key": "api-key"}}
TASK = {
    "name": "sums",
    "dataset": {"inline": RECORDS, "inputField": "question", "targetField": "answer"},
    "task": {"promptTemplate": "{{ input }}", "scorers": [{"type": "exact_match"}]},
}


def changes(model_url: str) -> list[tuple[str, dict[str, Any], Any]]:
    """(what, the change, a check of its effect on the cluster — or the text of the refusal
    at `kubectl apply`), applied one after the other, each on top of the ones before."""
    model = {**MODEL, "baseURL": model_url}
    return [
        ("store.managed.size grows", {"store": {"managed": {"size": "2Gi"}}},
         lambda c: get(c, "", "v1", "persistentvolumeclaims", "data-live-store-0")["status"][
             "capacity"] == {"storage": "2Gi"}),
        ("store.managed.size shrinks", {"store": {"managed": {"size": "1Gi"}}},
         "the data volume may grow but never shrink"),
        ("store.managed.storageClassName", {"store": {"managed": {"storageClassName": "fast"}}},
         "the data volume's storageClassName cannot change once it exists"),
        ("store.managed.parameters", {"store": {"managed": {"parameters": {"work_mem": "8MB"}}}},
         lambda c: "work_mem = '8MB'" in store_conf(c)),
        ("store.managed.resources",
         {"store": {"managed": {"resources": {"limits": {"memory": "2Gi"}}}}},
         lambda c: sts_template(c)["containers"][0]["resources"]["limits"]["memory"] == "2Gi"),
        ("store.managed.image", {"store": {"managed": {"image": "postgres:17.7-bookworm"}}},
         lambda c: sts_template(c)["containers"][0]["image"] == "postgres:17.7-bookworm"),
        ("store.managed.retainOnDelete", {"store": {"managed": {"retainOnDelete": False}}},
         lambda c: get(c, "apps", "v1", "statefulsets", "live-store")["spec"][
             "persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"),
        ("store.managed.backup.schedule",
         {"store": {"managed": {"backup": {"schedule": "30 4 * * *"}}}},
         lambda c: cronjob(c)["spec"]["schedule"] == "30 4 * * *"),
        ("store.managed.backup.timeZone",
         {"store": {"managed": {"backup": {"timeZone": "Europe/Paris"}}}},
         lambda c: cronjob(c)["spec"]["timeZone"] == "Europe/Paris"),
        ("store.managed.backup.retention", {"store": {"managed": {"backup": {"retention": 3}}}},
         lambda c: env_of(cronjob(c)["spec"]["jobTemplate"]["spec"]["template"]["spec"][
             "containers"][0])["RETENTION"] == "3"),
        ("store.managed.backup.size", {"store": {"managed": {"backup": {"size": "20Gi"}}}},
         lambda c: get(c, "", "v1", "persistentvolumeclaims", "live-store-backups")["status"][
             "capacity"] == {"storage": "20Gi"}),
        ("store.managed.backup.size shrinks",
         {"store": {"managed": {"backup": {"size": "5Gi"}}}},
         "the backup volume may grow but never shrink"),
        ("store.managed.backup.enabled", {"store": {"managed": {"backup": {"enabled": False}}}},
         lambda c: cronjob(c)["spec"]["suspend"] is True),
        ("cache.ttlSeconds", {"cache": {"ttlSeconds": 3600}}, None),
        ("cache.managed.maxMemory", {"cache": {"managed": {"maxMemory": "128Mi"}}},
         lambda c: "maxmemory 134217728" in get(c, "", "v1", "configmaps", "live-cache-config")[
             "data"]["redis.conf"]),
        ("cache.mode Disabled", {"cache": {"mode": "Disabled", "managed": None}},
         lambda c: get(c, "apps", "v1", "deployments", "live-cache") is None),
        ("cache.mode Managed", {"cache": {"mode": "Managed"}},
         lambda c: get(c, "apps", "v1", "deployments", "live-cache") is not None),
        ("dashboard replicas", {"dashboard": {"minReplicas": 2, "maxReplicas": 4}},
         lambda c: get(c, "autoscaling", "v2", "horizontalpodautoscalers", "live-dashboard")[
             "spec"]["maxReplicas"] == 4
         and get(c, "policy", "v1", "poddisruptionbudgets", "live-dashboard") is not None),
        ("dashboard targets", {"dashboard": {"targetCPUUtilizationPercentage": 50}},
         lambda c: 50 in [m["resource"]["target"].get("averageUtilization") for m in get(
             c, "autoscaling", "v2", "horizontalpodautoscalers", "live-dashboard")["spec"][
             "metrics"]]),
        ("dashboard.rateLimit", {"dashboard": {"rateLimit": {"requestsPerSecond": 5}}}, None),
        ("dashboard.trustedProxies", {"dashboard": {"trustedProxies": ["10.0.0.0/8"]}},
         lambda c: "10.0.0.0/8" in json.dumps(get(c, "apps", "v1", "deployments",
                                                  "live-dashboard")["spec"]["template"])),
        ("dashboard.enabled false", {"dashboard": {"enabled": False}},
         lambda c: get(c, "apps", "v1", "deployments", "live-dashboard") is None),
        ("networkPolicy.modelEgressPorts", {"networkPolicy": {"modelEgressPorts": [8443]}},
         lambda c: '"port": 8443' in json.dumps(get(c, "networking.k8s.io", "v1",
                                                    "networkpolicies", "live-runners"))),
        ("networkPolicy.enabled false", {"networkPolicy": {"enabled": False}},
         lambda c: not [
             p for p in c.api.list("networking.k8s.io", "v1", "networkpolicies", NS)
             if p["metadata"]["labels"].get("evals.io/suite") == "live"]),
        ("monitoring.enabled", {"monitoring": {"enabled": True, "interval": "15s"}},
         lambda c: reason(c.suite("live"), "MonitoringReady") == "PrometheusOperatorNotInstalled"
         and get(c, "", "v1", "configmaps", "live-grafana-dashboard") is not None),
        ("tls.enabled", {"tls": {"enabled": True, "duration": "1440h"}},
         lambda c: reason(c.suite("live"), "TLSReady") == "CertManagerNotInstalled"),
        ("tls.renewBefore past duration", {"tls": {"renewBefore": "2000h"}},
         "renewBefore must be shorter than duration"),
        ("models and tasks", {"models": [{"name": "small", "model": model}], "tasks": [TASK]},
         lambda c: get(c, GROUP, VERSION, "evaluations", "live-small-sums") is not None),
        ("a second model", {"models": [{"name": "small", "model": model},
                                       {"name": "large", "model": model}]},
         lambda c: get(c, GROUP, VERSION, "evaluations", "live-large-sums") is not None),
        ("baseline and regression", {"baseline": "previous", "regression": {"maxDrop": "0.1"}},
         None),
        ("schedule", {"schedule": {"cron": "0 2 * * *", "timeZone": "Europe/Paris"}},
         lambda c: bool(c.suite("live")["status"].get("nextScheduleTime"))),
        ("maxParallelCells", {"maxParallelCells": 1}, None),
        ("defaults", {"defaults": {"execution": {"shards": 2}}}, None),
        ("a model leaves", {"models": [{"name": "small", "model": model}]},
         lambda c: get(c, GROUP, VERSION, "evaluations", "live-large-sums") is None),
        ("the matrix goes",
         {"models": None, "tasks": None, "baseline": None, "regression": None,
          "schedule": None, "maxParallelCells": None, "defaults": None},
         lambda c: get(c, GROUP, VERSION, "evaluations", "live-small-sums") is None),
    ]  # fmt: skip


def test_every_field_of_a_live_suite_takes_effect_or_is_refused_at_apply(
    cluster: Cluster, tmp_path: Any
) -> None:
    kubectl = Kubectl(cluster.api, tmp_path)
    manifest_of = suite_manifest("live", {"store": {"managed": {"size": "1Gi"}}})
    cluster.apply(manifest_of)
    cluster.wait_suite("live", lambda s: current(s) and reason(s, "Ready") == "Ready", 120)
    # A run in flight through every change: slow answers, one at a time.
    cluster.model.faults.latency = 0.25
    try:
        in_flight = manifest(
            "in-flight",
            cluster.model,
            suiteRef={"name": "live"},
            dataset={"inline": SLOW_RECORDS, "inputField": "question", "targetField": "answer"},
            execution={"shards": 1},
        )
        in_flight["spec"]["model"]["maxConcurrency"] = 1
        cluster.apply(in_flight)
        cluster.wait("in-flight", lambda ev: (ev.get("status") or {}).get("phase") == "Running")
        for what, change, expected in changes(cluster.model.base_url):
            wanted = merged(manifest_of, {"spec": change})
            if any(value is None for value in change.values()):
                # A whole section removed: with a merge patch's nulls. A server-side apply
                # that stops applying a section leaves the fields the apiserver defaulted in
                # it (nobody owns them), as on a real cluster (README: what can change).
                done = kubectl.kubectl(
                    "patch", "evalsuite", "live", "--type=merge",
                    "-p", json.dumps({"spec": change}), check=False,
                )  # fmt: skip
            else:
                done = kubectl.kubectl(
                    "apply", "--server-side", "--force-conflicts", "--field-manager=gitops",
                    "-f", "-", input=json.dumps(wanted), check=False,
                )  # fmt: skip
            if isinstance(expected, str):
                assert done.returncode != 0, f"{what}: admitted"
                assert expected in done.stderr, f"{what}: {done.stderr}"
                continue
            assert done.returncode == 0, f"{what}: {done.stderr}"
            manifest_of = wanted

            def settled(suite: dict[str, Any], expected: Any = expected) -> bool:
                reasons = {c["reason"] for c in suite["status"].get("conditions") or []}
                return (
                    current(suite)
                    and not reasons & WEDGED
                    and reason(suite, "Ready") == "Ready"
                    and (expected is None or expected(cluster))
                )

            try:
                cluster.wait_suite("live", settled, timeout=120)
            except AssertionError as err:
                raise AssertionError(f"{what}: not settled: {err}") from None
        assert cluster.evaluation("in-flight")["status"]["phase"] in ("Running", "Succeeded")
    finally:
        cluster.model.faults.latency = 0.02
    cluster.wait_phase("in-flight", "Succeeded", timeout=240)
