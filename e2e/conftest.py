"""e2e fixtures: one cluster per session, diagnostics when a test fails, cleanup at the end.

The cluster is a kind cluster made from this checkout, or with E2E_EXISTING_CLUSTER=1 the
current kubeconfig's (e2e/cluster.py). Without what it needs (a Docker engine and kind; or a
reachable cluster and the E2E_*_IMAGE variables) every e2e test is skipped with the same
one-line reason (`pytest -rs` shows it once). E2E_KEEP_CLUSTER=1 keeps the cluster (or the
throw-away namespaces) for a look after the run; E2E_ARTIFACTS=DIR also writes the
diagnostics of each failure there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import Cluster, ExistingCluster, KindCluster, existing_cluster, preflight


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    e2e_items = [item for item in items if item.get_closest_marker("e2e")]
    reason = preflight() if e2e_items else None
    if reason:
        for item in e2e_items:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """A failed test's report carries `kubectl get all -A`, the Evaluations, events, logs."""
    report = yield
    cluster = getattr(item, "funcargs", {}).get("e2e_cluster")
    if report.failed and report.when == "call" and isinstance(cluster, Cluster):
        text = cluster.diagnostics()
        report.sections.append(("cluster diagnostics", text))
        artifacts = os.environ.get("E2E_ARTIFACTS")
        if artifacts:
            path = Path(artifacts) / (re.sub(r"[^\w.-]+", "_", item.nodeid) + ".txt")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return report


@pytest.fixture(scope="session")
def e2e_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster: Cluster = (
        ExistingCluster()
        if existing_cluster()
        else KindCluster("eval-e2e", tmp_path_factory.mktemp("kind"))
    )
    try:
        try:
            cluster.up()
        except Exception:
            print(cluster.diagnostics())  # shown with the setup error
            raise
        yield cluster
    finally:
        cluster.down()
