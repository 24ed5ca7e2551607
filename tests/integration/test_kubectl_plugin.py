"""kubectl-evals against the API emulator, through a real kubectl.

The Evaluations' statuses are computed by the operator's desired_status() and stored with the
emulator (validated against the CRD's status schema), so the plugin reads what the operator writes.
The last test runs the plugin the way users do: `kubectl evals ...`, found by kubectl on PATH.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from eval_operator import kubectl_plugin
from tests.support.factories import evaluation, job, pod, summary, with_status
from tests.support.kubeapi import running_kubeapi
from tests.support.tools import tool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUN = "quick-abc123"
NOW = "2026-11-23T10:10:00Z"


def finished(
    name: str, correct: int, *, model: str = "demo", cost: str | None = None, judge: bool = False
) -> dict:
    ev = evaluation(name=name, uid=f"uid-{name}")
    ev["spec"]["model"]["name"] = model
    ev = with_status(
        ev,
        job=job(RUN, complete=True),
        pods=[pod(RUN, 0, phase="Succeeded", termination=summary(0, correct, 10))],
    )
    if cost is not None:
        ev["status"]["usage"]["costUSD"] = cost
    if judge:
        ev["status"]["usage"]["judge"] = {
            "requests": 10,
            "inputTokens": 900,
            "outputTokens": 30,
            "costUSD": "0.0040",
        }
    return ev


def running(name: str) -> dict:
    ev = evaluation(name=name, uid=f"uid-{name}")
    live = {f"{RUN}-0-0": summary(0, 3, 10, state="running")}
    return with_status(ev, job=job(RUN, active=1), pods=[pod(RUN, 0)], live=live)


def _stored(ev: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(ev)
    for key in ("uid", "generation"):
        obj["metadata"].pop(key)
    return obj


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    crd = yaml.safe_load((ROOT / "crds" / "evaluations.evals.io.yaml").read_text())
    with running_kubeapi() as api:
        api.create(crd)
        for ev in (
            finished("good", 9, cost="0.0123"),
            finished("better", 10, model="demo-2", cost="0.0100", judge=True),
            finished("weak", 5),
            running("busy"),
        ):
            api.create(_stored(ev), keep_status=True)
        yield api.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")


@pytest.fixture(autouse=True)
def kubectl_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECTL", tool("kubectl"))


def plugin(kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    out = io.StringIO()
    err = io.StringIO()
    old_err, sys.stderr = sys.stderr, err
    try:
        code = kubectl_plugin.main([*args, f"--kubeconfig={kubeconfig}"], out=out)
    finally:
        sys.stderr = old_err
    return code, out.getvalue(), err.getvalue()


def test_results_table_shows_scores_ci95_usage_and_cost(kubeconfig: Path) -> None:
    code, out, _ = plugin(kubeconfig, "results", "good")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "Evaluation", "default/good", "model", "demo", "phase", "Succeeded", "passed", "True"
    ]  # fmt: skip
    header = next(line for line in lines if line.startswith("SCORER"))
    assert header.split() == ["SCORER", "VALUE", "STDERR", "CI95", "N"]
    row = next(line for line in lines if line.startswith("exact_match"))
    name, value, stderr, low, high, n = row.split()
    assert (name, value, stderr, n) == ("exact_match", "0.9000", "0.1000", "10")
    # The interval printed is the one in status: Wilson's for 9 of 10.
    assert (low, high) == ("[0.5958,", "0.9821]")
    assert "samples: 10 scored, 0 errored, 10 total" in out
    assert (
        "usage: 10 requests (0 timed out), 100 input tokens, 20 output tokens, 0 prompt-cache "
        "tokens, 0 truncated answers, 0 cache hits, cost $0.0123"
    ) in out
    assert "thresholds: exact_match 0.9 >= 0.8: ok" in out


def test_results_exit_1_when_a_threshold_is_missed(kubeconfig: Path) -> None:
    code, out, _ = plugin(kubeconfig, "results", "weak")
    assert code == 1
    assert "passed False" in out.splitlines()[0]
    assert "exact_match 0.5 >= 0.8: not met" in out


def test_results_of_a_running_evaluation_show_progress(kubeconfig: Path) -> None:
    code, out, _ = plugin(kubeconfig, "results", "busy")
    assert code == 0
    assert "phase Running" in out
    assert "samples: 3 scored, 0 errored, 10 total" in out


def test_results_as_json(kubeconfig: Path) -> None:
    code, out, _ = plugin(kubeconfig, "results", "good", "-o", "json")
    assert code == 0
    data = json.loads(out)
    assert data["name"] == "good" and data["passed"] == "True"
    assert data["results"][0]["name"] == "exact_match"
    assert data["usage"]["costUSD"] == "0.0123"


def test_compare_side_by_side_with_deltas(kubeconfig: Path) -> None:
    code, out, _ = plugin(kubeconfig, "compare", "good", "better")
    assert code == 0
    rows = {line.split("   ")[0].strip(): line for line in out.splitlines() if line.strip()}
    assert "A: default/good" in out.splitlines()[0] and "B: default/better" in out.splitlines()[0]
    assert "demo" in rows["model"] and "demo-2" in rows["model"]
    assert rows["exact_match"].rstrip().endswith("+0.1000")
    assert rows["requests"].split()[-1] == "+0"
    assert rows["cost USD"].split()[-1] == "-0.0023"
    assert rows["judge cost USD"].split()[-3:] == ["0", "0.0040", "+0.0040"]


def test_results_show_judge_usage_apart(kubeconfig: Path) -> None:
    code, out, _ = plugin(kubeconfig, "results", "better")
    assert code == 0
    assert "judge: 10 requests, 900 input tokens, 30 output tokens, cost $0.0040" in out
    assert "judge:" not in plugin(kubeconfig, "results", "good")[1]


def test_compare_calls_no_difference_significant(kubeconfig: Path) -> None:
    """Intervals apart or not, a comparison of two runs is a paired test on their samples;
    without a store, compare says so instead of starring deltas."""
    code, out, _ = plugin(kubeconfig, "compare", "weak", "better")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("exact_match"))
    assert row.rstrip().endswith("+0.5000")  # the intervals do not overlap: still no verdict
    assert "*" not in out and "significant" not in out
    assert "whether B differs from A takes a paired test on the per-sample scores" in out
    assert "EvalSuite store (spec.suiteRef)" in out


def test_missing_evaluation_is_a_clear_error(kubeconfig: Path) -> None:
    code, out, err = plugin(kubeconfig, "results", "nope")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and 'evaluations.evals.io "nope" not found' in err


def test_missing_kubectl_is_a_clear_error(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECTL", str(tmp_path / "no-kubectl"))
    code, _, err = plugin(kubeconfig, "results", "good")
    assert code == 2 and "put kubectl on PATH or set KUBECTL" in err


def test_kubectl_runs_the_installed_plugin(kubeconfig: Path) -> None:
    """`kubectl evals` finds the kubectl-evals console script on PATH, as for users."""
    script = Path(sys.executable).parent / "kubectl-evals"
    if not script.exists():
        pytest.fail(
            f"{script} is not installed: reinstall the project (`make setup`)", pytrace=False
        )
    env = {**os.environ, "PATH": f"{script.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [tool("kubectl"), "evals", "results", "good", f"--kubeconfig={kubeconfig}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "exact_match" in done.stdout and "cost $0.0123" in done.stdout
    listed = subprocess.run(
        [tool("kubectl"), "plugin", "list"], capture_output=True, text=True, env=env, check=False
    )
    assert str(script) in listed.stdout


# --- kubectl explain reads the CRD's documentation ------------------------------------------

EXPLAINED = [
    "evaluation",
    "evaluation.spec",
    "evaluation.spec.model",
    "evaluation.spec.model.pricing",
    "evaluation.spec.dataset",
    "evaluation.spec.task",
    "evaluation.spec.task.scorers",
    "evaluation.spec.execution",
    "evaluation.spec.budget",
    "evaluation.status",
    "evaluation.status.conditions",
    "evaluation.status.usage",
]


def _schema_at(path: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / "evaluations.evals.io.yaml").read_text())
    node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for part in path.split(".")[1:]:
        node = node["properties"][part]
        node = node.get("items", node) if node.get("type") == "array" else node
    return node


@pytest.mark.parametrize("path", EXPLAINED)
def test_kubectl_explain_documents_every_field(kubeconfig: Path, path: str) -> None:
    done = subprocess.run(
        [tool("kubectl"), f"--kubeconfig={kubeconfig}", "explain", path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "KIND:       Evaluation" in out and "VERSION:    v1alpha1" in out
    description = out.split("DESCRIPTION:\n", 1)[1].split("\n\n")[0].strip()
    assert description, f"{path} has no description"
    fields = out.split("FIELDS:\n", 1)[1]
    # Each field: "  name\t<type>" then its description lines, indented by four spaces.
    blocks = [b for b in fields.split("\n\n") if b.strip()]
    documented = {}
    for block in blocks:
        lines = block.splitlines()
        name = lines[0].split("\t")[0].strip()
        documented[name] = " ".join(line.strip() for line in lines[1:] if line.startswith("    "))
    expected = set(_schema_at(path)["properties"])
    assert set(documented) == expected
    undocumented = sorted(name for name, text in documented.items() if not text)
    if path != "evaluation":  # apiVersion/kind/metadata: the apiserver's own fields
        assert not undocumented, f"{path}: fields without a description: {undocumented}"
