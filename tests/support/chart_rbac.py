"""The operator's permissions as the chart grants them: its ClusterRole, rendered by the real
helm, for tests that hold the operator to it (tests/support/kubeapi/authz.py)."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.support.tools import ROOT, tool

OPERATOR_USER = "system:serviceaccount:eval-system:eval-operator"


def render_cluster_wide_chart() -> list[dict[str, Any]]:
    done = subprocess.run(
        [tool("helm"), "template", "evals", str(ROOT / "charts" / "eval-operator")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def operator_rules(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules of the operator's own ClusterRole (not the aggregated user roles)."""
    (role,) = [
        d
        for d in documents
        if d["kind"] == "ClusterRole" and not d["metadata"]["name"].endswith(("-view", "-edit"))
    ]
    return list(role["rules"])
