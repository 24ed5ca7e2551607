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
