"""What the kind e2e run and `make demo` use, checked where no Docker is: the kind config, the
in-cluster model server, the examples as applied there, and the one-line skip."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from e2e import cluster

from eval_api.v1alpha1 import Evaluation
from tests.support.kubeapi.schema import apply_defaults, prune
from tests.support.kubeapi.schema import validate as validate_against_crd

ROOT = Path(__file__).resolve().parents[2]


def test_kind_config_pins_a_supported_node_image() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yml").read_text())
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    (node,) = config["nodes"]
    match = re.fullmatch(r"kindest/node:v1\.(\d+)\.\d+@sha256:[0-9a-f]{64}", node["image"])
    assert match, node["image"]
    chart = yaml.safe_load((ROOT / "charts" / "eval-operator" / "Chart.yaml").read_text())
    minimum = int(re.search(r">=1\.(\d+)", chart["kubeVersion"])[1])
    assert int(match[1]) >= minimum, "the e2e cluster must be a version the chart supports"


def test_model_server_manifest_is_valid_and_restricted() -> None:
    documents = cluster.model_server("evals-e2e")
    assert [d["kind"] for d in documents] == ["Deployment", "Service"]
    for doc in documents:
        assert doc["metadata"]["namespace"] == "evals-e2e"
        kubernetes_validate.validate(doc, "1.32", strict=True)
    pod = documents[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == cluster.RUNNER_IMAGE
    assert container["command"][:3] == ["python", "-m", "eval_runner.demo_server"]
    command = container["command"]
    assert command[command.index("--port") + 1] == str(cluster.MODEL_PORT)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert documents[1]["spec"]["ports"][0]["port"] == cluster.MODEL_PORT
    # Loading the manifest twice gives independent copies.
    assert cluster.model_server("a")[0]["metadata"]["namespace"] == "a"


@pytest.mark.parametrize("name", ["quickstart.yaml", "sharded-openai.yaml"])
def test_examples_as_applied_in_kind_are_admitted(name: str) -> None:
    crd = yaml.safe_load((ROOT / "crds" / "evaluations.evals.io.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    url = cluster.model_base_url("evals-e2e")
    assert url == "http://model-server.evals-e2e.svc:8000/v1"
    (ev,) = [d for d in cluster.example(name, "evals-e2e", url) if d["kind"] == "Evaluation"]
    assert ev["metadata"]["namespace"] == "evals-e2e"
    assert ev["spec"]["model"]["baseURL"] == url
    admitted = apply_defaults(prune(ev, schema, root=True), schema, root=True)
    assert validate_against_crd(admitted, schema, root=True) == []
    Evaluation.model_validate(ev)


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_preflight_names_the_missing_piece_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster, "TOOLS_BIN", tmp_path / "none")
    monkeypatch.setenv("PATH", str(tmp_path))
    for name in ("KIND", "HELM", "KUBECTL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER", str(tmp_path / "absent"))
    assert cluster.preflight() == "e2e skipped: no Docker (docker not found on PATH)"
    monkeypatch.setenv("DOCKER", _script(tmp_path / "docker-down", "exit 1"))
    assert cluster.preflight() == "e2e skipped: no Docker engine (docker info failed)"
    monkeypatch.setenv("DOCKER", _script(tmp_path / "docker-up", "exit 0"))
    assert cluster.preflight() == "e2e skipped: kind not found (install kind v0.27+)"
    monkeypatch.setenv("KIND", _script(tmp_path / "kind", "exit 0"))
    assert cluster.preflight() == "e2e skipped: helm not found (run make tools)"
    monkeypatch.setenv("HELM", _script(tmp_path / "helm", "exit 0"))
    monkeypatch.setenv("KUBECTL", _script(tmp_path / "kubectl", "exit 0"))
    assert cluster.preflight() is None


def test_preflight_of_an_existing_cluster_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_EXISTING_CLUSTER", "1")
    monkeypatch.setattr(cluster, "TOOLS_BIN", tmp_path / "none")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HELM", _script(tmp_path / "helm", "exit 0"))
    monkeypatch.setenv(
        "KUBECTL", _script(tmp_path / "kubectl", "echo 'connection refused' >&2; exit 1")
    )
    for name in ("E2E_OPERATOR_IMAGE", "E2E_RUNNER_IMAGE"):
        monkeypatch.delenv(name, raising=False)
    assert cluster.preflight() == (
        "e2e skipped: E2E_EXISTING_CLUSTER=1 needs E2E_OPERATOR_IMAGE and E2E_RUNNER_IMAGE "
        "(images the cluster can pull)"
    )
    monkeypatch.setenv("E2E_OPERATOR_IMAGE", "registry.example/eval-operator:1")
    monkeypatch.setenv("E2E_RUNNER_IMAGE", "registry.example/eval-runner:1")
    assert cluster.preflight() == (
        "e2e skipped: E2E_EXISTING_CLUSTER=1 but the current kubeconfig's cluster: "
        "connection refused"
    )
    monkeypatch.setenv("KUBECTL", _script(tmp_path / "kubectl-ok", "exit 0"))
    assert cluster.preflight() is None  # no Docker, no kind needed


@pytest.mark.parametrize(
    ("reference", "flags"),
    [
        ("eval-operator:e2e", ["image.repository=eval-operator", "image.tag=e2e"]),
        (
            "registry.example:5000/ml/eval-operator:1.2@sha256:" + "a" * 64,
            [
                "image.repository=registry.example:5000/ml/eval-operator",
                "image.tag=1.2",
                "image.digest=sha256:" + "a" * 64,
            ],
        ),
        (
            "registry.example:5000/eval-operator",
            ["image.repository=registry.example:5000/eval-operator"],
        ),
    ],
)
def test_image_references_become_chart_values(reference: str, flags: list[str]) -> None:
    values = cluster.image_values("image", reference, "IfNotPresent")
    given = values[1::2]
    assert set(flags) | {"image.pullPolicy=IfNotPresent"} == set(given)
