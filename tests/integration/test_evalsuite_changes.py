"""A suite changed while it lives, against an emulator that refuses what a real apiserver
refuses (a StatefulSet's volumeClaimTemplates, a claim that shrinks or grows in a class that
cannot expand it): a bigger store grows its volume online and keeps its data and its running
database; where the StorageClass cannot grow it, StoreReady says so and the store runs on.
Real operator, real PostgreSQL (tests/support/stack_controller.py plays the StatefulSet
controller, the provisioner, the binder and the resizer)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.model_server import Faults, ModelServer
from tests.support.operator_cluster import NS, Cluster, manifest, running_cluster
from tests.support.suites import reason, store_rows, suite_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

GROUP, VERSION = "evals.io", "v1alpha1"
RECORDS = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(20)]


def storage_class(name: str, *, expandable: bool, default: bool = False) -> dict[str, Any]:
    sc: dict[str, Any] = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "rancher.io/local-path",
        "allowVolumeExpansion": expandable,
    }
    if default:
        sc["metadata"]["annotations"] = {"storageclass.kubernetes.io/is-default-class": "true"}
    return sc


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
    reasons = {e["reason"] for e in suite_events(cluster, "grow")}
    assert {"VolumeExpanding", "StoreSetReplaced"} <= reasons
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
    warnings = [e for e in suite_events(cluster, "fixed") if e["reason"] == "VolumeNotExpandable"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    assert claim(cluster, "data-fixed-store-0")["status"]["capacity"] == {"storage": "1Gi"}
    run_in(cluster, "on-a-fixed-volume", "fixed")
