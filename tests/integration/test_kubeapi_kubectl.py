"""
The API emulator against the real kubectl and helm binaries, over HTTP.

Everything the project ships (crds/, the chart, manifests) reaches the emulator the way it
reaches a real cluster: kubectl reads YAML with Go's YAML 1.1 reader, decides from OpenAPI v3
that the server validates fields, sends ``fieldValidation=Strict``; helm v4 applies server-side.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.clis import Cluster
from tests.support.kubeapi import running_kubeapi
from tests.support.thirdparty import thirdparty_crds
from tests.support.tools import ROOT

pytestmark = pytest.mark.integration

CHART = ROOT / "charts" / "eval-operator"
CRD_FILE = ROOT / "crds" / "evaluations.evals.io.yaml"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_kubeapi() as server:
        yield Cluster(server, tmp_path)
        assert server.internal_errors == []


# --- 1. OpenAPI v3: kubectl decides it may validate on the server -------------------------------


def test_kubectl_apply_of_the_crds_sends_strict_field_validation(cluster: Cluster) -> None:
    out = cluster.kubectl("apply", "-f", str(ROOT / "crds")).stdout
    assert "customresourcedefinition.apiextensions.k8s.io/evaluations.evals.io created" in out
    writes = [
        r
        for r in cluster.server.find_requests(path_prefix="/apis/apiextensions.k8s.io/")
        if r.method in ("POST", "PATCH")
    ]
    assert writes and all(r.query.get("fieldValidation") == "Strict" for r in writes)
    # kubectl found what it looks for: no fallback to the (unserved) OpenAPI v2.
    assert not cluster.server.find_requests("GET", "/openapi/v2")


# --- 2./3./8. what a real cluster rejects, kubectl reports ---------------------------------------


def test_a_yaml_1_1_boolean_in_a_crd_is_rejected_as_the_apiserver_does(cluster: Cluster) -> None:
    lines = CRD_FILE.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.strip() == "required:")
    item = lines[at + 1]
    indent = item[: len(item) - len(item.lstrip())]
    broken = "".join([*lines[: at + 1], f"{indent}- n\n", *lines[at + 1 :]])  # unquoted n
    done = cluster.kubectl("apply", "-f", "-", input=broken, check=False)
    assert done.returncode != 0
    assert (
        'CustomResourceDefinition in version "v1" cannot be handled as a '
        "CustomResourceDefinition: json: cannot unmarshal bool into Go struct field "
        "JSONSchemaProps.spec.versions.schema.openAPIV3Schema" in done.stderr
    )
    assert "required of type string" in done.stderr


def test_an_unknown_field_in_a_deployment_fails_kubectl_apply(cluster: Cluster) -> None:
    manifest = deployment(containers=[{"name": "web", "image": "nginx:1.27", "imagePolicy": "x"}])
    done = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert done.returncode != 0
    assert (
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "spec.template.spec.containers[0].imagePolicy"'
    ) in done.stderr
    assert cluster.server.get("apps", "v1", "deployments", "default", "web") is None
    # --validate=false: the apiserver drops the field silently.
    cluster.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(manifest))
    stored = cluster.server.get("apps", "v1", "deployments", "default", "web")
    assert "imagePolicy" not in stored["spec"]["template"]["spec"]["containers"][0]


def test_upstream_crds_apply_server_side_and_client_side(cluster: Cluster) -> None:
    folder = thirdparty_crds()
    out = cluster.kubectl("apply", "--server-side", "-f", str(folder)).stdout
    assert out.count("serverside-applied") == len(list(folder.glob("*.yaml")))
    out = cluster.kubectl("apply", "-f", str(folder)).stdout
    assert out.count("configured") == len(list(folder.glob("*.yaml")))
    for path in folder.glob("*.yaml"):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=10s")


def test_a_crd_over_the_annotation_limit_fails_client_side_apply(cluster: Cluster) -> None:
    """kubectl's last-applied annotation cannot exceed 256 KiB, on a real cluster too."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "x" * 270_000
    text = json.dumps(crd)  # not PyYAML: it writes 'n' unquoted, which Go reads as false
    done = cluster.kubectl("apply", "-f", "-", input=text, check=False)
    assert done.returncode != 0
    assert "metadata.annotations: Too long: must have at most 262144 bytes" in done.stderr
    cluster.kubectl("apply", "--server-side", "-f", "-", input=text)


# --- 5. dry runs --------------------------------------------------------------------------------


def test_kubectl_server_dry_runs_store_nothing(cluster: Cluster) -> None:
    before = cluster.server.resource_version
    manifest = yaml.safe_dump(deployment())
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-", "-o", "json", input=manifest)
    would_be = json.loads(out.stdout)
    assert would_be["spec"]["replicas"] == 1  # defaulted, as it would be stored
    assert would_be["metadata"]["uid"]
    cluster.kubectl("create", "--dry-run=server", "-f", "-", input=manifest)
    cluster.kubectl("create", "secret", "generic", "s", "--from-literal=k=v", "--dry-run=server")
    assert cluster.server.resource_version == before
    assert cluster.server.get("apps", "v1", "deployments", "default", "web") is None
    assert cluster.server.get("", "v1", "secrets", "default", "s") is None


# --- 7. client-side apply: the patches kubectl computes, merged as a real cluster does ----------


def deployment(**overrides: Any) -> dict[str, Any]:
    container = {
        "name": "web",
        "image": "nginx:1.27",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "ports": [{"containerPort": 80}, {"containerPort": 443}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": overrides.get("containers", [container])},
            },
        },
    }


def test_client_side_apply_of_a_deployment_service_and_clusterrole(cluster: Cluster) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}],
        },
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "reader"},
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
        ],
    }
    objects = [deployment(), service, role]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    # Changed env value, env reordered, a port removed, a label added by someone else.
    cluster.kubectl("label", "deployment", "web", "team=ml")
    container = objects[0]["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "B", "value": "3"}, {"name": "A", "value": "1"}]
    container["ports"] = [{"containerPort": 80}]
    service["spec"]["ports"] = [{"name": "https", "port": 443}]
    role["rules"] = list(reversed(role["rules"]))[:1]
    out = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects)).stdout
    assert out.count("configured") == 3

    live = cluster.get("deployment", "web")
    stored = live["spec"]["template"]["spec"]["containers"][0]
    assert stored["env"] == [{"name": "B", "value": "3"}, {"name": "A", "value": "1"}]
    assert stored["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert live["metadata"]["labels"] == {"team": "ml"}  # not the applier's: kept
    svc = cluster.get("service", "web")
    assert svc["spec"]["ports"] == [
        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}
    ]
    assert cluster.get("clusterrole", "reader")["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}
    ]
    patches = [
        r
        for r in cluster.server.find_requests("PATCH")
        if r.content_type == "application/strategic-merge-patch+json"
    ]
    assert len(patches) == 3  # kubectl computed strategic merge patches, the server merged them

    out = cluster.kubectl("delete", "-f", "-", input=yaml.safe_dump_all(objects)).stdout
    assert out.count("deleted") == 3
    assert cluster.server.get("apps", "v1", "deployments", "default", "web") is None


def test_everyday_kubectl_commands(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    cluster.kubectl("wait", "--for=condition=Established", "crd/evaluations.evals.io")
    explained = cluster.kubectl("explain", "evaluations.spec").stdout
    assert "KIND:       Evaluation" in explained and "FIELD: spec <Object>" in explained
    done = cluster.kubectl("get", "evals")
    assert "No resources found" in done.stderr

    cluster.kubectl("create", "secret", "generic", "creds", "--from-literal=token=abc")
    cluster.kubectl("annotate", "secret", "creds", "example.com/owner=ml")
    cluster.kubectl("label", "secret", "creds", "tier=test")
    cluster.kubectl("patch", "secret", "creds", "--type", "merge", "-p", '{"data":{"b":"Yg=="}}')
    cluster.kubectl(
        "patch", "secret", "creds", "--type", "json", "-p", '[{"op":"remove","path":"/data/b"}]'
    )
    cluster.kubectl(
        "patch",
        "secret",
        "creds",
        "--type",
        "strategic",
        "-p",
        '{"metadata":{"finalizers":["example.com/keep"]}}',
    )
    secret = cluster.get("secret", "creds")
    assert secret["type"] == "Opaque"
    assert secret["data"] == {"token": "YWJj"}
    assert secret["metadata"]["annotations"] == {"example.com/owner": "ml"}
    assert secret["metadata"]["labels"] == {"tier": "test"}
    assert secret["metadata"]["finalizers"] == ["example.com/keep"]
    assert "managedFields" not in secret["metadata"]  # kubectl hides them by default
    stored = cluster.server.get("", "v1", "secrets", "default", "creds")
    managers = {m["manager"] for m in stored["metadata"]["managedFields"]}
    assert "kubectl-create" in managers and "kubectl-annotate" in managers


# --- 9. helm v4 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values", sorted(p.name for p in (CHART / "ci").glob("*-values.yaml")), ids=lambda v: v
)
def test_helm_install_upgrade_uninstall(cluster: Cluster, values: str) -> None:
    if values.startswith("monitoring"):
        cluster.kubectl("apply", "--server-side", "-f", str(thirdparty_crds()))
    values_file = str(CHART / "ci" / values)
    # The namespaces the values file puts objects in must exist, as on a real cluster (the
    # apiserver refuses content in a namespace that does not).
    rendered = cluster.helm("template", "x", str(CHART), "-n", "evals", "-f", values_file).stdout
    for doc in yaml.safe_load_all(rendered):
        other = ((doc or {}).get("metadata") or {}).get("namespace")
        if other and other != "evals":
            cluster.kubectl("create", "namespace", other, check=False)
    namespace = ["--namespace", "evals", "--create-namespace"]
    cluster.helm("install", "eval-operator", str(CHART), *namespace, "-f", values_file)
    assert cluster.get("crd", "evaluations.evals.io")["status"]["conditions"]
    deploy = cluster.server.get("apps", "v1", "deployments", "evals", "eval-operator")
    assert deploy is not None
    assert {m["manager"] for m in deploy["metadata"]["managedFields"]} == {"helm"}
    applies = [r for r in cluster.server.find_requests("PATCH") if "fieldManager" in r.query]
    assert applies and all(
        r.content_type == "application/apply-patch+yaml"
        and r.query.get("fieldValidation") == "Strict"
        for r in applies
    )
    cluster.helm("upgrade", "--install", "eval-operator", str(CHART), *namespace, "-f", values_file)
    releases = cluster.server.list("", "v1", "secrets", "evals", label_selector="owner=helm")
    assert sorted(r["metadata"]["labels"]["version"] for r in releases) == ["1", "2"]
    cluster.helm("uninstall", "eval-operator", "--namespace", "evals")
    assert cluster.server.get("apps", "v1", "deployments", "evals", "eval-operator") is None
    assert cluster.server.list("", "v1", "secrets", "evals", label_selector="owner=helm") == []


def test_helm_template_piped_to_a_server_dry_run(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    cluster.kubectl("create", "namespace", "evals")
    rendered = cluster.helm("template", "eval-operator", str(CHART), "--namespace", "evals").stdout
    before = cluster.server.resource_version
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered).stdout
    assert "deployment.apps/eval-operator created (server dry run)" in out
    assert cluster.server.resource_version == before


def broken_chart(tmp_path: Path, old: str, new: str) -> Path:
    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    template = copy / "templates" / "deployment.yaml"
    text = template.read_text()
    assert old in text
    template.write_text(text.replace(old, new, 1))
    return copy


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "  revisionHistoryLimit: 3\n",
            "  revisionHistoryLimit: 3\n  revisionHistory: 3\n",
            ".spec.revisionHistory: field not declared in schema",
        ),
        (  # YAML 1.1: an unquoted `on` key is the boolean true, which Go turns into "true"
            "  revisionHistoryLimit: 3\n",
            "  revisionHistoryLimit: 3\n  on: rollout\n",
            ".spec.true: field not declared in schema",
        ),
        (
            "  revisionHistoryLimit: 3\n",
            '  revisionHistoryLimit: "three"\n',
            ".spec.revisionHistoryLimit: expected numeric (int or float), got string",
        ),
    ],
    ids=["unknown-field", "yaml-on-key", "wrong-type"],
)
def test_a_broken_chart_fails_helm_install_as_on_a_real_cluster(
    cluster: Cluster, tmp_path: Path, old: str, new: str, message: str
) -> None:
    chart = broken_chart(tmp_path, old, new)
    done = cluster.helm("install", "broken", str(chart), "-n", "default", check=False)
    assert done.returncode != 0
    where = "(default/broken-eval-operator; apps/v1, Kind=Deployment)"
    assert f"failed to create typed patch object {where}" in done.stderr
    assert message in done.stderr
