"""Optional platforms, found by API discovery: a suite that asks for monitoring in a cluster
without the Prometheus Operator says so (MonitoringReady False, PrometheusOperatorNotInstalled)
and runs; once the Prometheus Operator's CRDs (the upstream ones, hack/thirdparty-crds.lock)
are installed, the operator notices within its recheck interval, without a restart, and makes
the ServiceMonitors, the PodMonitor and the PrometheusRule; monitoring turned off prunes them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.support.model_server import ModelServer
from tests.support.operator_cluster import NS, Cluster, condition, events_when, running_cluster
from tests.support.suites import reason as reason_of
from tests.support.suites import suite_manifest
from tests.support.thirdparty import thirdparty_crds

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
SUITE = "watched"
MONITORING = {"enabled": True, "labels": {"release": "kps"}}
KINDS = (("servicemonitors", 3), ("podmonitors", 1), ("prometheusrules", 1))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    thirdparty_crds()  # the test installs them: without any, it skips before starting
    with running_cluster(
        tmp_path_factory.mktemp("platforms"),
        stack=True,
        model=ModelServer(wrong=[]),
        environment={"EVAL_OPERATOR_PLATFORM_RECHECK_SECONDS": "1"},
    ) as cluster:
        yield cluster


def monitors(cluster: Cluster, plural: str) -> list[dict[str, Any]]:
    return cluster.api.list(
        "monitoring.coreos.com", "v1", plural, NS, label_selector=f"evals.io/suite={SUITE}"
    )


def test_monitoring_follows_the_prometheus_operator_being_installed(cluster: Cluster) -> None:
    spec = {"monitoring": MONITORING, "tls": {"enabled": True}}
    cluster.apply(suite_manifest(SUITE, spec)).raise_for_status()

    thirdparty = thirdparty_crds()

    def says(wanted: str):
        return lambda s: reason_of(s, "MonitoringReady") == wanted

    suite = cluster.wait_suite(SUITE, says("PrometheusOperatorNotInstalled"), timeout=120)
    assert condition(suite, "MonitoringReady")["status"] == "False"
    assert "install the Prometheus Operator" in condition(suite, "MonitoringReady")["message"]
    # The rest of the suite does not wait for it.
    suite = cluster.wait_suite(SUITE, lambda s: reason_of(s, "Ready") == "Ready", timeout=120)
    # What needs only the core API is made already: the exporters and the Grafana dashboard.
    sts = cluster.api.get("apps", "v1", "statefulsets", NS, f"{SUITE}-store")
    names = [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]]
    assert names == ["postgres", "pg-metrics"]
    assert cluster.api.get("", "v1", "configmaps", NS, f"{SUITE}-grafana-dashboard")
    assert cluster.api.get("", "v1", "services", NS, f"{SUITE}-store-metrics")
    wanted = {"PrometheusOperatorNotInstalled", "CertManagerNotInstalled"}
    events_when(cluster.api, lambda events: wanted <= {e.get("reason") for e in events})
    assert reason_of(suite, "TLSReady") == "CertManagerNotInstalled"
    # Without cert-manager, the stack runs without TLS: its clients do not ask for it.
    sts = cluster.api.get("apps", "v1", "statefulsets", NS, f"{SUITE}-store")
    assert not any(v["name"] == "tls" for v in sts["spec"]["template"]["spec"]["volumes"])

    # The Prometheus Operator arrives (its CRDs): noticed without a restart.
    started = time.monotonic()
    for path in sorted(thirdparty.glob("monitoring.coreos.com_*.yaml")):
        cluster.api.create(yaml.safe_load(path.read_text()))
    suite = cluster.wait_suite(SUITE, says("Ready"), timeout=60)
    noticed = time.monotonic() - started
    assert condition(suite, "MonitoringReady")["status"] == "True"
    assert noticed < 30, noticed
    deadline = time.monotonic() + 30
    while any(len(monitors(cluster, plural)) != n for plural, n in KINDS):
        assert time.monotonic() < deadline, {p: len(monitors(cluster, p)) for p, _ in KINDS}
        time.sleep(0.2)
    for plural, _ in KINDS:
        for obj in monitors(cluster, plural):
            assert obj["metadata"]["labels"]["release"] == "kps"
            assert obj["metadata"]["ownerReferences"][0]["name"] == SUITE
    (rule,) = monitors(cluster, "prometheusrules")
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert "EvalSuiteHighCost" in alerts and "EvalSuiteStoreDown" in alerts

    # cert-manager's CRDs arrive too: noticed, its issuers and certificates made (nothing
    # issues them in this test: TLSReady waits for them, naming them).
    for path in sorted(thirdparty.glob("cert-manager.io_*.yaml")):
        cluster.api.create(yaml.safe_load(path.read_text()))
    suite = cluster.wait_suite(
        SUITE, lambda s: reason_of(s, "TLSReady") == "CertificatesNotReady", timeout=60
    )
    assert f"{SUITE}-store-tls" in condition(suite, "TLSReady")["message"]
    names = {
        c["metadata"]["name"] for c in cluster.api.list("cert-manager.io", "v1", "certificates", NS)
    }
    assert {f"{SUITE}-ca", f"{SUITE}-store-tls", f"{SUITE}-cache-tls"} <= names

    # Monitoring turned off: the monitors, the exporters and the dashboard ConfigMap go.
    cluster.api.patch(
        "evals.io",
        "v1alpha1",
        "evalsuites",
        NS,
        SUITE,
        {"spec": {"monitoring": {"enabled": False}}},
    )
    cluster.wait_suite(SUITE, says("Disabled"), timeout=60)
    deadline = time.monotonic() + 30
    while any(monitors(cluster, plural) for plural, _ in KINDS) or cluster.api.get(
        "", "v1", "configmaps", NS, f"{SUITE}-grafana-dashboard"
    ):
        assert time.monotonic() < deadline, "monitoring objects left behind"
        time.sleep(0.2)
    sts = cluster.api.get("apps", "v1", "statefulsets", NS, f"{SUITE}-store")
    assert [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]] == ["postgres"]
