"""Flux's health of evals.io objects (charts/eval-operator/health/flux-kustomization.yaml):
its CEL expressions evaluated as kustomize-controller does, on the statuses the operator
writes (the same cases as the Argo CD scripts), with the same verdict as Argo CD's."""

from __future__ import annotations

from typing import Any

import cel
import pytest
import yaml

from tests.unit.test_health_lua import EVALUATION_CASES, HEALTH_DIR, SUITE_CASES

EXPRESSIONS = {
    check["kind"]: check
    for check in yaml.safe_load((HEALTH_DIR / "flux-kustomization.yaml").read_text())["spec"][
        "healthCheckExprs"
    ]
}
# Argo CD's words for what Flux calls inProgress, failed and current.
ARGO_TO_FLUX = {
    "Healthy": "current",
    "Degraded": "failed",
    "Progressing": "inProgress",
    "Suspended": "inProgress",
}


def flux_health(obj: dict[str, Any]) -> str:
    """inProgress, then failed, then current: the first true one; Flux keeps waiting (an
    error, or none true) until its timeout otherwise."""
    check = EXPRESSIONS[obj["kind"]]
    for name in ("inProgress", "failed", "current"):
        context = cel.Context({key: value for key, value in obj.items()})
        if cel.compile(check[name]).execute(context) is True:
            return name
    return "none"


@pytest.mark.parametrize("case", [c for c in EVALUATION_CASES if c != "no status yet"])
def test_evaluation_health_in_flux_agrees_with_argo_cd(case: str) -> None:
    build, expected, _ = EVALUATION_CASES[case]
    assert flux_health(build()) == ARGO_TO_FLUX[expected]


@pytest.mark.parametrize("case", [c for c in SUITE_CASES if c != "no conditions yet"])
def test_evalsuite_health_in_flux_agrees_with_argo_cd(case: str) -> None:
    obj, expected, _ = SUITE_CASES[case]
    assert flux_health(obj) == ARGO_TO_FLUX[expected]


def test_an_object_without_status_keeps_flux_waiting() -> None:
    build, _, _ = EVALUATION_CASES["no status yet"]
    with pytest.raises(Exception, match="status|conditions|observedGeneration"):
        flux_health(build())  # an undefined field: Flux waits, as its docs say
    obj, _, _ = SUITE_CASES["no conditions yet"]
    assert flux_health(obj) == "inProgress"
