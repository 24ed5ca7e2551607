"""
What a real apiserver refuses that an operator runs into, in the emulator, through the real
kubectl: authorization of server-side apply (a missing object needs `create` as well as
`patch`), and the fields that may not change once set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.clis import Cluster
from tests.support.factories import storage_class
from tests.support.kubeapi import running_kubeapi
from tests.support.kubeapi.authz import RBACAuthorizer, Subject

pytestmark = pytest.mark.integration

USER = "system:serviceaccount:eval-system:eval-operator"
TOKEN = "a-token-nobody-sends"


def service(name: str = "store") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name}, "ports": [{"port": 5432, "protocol": "TCP"}]},
    }


@pytest.fixture
def restricted(tmp_path: Path) -> Iterator[tuple[Cluster, Subject]]:
    """kubectl as a service account whose rules the test sets (kubectl --as: it sends no
    bearer token over the emulator's plain HTTP)."""
    subject = Subject(USER, [])
    with running_kubeapi(authorizer=RBACAuthorizer({TOKEN: subject})) as server:
        yield Cluster(server, tmp_path), subject
        assert server.internal_errors == []


def test_server_side_apply_of_a_missing_object_is_a_create_too(
    restricted: tuple[Cluster, Subject],
) -> None:
    cluster, subject = restricted
    subject.rules = [{"apiGroups": [""], "resources": ["services"], "verbs": ["get", "patch"]}]
    manifest = json.dumps(service())
    apply = ("apply", f"--as={USER}", "--server-side", "--field-manager=eval-operator", "-f", "-")
    done = cluster.kubectl(*apply, input=manifest, check=False)
    assert done.returncode != 0
    assert (
        'services "store" is forbidden: User "system:serviceaccount:eval-system:eval-operator" '
        'cannot create resource "services" in API group "" in the namespace "default"'
    ) in done.stderr
    assert cluster.server.get("", "v1", "services", "default", "store") is None

    subject.rules[0]["verbs"].append("create")
    assert "serverside-applied" in cluster.kubectl(*apply, input=manifest).stdout
    # Once it exists, an apply is a patch alone.
    subject.rules[0]["verbs"].remove("create")
    changed = service()
    changed["metadata"]["labels"] = {"tier": "data"}
    assert "serverside-applied" in cluster.kubectl(*apply, input=json.dumps(changed)).stdout

    attempts = [
        (d.attributes.verb, d.allowed)
        for d in cluster.server.authorizer.decisions  # type: ignore[union-attr]
        if d.attributes.resource == "services" and d.attributes.verb in ("patch", "create")
    ]
    assert attempts == [
        ("patch", True),
        ("create", False),
        ("patch", True),
        ("create", True),
        ("patch", True),
    ]


def test_a_plain_patch_or_delete_without_the_verb_is_forbidden(
    restricted: tuple[Cluster, Subject],
) -> None:
    cluster, subject = restricted
    cluster.server.create(service())
    subject.rules = [{"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list"]}]
    done = cluster.kubectl("delete", f"--as={USER}", "service", "store", check=False)
    assert 'cannot delete resource "services" in API group ""' in done.stderr
    # resourceNames narrow a rule to the objects named.
    subject.rules.append(
        {
            "apiGroups": [""],
            "resources": ["services"],
            "resourceNames": ["other"],
            "verbs": ["delete"],
        }
    )
    assert (
        cluster.kubectl("delete", f"--as={USER}", "service", "store", check=False).returncode != 0
    )
    subject.rules[-1]["resourceNames"] = ["store"]
    cluster.kubectl("delete", f"--as={USER}", "service", "store")
    assert cluster.server.get("", "v1", "services", "default", "store") is None


# --- fields that may not change once set ---------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_kubeapi() as server:
        yield Cluster(server, tmp_path)
        assert server.internal_errors == []


def statefulset(size: str = "1Gi", **spec: Any) -> dict[str, Any]:
    labels = {"app": "db"}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {
            "serviceName": "db",
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "db", "image": "postgres:17"}]},
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": size}},
                    },
                }
            ],
            **spec,
        },
    }


def apply(cluster: Cluster, obj: dict[str, Any]) -> Any:
    return cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(obj), check=False
    )


def test_a_statefulset_keeps_its_claim_templates_service_and_selector(cluster: Cluster) -> None:
    assert apply(cluster, statefulset()).returncode == 0
    refusal = (
        '"db" is invalid: spec: Forbidden: updates to statefulset spec for '
        "fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', "
        "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
    )
    for changed in (
        statefulset("2Gi"),
        statefulset(serviceName="other"),
        statefulset(podManagementPolicy="Parallel"),
    ):
        done = apply(cluster, changed)
        assert done.returncode != 0 and refusal in done.stderr, done.stderr
    # What may change, changes.
    scaled = statefulset(replicas=2, minReadySeconds=5)
    scaled["spec"]["template"]["spec"]["containers"][0]["image"] = "postgres:17.1"
    assert apply(cluster, scaled).returncode == 0
    live = cluster.server.get("apps", "v1", "statefulsets", "default", "db")
    assert live is not None and live["spec"]["replicas"] == 2


def test_a_service_keeps_its_cluster_ip(cluster: Cluster) -> None:
    headless = service()
    headless["spec"]["clusterIP"] = "None"
    assert apply(cluster, headless).returncode == 0
    done = apply(cluster, service())  # asks for an address now
    assert done.returncode == 0  # no clusterIP given: the headless one is kept
    served = service()
    served["spec"]["clusterIP"] = "127.96.0.9"
    done = apply(cluster, served)
    assert 'spec.clusterIPs[0]: Invalid value: ["127.96.0.9"]: may not change once set' in (
        done.stderr
    )


def claim(size: str, storage_class: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "default"},
        "spec": spec,
    }


def bind(cluster: Cluster, capacity: str) -> None:
    """What the volume binder and the provisioner do: a volume, then Bound with its size."""
    pvc = cluster.server.get("", "v1", "persistentvolumeclaims", "default", "data")
    assert pvc is not None
    pvc["spec"]["volumeName"] = "pv-data"
    cluster.server.replace(pvc)
    cluster.server.patch_status(
        "", "v1", "persistentvolumeclaims", "default", "data",
        {"phase": "Bound", "capacity": {"storage": capacity}},
    )  # fmt: skip


def test_a_claim_grows_only_bound_and_where_its_class_allows_and_never_shrinks(
    cluster: Cluster,
) -> None:
    cluster.server.create(storage_class("standard", expandable=False, default=True))
    cluster.server.create(storage_class("expandable", expandable=True))
    assert apply(cluster, claim("1Gi")).returncode == 0
    live = cluster.server.get("", "v1", "persistentvolumeclaims", "default", "data")
    assert live is not None and live["spec"]["storageClassName"] == "standard"  # the default
    immutable = (
        "spec: Forbidden: spec is immutable after creation except resources.requests and "
        "volumeAttributesClassName for bound claims"
    )
    # Not bound yet: its request stays.
    assert immutable in apply(cluster, claim("2Gi")).stderr
    bind(cluster, "1Gi")
    # Bound, in a class that does not expand: the resize admission plugin says no (403).
    done = apply(cluster, claim("2Gi"))
    assert (
        'persistentvolumeclaims "data" is forbidden: only dynamically provisioned pvc can be '
        "resized and the storageclass that provisions the pvc must support resize"
    ) in done.stderr
    assert immutable in apply(cluster, claim("1Gi", "expandable")).stderr  # class is fixed
    assert apply(cluster, claim("1024Mi")).returncode == 0  # the same size in other words

    cluster.server.delete("", "v1", "persistentvolumeclaims", "default", "data")
    assert apply(cluster, claim("1Gi", "expandable")).returncode == 0
    bind(cluster, "1Gi")
    assert apply(cluster, claim("2Gi", "expandable")).returncode == 0
    cluster.server.patch_status(
        "", "v1", "persistentvolumeclaims", "default", "data",
        {"capacity": {"storage": "2Gi"}},
    )  # fmt: skip
    done = apply(cluster, claim("1Gi", "expandable"))
    assert (
        "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
    ) in done.stderr


def test_an_apply_that_stops_applying_a_maps_last_field_removes_the_map(
    cluster: Cluster,
) -> None:
    """SMD's removal leaves no empty map behind (its walker returns nothing for a map left
    without members): a suite's `cache.managed` goes when GitOps stops applying it."""
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "default", "labels": {"tier": "a"}},
        "data": {"mode": "fast"},
    }
    assert apply(cluster, config).returncode == 0
    del config["data"]
    del config["metadata"]["labels"]
    assert apply(cluster, config).returncode == 0
    live = cluster.server.get("", "v1", "configmaps", "default", "settings")
    assert live is not None and "data" not in live and "labels" not in live["metadata"]
