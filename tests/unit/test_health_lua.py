"""Argo CD health checks (charts/eval-operator/health/*.lua) run by a real Lua runtime.

Argo CD runs health scripts with gopher-lua, a Lua 5.1: every case runs on Lua 5.1 and on 5.4.
The Evaluation statuses are computed by the operator's own desired_status(), so the scripts are
tested against the status contract as the operator writes it, not against hand-made copies.
The documentation's argocd-cm snippet must carry exactly these scripts.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import lupa.lua51
import lupa.lua54
import pytest
import yaml

from eval_operator.pods import pod_view, stuck
from tests.support.factories import evaluation, job, plan, pod, summary, with_status

ROOT = Path(__file__).resolve().parents[2]
HEALTH_DIR = ROOT / "charts" / "eval-operator" / "health"
SCRIPTS = {"Evaluation": HEALTH_DIR / "evaluation.lua", "EvalSuite": HEALTH_DIR / "evalsuite.lua"}
RUNTIMES = {"lua5.1": lupa.lua51.LuaRuntime, "lua5.4": lupa.lua54.LuaRuntime}
RUN = "quick-abc123"
NOW = "2026-11-23T10:10:00Z"


def argocd_snippet() -> str:
    """The argocd-cm data the docs show, built from the script files."""
    lines = ["data:"]
    for kind, path in SCRIPTS.items():
        lines.append(f"  resource.customizations.health.evals.io_{kind}: |")
        lines.append(textwrap.indent(path.read_text(), "    ").rstrip("\n"))
    return "\n".join(lines) + "\n"


def health(kind: str, obj: dict[str, Any], runtime: str = "lua5.1") -> dict[str, str]:
    """Run the script as Argo CD does: `obj` is the resource as a Lua table, `hs` is returned."""
    lua = RUNTIMES[runtime](unpack_returned_tuples=True)
    env = lua.globals()
    for unsafe in ("os", "io", "require", "dofile", "loadfile", "package", "debug"):
        env[unsafe] = None  # a health script must need none of these
    env.obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPTS[kind].read_text())
    return dict(result)


def finished(correct: int, thresholds: list[str] | None = None) -> dict[str, Any]:
    ev = evaluation()
    if thresholds is not None:
        ev["spec"]["thresholds"] = thresholds
    pods = [pod(RUN, 0, phase="Succeeded", termination=summary(0, correct, 10))]
    return with_status(
        ev,
        job=job(RUN, complete=True, run_plan=plan(RUN, thresholds=tuple(ev["spec"]["thresholds"]))),
        pods=pods,
    )


# --- Evaluation: one sample status per health, all from desired_status() ----------------------


def _running() -> dict[str, Any]:
    live = {f"{RUN}-0-0": summary(0, 3, 10, state="running")}
    return with_status(evaluation(), job=job(RUN, active=1), pods=[pod(RUN, 0)], live=live)


def _failed() -> dict[str, Any]:
    pods = [pod(RUN, 0, phase="Failed", exit_code=1)]
    return with_status(evaluation(), job=job(RUN, failed=True, failed_indexes="0"), pods=pods)


def _cancelled() -> dict[str, Any]:
    ev = evaluation()
    ev["spec"]["cancel"] = True
    return with_status(ev, job=job(RUN, active=1))


def _suspended() -> dict[str, Any]:
    ev = evaluation()
    ev["spec"]["suspend"] = True
    return with_status(ev, job=job(RUN, suspend=True))


def _blocked() -> dict[str, Any]:
    waiting = ("CreateContainerConfigError", 'secret "model-key" not found')
    pods = [pod(RUN, 0, phase="Pending", waiting=waiting)]
    return with_status(
        evaluation(), job=job(RUN, active=1), pods=pods, stuck=stuck([pod_view(p) for p in pods])
    )


def _invalid() -> dict[str, Any]:
    return with_status(evaluation(), spec_problem="spec.thresholds[0]: names no scorer")


def _spec_changed_after_success() -> dict[str, Any]:
    done = finished(9)
    done["metadata"]["generation"] = 2
    return with_status(done, job=job(RUN, complete=True))


EVALUATION_CASES = {
    "no status yet": (lambda: evaluation(), "Progressing", "observe generation 1"),
    "creating the Job": (
        lambda: with_status(evaluation()),
        "Progressing",
        "Creating",
    ),
    "running": (_running, "Progressing", "3/10 samples done"),
    "succeeded, thresholds hold": (lambda: finished(9), "Healthy", "exact_match 0.9 >= 0.8: ok"),
    "succeeded, no thresholds": (lambda: finished(2, []), "Healthy", "no thresholds set"),
    "succeeded, threshold missed": (lambda: finished(5), "Degraded", "Thresholds not met"),
    "failed": (_failed, "Degraded", "FailedIndexes"),
    "cancelled": (_cancelled, "Degraded", "Cancelled"),
    "suspended": (_suspended, "Suspended", "spec.suspend"),
    "blocked on a missing Secret": (_blocked, "Degraded", "SecretNotFound"),
    "invalid spec": (_invalid, "Degraded", "InvalidSpec"),
    "finished, then the spec changed": (_spec_changed_after_success, "Healthy", "evals.io/rerun"),
}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("case", EVALUATION_CASES)
def test_evaluation_health(case: str, runtime: str) -> None:
    build, expected, message = EVALUATION_CASES[case]
    result = health("Evaluation", build(), runtime)
    assert result["status"] == expected, result
    assert message in result["message"], result


def test_a_new_generation_is_progressing_until_observed() -> None:
    ev = finished(9)
    ev["metadata"]["generation"] = 2  # the user edited the spec; the operator has not seen it
    result = health("Evaluation", ev)
    assert result == {
        "status": "Progressing",
        "message": "Waiting for the operator to observe generation 2",
    }


# --- EvalSuite: the same conditions contract (Ready, Stalled, Progressing) ---------------------


def suite(conditions: list[tuple[str, str, str]], generation: int = 3, **spec: Any) -> dict:
    return {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "EvalSuite",
        "metadata": {"name": "nightly", "namespace": "ml", "generation": generation},
        "spec": spec,
        "status": {
            "observedGeneration": 3,
            "conditions": [
                {
                    "type": type_,
                    "status": status,
                    "reason": reason,
                    "message": f"{reason} message",
                    "lastTransitionTime": NOW,
                    "observedGeneration": 3,
                }
                for type_, status, reason in conditions
            ],
        },
    }


SUITE_CASES = {
    "ready": (
        suite([("Ready", "True", "Ready"), ("Progressing", "False", "Ready")]),
        "Healthy",
        "Ready: Ready message",
    ),
    "rolling out": (
        suite([("Ready", "False", "StoreNotReady"), ("Progressing", "True", "Reconciling")]),
        "Progressing",
        "StoreNotReady",
    ),
    "stuck": (
        suite([("Ready", "False", "StoreNotReady"), ("Progressing", "False", "StoreFailed")]),
        "Degraded",
        "StoreNotReady",
    ),
    "stalled": (
        suite([("Ready", "False", "X"), ("Stalled", "True", "CertManagerNotInstalled")]),
        "Degraded",
        "CertManagerNotInstalled",
    ),
    "matrix running": (
        suite(
            [
                ("Ready", "True", "Ready"),
                ("Progressing", "True", "RunInProgress"),
                ("Passed", "Unknown", "RunInProgress"),
            ]
        ),
        "Progressing",
        "RunInProgress",
    ),
    "matrix passed": (
        suite(
            [
                ("Ready", "True", "Ready"),
                ("Progressing", "False", "RunFinished"),
                ("Passed", "True", "Passed"),
                ("Regressed", "False", "NoRegression"),
            ]
        ),
        "Healthy",
        "Passed",
    ),
    "matrix regressed": (
        suite(
            [
                ("Ready", "True", "Ready"),
                ("Progressing", "False", "RunFinished"),
                ("Passed", "False", "Regressed"),
                ("Regressed", "True", "Regression"),
            ]
        ),
        "Degraded",
        "Regression",
    ),
    "matrix below thresholds": (
        suite(
            [
                ("Ready", "True", "Ready"),
                ("Progressing", "False", "RunFinished"),
                ("Passed", "False", "ThresholdsNotMet"),
            ]
        ),
        "Degraded",
        "ThresholdsNotMet",
    ),
    "no conditions yet": (suite([]), "Progressing", "Waiting for the Ready condition"),
    "new generation": (suite([("Ready", "True", "Ready")], generation=4), "Progressing", "4"),
}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("case", SUITE_CASES)
def test_evalsuite_health(case: str, runtime: str) -> None:
    obj, expected, message = SUITE_CASES[case]
    result = health("EvalSuite", obj, runtime)
    assert result["status"] == expected, result
    assert message in result["message"], result


def test_evalsuite_without_status_is_progressing() -> None:
    obj = suite([])
    del obj["status"]
    assert health("EvalSuite", obj)["status"] == "Progressing"


# --- the shipped docs carry the tested scripts ------------------------------------------------


@pytest.mark.parametrize("doc", ["README.md", "charts/eval-operator/README.md"])
def test_docs_show_exactly_the_tested_scripts(doc: str) -> None:
    snippet = argocd_snippet()
    assert snippet in (ROOT / doc).read_text(), (
        f"{doc}: the Argo CD snippet differs from charts/eval-operator/health/*.lua; paste the "
        "output of: .venv/bin/python -c 'from tests.unit.test_health_lua import argocd_snippet; "
        'print(argocd_snippet(), end="")\''
    )
    data = yaml.safe_load(snippet)["data"]
    for kind, path in SCRIPTS.items():
        assert data[f"resource.customizations.health.evals.io_{kind}"] == path.read_text()
