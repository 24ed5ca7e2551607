"""Everything the project ships reaches the emulated cluster the way it reaches a real one:
through the real kubectl and helm binaries (Go's YAML 1.1 readers, strict field validation,
server-side apply), never only through PyYAML (issue 7 item 0).

- every shipped manifest (crds/, examples/, e2e/manifests/, the chart rendered with each of its
  ci values files) means to Go's YAML reader exactly what it means to ours;
- the CRDs install with `kubectl apply` (client- and server-side) and `helm install`; a status
  with results round-trips; `kubectl get` prints the printer columns;
- examples, e2e manifests and the rendered chart pass a strict server-side dry run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.clis import Cluster
from tests.support.factories import job, pod, summary, with_status
from tests.support.kubeapi import running_kubeapi
from tests.support.thirdparty import locator, thirdparty_crds
from tests.support.tools import ROOT

pytestmark = pytest.mark.integration

CHART = ROOT / "charts" / "eval-operator"
CRDS = sorted((ROOT / "crds").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
E2E_MANIFESTS = sorted((ROOT / "e2e" / "manifests").glob("*.yaml"))
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
GROUP, VERSION, PLURAL = "evals.io", "v1alpha1", "evaluations"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_kubeapi() as server:
        cluster = Cluster(server, tmp_path_factory.mktemp("shipped"))
        for path in CRDS:
            cluster.kubectl("apply", "-f", str(path))
        if locator.find_folder():  # for the chart's monitoring objects (ServiceMonitor & co.)
            cluster.kubectl("apply", "--server-side", "-f", str(locator.find_folder()))
        yield cluster
        assert server.internal_errors == []


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def as_go_reads_it(cluster: Cluster, text: str) -> list[dict[str, Any]]:
    """The objects kubectl decodes from `text` (a client-side dry run sends nothing)."""
    done = cluster.kubectl("create", "--dry-run=client", "-o", "json", "-f", "-", input=text)
    decoder, out, position = json.JSONDecoder(), done.stdout, 0
    objects = []
    while position < len(out.rstrip()):  # one JSON document per object, one after the other
        obj, end = decoder.raw_decode(out, position)
        objects += obj["items"] if obj.get("kind") == "List" else [obj]
        position = end + (len(out[end:]) - len(out[end:].lstrip()))
    return objects


def differences(ours: Any, go: Any, path: str = "") -> list[str]:
    """Where Go's reading differs from PyYAML's; kubectl's own additions are not differences."""
    if isinstance(ours, dict) and isinstance(go, dict):
        found = [f"{path}.{key}: missing in Go's reading" for key in ours if key not in go]
        for key in ours:
            if key in go:
                found += differences(ours[key], go[key], f"{path}.{key}")
        found += [
            f"{path}.{key}: only in Go's reading ({go[key]!r})"
            for key in go
            if key not in ours and not (key == "metadata" or path.endswith(".metadata"))
        ]
        return found
    if isinstance(ours, list) and isinstance(go, list) and len(ours) == len(go):
        return [
            d
            for i, (a, b) in enumerate(zip(ours, go, strict=True))
            for d in differences(a, b, f"{path}[{i}]")
        ]
    if type(ours) is not type(go) or ours != go:
        return [f"{path}: PyYAML reads {ours!r}, Go reads {go!r}"]
    return []


def rendered_chart(cluster: Cluster, values: Path) -> str:
    return cluster.helm(
        "template", "eval-operator", str(CHART), "--namespace", "eval-system", "-f", str(values)
    ).stdout


SHIPPED = [*CRDS, *EXAMPLES, *E2E_MANIFESTS]


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_go_reads_every_shipped_manifest_as_we_do(cluster: Cluster, path: Path) -> None:
    text = path.read_text()
    ours, go = documents(text), as_go_reads_it(cluster, text)
    assert len(ours) == len(go)
    found = [d for a, b in zip(ours, go, strict=True) for d in differences(a, b)]
    assert not found, f"{path.name}: a YAML 1.1 ambiguity? {found[:5]}"


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name for p in CI_VALUES])
def test_go_reads_the_rendered_chart_as_we_do(cluster: Cluster, values: Path) -> None:
    if values.name.startswith("monitoring"):
        thirdparty_crds()  # skips without the Prometheus Operator's CRDs
    text = rendered_chart(cluster, values)
    ours, go = documents(text), as_go_reads_it(cluster, text)
    found = [d for a, b in zip(ours, go, strict=True) for d in differences(a, b)]
    assert not found, found[:5]


def test_the_crds_install_and_upgrade_with_kubectl(cluster: Cluster) -> None:
    # What the README gives for an upgrade of the CRDs, after a client-side install.
    for path in CRDS:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        name = documents(path.read_text())[0]["metadata"]["name"]
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=10s")
        stored = cluster.get("crd", name)
        ours = documents(path.read_text())[0]
        assert stored["spec"]["versions"] == ours["spec"]["versions"]
        assert stored["spec"]["names"] == {
            **ours["spec"]["names"],
            "listKind": f"{ours['spec']['names']['kind']}List",
        }


def test_a_status_with_results_round_trips(cluster: Cluster) -> None:
    """The bug a real cluster showed: `n` of status.results read as `false` by Go's YAML."""
    cluster.kubectl("apply", "-f", str(ROOT / "examples" / "quickstart.yaml"))
    ev = cluster.get("evaluation", "quickstart")
    run = "quickstart-abc123"
    pods = [pod(run, 0, phase="Succeeded", termination=summary(0, 38, 40))]
    written = with_status(ev, run=run, job=job(run, complete=True), pods=pods)["status"]
    cluster.server.patch_status(GROUP, VERSION, PLURAL, "default", "quickstart", written)
    status = cluster.get("evaluation", "quickstart")["status"]
    assert status["results"] == written["results"]
    assert status["results"][0]["n"] == 40
    # kubectl prints the columns from the CRD: a Table the server renders.
    header, row = cluster.kubectl("get", "evl", "quickstart").stdout.splitlines()
    assert header.split() == [
        "NAME",
        "PHASE",
        "READY",
        "MODEL",
        "PROGRESS",
        "SCORE",
        "PASSED",
        "AGE",
    ]
    assert row.split()[:7] == ["quickstart", "Succeeded", "True", "demo", "40/40", "0.95", "True"]
    wide = cluster.kubectl("get", "evals", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-6:] == ["REASON", "DATASET", "TASK", "STOPPED", "JOB", "COST"]
    assert "builtin arithmetic" in wide[1]


@pytest.mark.parametrize(
    "path", [*EXAMPLES, *E2E_MANIFESTS], ids=[p.name for p in [*EXAMPLES, *E2E_MANIFESTS]]
)
def test_examples_and_e2e_manifests_pass_a_strict_server_dry_run(
    cluster: Cluster, path: Path
) -> None:
    done = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", str(path))
    assert "(server dry run)" in done.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name for p in CI_VALUES])
def test_the_rendered_chart_passes_a_strict_server_dry_run(cluster: Cluster, values: Path) -> None:
    if values.name.startswith("monitoring"):
        thirdparty_crds()  # skips without the Prometheus Operator's CRDs
    text = rendered_chart(cluster, values)
    for namespace in {d["metadata"].get("namespace") for d in documents(text)} - {None}:
        cluster.kubectl("create", "namespace", namespace, check=False)
    done = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=text)
    assert done.stdout.count("(server dry run)") == len(documents(text))


def test_the_charts_admission_policy_denies_at_kubectl_apply(cluster: Cluster) -> None:
    """The opt-in lock-down (ci/security-values.yaml) installed with helm, then an Evaluation
    that would send its key elsewhere refused at `kubectl apply` with the policy's message."""
    for namespace in ("eval-system", "team-a", "team-b"):
        cluster.kubectl("create", "namespace", namespace, check=False)
    cluster.kubectl("label", "namespace", "team-a", "evals.io/restricted=true", "--overwrite")
    values = CHART / "ci" / "security-values.yaml"
    cluster.helm(
        "install", "locked", str(CHART), "-n", "eval-system", "--skip-crds", "-f", str(values)
    )
    try:
        quickstart = documents((ROOT / "examples" / "quickstart.yaml").read_text())
        (example,) = [d for d in quickstart if d["kind"] == "Evaluation"]
        example["metadata"] = {"name": "leaky", "namespace": "team-a"}
        example["spec"]["model"]["baseURL"] = "https://collector.example.net/v1"
        denied = cluster.kubectl("apply", "-f", "-", input=json.dumps(example), check=False)
        assert denied.returncode != 0
        assert "Error from server (Forbidden)" in denied.stderr
        assert (
            "ValidatingAdmissionPolicy 'locked-eval-operator-evaluations' with binding "
            "'locked-eval-operator-evaluations' denied request: spec: endpoint "
            "https://collector.example.net/v1 is not allowed here" in denied.stderr
        )
        # The same object where the binding's namespaceSelector does not reach is admitted.
        example["metadata"]["namespace"] = "team-b"
        cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(example))
        # Fixed, it is admitted where the policy applies too.
        example["metadata"]["namespace"] = "team-a"
        example["spec"]["model"]["baseURL"] = "http://vllm.models.svc:8000/v1"
        secret_ref = example["spec"]["model"].get("apiKeySecretRef")
        if secret_ref:
            secret_ref["name"] = "evals-" + secret_ref["name"]
        cluster.kubectl("apply", "-f", "-", input=json.dumps(example))
        assert cluster.get("evaluation", "leaky", "-n", "team-a")["spec"]["model"]["baseURL"] == (
            "http://vllm.models.svc:8000/v1"
        )
        cluster.kubectl("delete", "evaluation", "leaky", "-n", "team-a")
    finally:
        cluster.helm("uninstall", "locked", "-n", "eval-system")
