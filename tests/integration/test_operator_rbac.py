"""The chart's RBAC is what the operator needs: every API call it makes is allowed, and every
permission the chart grants is one it uses.

The real operator runs the way the chart runs it (`--all-namespaces`, metrics on) against the
API emulator, through a run that touches every kind of call: a suspended Evaluation whose Job is
resumed, a dataset ConfigMap and an API key Secret that are checked, a re-run that deletes the
old Job and ConfigMap, and a deletion. The emulator holds the operator's bearer token to the
ClusterRole that `helm template` renders, as a real apiserver's RBAC authorizer does (a
server-side apply that creates its object needs `create` as well as `patch`), so a missing
permission fails the scenario itself; the authorizer's decisions, verb by verb, are then
compared with what the chart grants. The same run checks the operator's /metrics.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kopf.testing
import pytest
import yaml

from tests.support.cert_manager import StandInCertManager
from tests.support.chart_rbac import OPERATOR_USER, operator_rules, render_cluster_wide_chart
from tests.support.factories import storage_class
from tests.support.job_controller import FakeJobController
from tests.support.kubeapi import KubeAPIServer, RequestRecord, running_kubeapi, use_kubeconfig
from tests.support.kubeapi.authz import Decision, RBACAuthorizer, Subject
from tests.support.model_server import ModelServer
from tests.support.operator_cluster import (
    RECORDS,
    controller_thread,
    events_when,
    manifest,
    operator_environment,
    secret,
)
from tests.support.ports import free_port
from tests.support.stack_controller import StackController
from tests.support.thirdparty import thirdparty_crds

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NS = "default"
GROUP, VERSION, PLURAL = "evals.io", "v1alpha1", "evaluations"
OPERATOR_TOKEN = "eval-operator-service-account-token"
# An Evaluation is read again only after a write conflict or a child's event that comes
# without its parent's latest body; this scenario may not need to.
GRANTED_BUT_NOT_EXERCISED = {("evals.io", "evaluations", "get"), ("evals.io", "evalsuites", "get")}


def granted(documents: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in operator_rules(documents)
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


class Run:
    def __init__(self, api: KubeAPIServer, metrics_port: int) -> None:
        self.api = api
        self.metrics_port = metrics_port

    def post(self, path: str, obj: dict[str, Any]) -> None:
        response = httpx.post(self.api.url + path, json=obj, timeout=10)
        assert response.status_code == 201, response.text

    def wait(self, name: str, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ev = self.api.get(GROUP, VERSION, PLURAL, NS, name)
            if ev is not None and predicate(ev.get("status") or {}):
                return ev
            time.sleep(0.1)
        raise AssertionError(f"{name}: {self.api.get(GROUP, VERSION, PLURAL, NS, name)}")

    def operator_calls(self) -> list[RequestRecord]:
        return [r for r in list(self.api.requests) if r.token == OPERATOR_TOKEN]

    def operator_decisions(self) -> list[Decision]:
        assert self.api.authorizer is not None
        return self.api.authorizer.decisions_of(OPERATOR_TOKEN)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    # The suite's monitors and certificates are part of what the chart must allow.
    thirdparty = thirdparty_crds()
    metrics_port = free_port()
    workdir = tmp_path_factory.mktemp("rbac")
    # The operator's token is held to the chart's ClusterRole, as a real apiserver holds its
    # service account: a call the chart does not grant is a 403 here too.
    authorizer = RBACAuthorizer(
        {OPERATOR_TOKEN: Subject(OPERATOR_USER, operator_rules(render_cluster_wide_chart()))}
    )
    with (
        operator_environment({"EVAL_OPERATOR_METRICS_PORT": str(metrics_port)}),
        running_kubeapi(bookmark_interval=2.0, authorizer=authorizer) as api,
        ModelServer().in_thread() as model,
        StackController(api) as stack,
        StandInCertManager(api),
    ):
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            api.create(yaml.safe_load(path.read_text()))
        # The Prometheus Operator's and cert-manager's CRDs: a suite's monitors and rule,
        # issuers and certificates are made (the stand-in cert-manager issues them).
        for pattern in ("monitoring.coreos.com_*.yaml", "cert-manager.io_*.yaml"):
            for path in sorted(thirdparty.glob(pattern)):
                api.create(yaml.safe_load(path.read_text()))
        # The cluster's default class grows volumes (a suite's store is made bigger below).
        api.create(storage_class("standard", expandable=True, default=True))
        kubeconfig = api.write_kubeconfig(workdir / "kubeconfig", token=OPERATOR_TOKEN)
        # A budgeted run whose first attempt is killed: its retry reads the run's ledger.
        controller = FakeJobController(
            api.url,
            workdir / "pods",
            crash_first_attempt={"budgeted": {0}},
            hosts_file=stack.hosts_file,
        )
        args = ["run", "--standalone", "--all-namespaces", "-m", "eval_operator.main"]
        with (
            use_kubeconfig(kubeconfig),
            controller_thread(controller),
            kopf.testing.KopfRunner(args, timeout=60) as runner,
        ):
            yield _scenario(Run(api, metrics_port), model)
        assert runner.exception is None, repr(runner.exception)


def _scenario(run: Run, model: ModelServer) -> Run:
    run.post(f"/api/v1/namespaces/{NS}/secrets", secret())
    run.post(
        f"/api/v1/namespaces/{NS}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "questions", "namespace": NS},
            "data": {"data.jsonl": "\n".join(json.dumps(r) for r in RECORDS)},
        },
    )
    body = manifest(
        "full-cycle",
        model,
        dataset={
            "configMapRef": {"name": "questions", "key": "data.jsonl"},
            "inputField": "question",
            "targetField": "answer",
        },
        suspend=True,
    )
    run.post(f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}", body)
    run.wait("full-cycle", lambda s: s.get("jobName") and s.get("phase") == "Pending")
    run.api.patch(GROUP, VERSION, PLURAL, NS, "full-cycle", {"spec": {"suspend": False}})
    first = run.wait("full-cycle", lambda s: s.get("phase") == "Succeeded")
    run.api.patch(
        GROUP,
        VERSION,
        PLURAL,
        NS,
        "full-cycle",
        {"metadata": {"annotations": {"evals.io/rerun": "again"}}},
    )
    run.wait(
        "full-cycle",
        lambda s: (
            s.get("rerunToken") == "again"
            and s.get("phase") == "Succeeded"
            and s.get("jobName") != first["status"]["jobName"]
        ),
    )
    model.faults.latency = 0.2
    try:
        budgeted = manifest("budgeted", model, budget={"maxRequests": 6})
        budgeted["spec"]["model"]["maxConcurrency"] = 1
        budgeted["spec"]["execution"] = {"shards": 1}
        run.post(f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}", budgeted)
        run.wait("budgeted", lambda s: s.get("phase") == "Failed")
    finally:
        model.faults.latency = 0.0
    _suite_scenario(run, model)
    return run


def _suite_scenario(run: Run, model: ModelServer) -> None:
    """An EvalSuite's whole life: its stack made (Secrets created once, the rest applied), an
    Evaluation run in it, then its cache disabled and its store made external (the managed
    objects pruned), then deleted."""
    suites = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/evalsuites"

    def suite_status(name: str, predicate: Any) -> dict[str, Any]:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            suite = run.api.get(GROUP, VERSION, "evalsuites", NS, name)
            if suite is not None and predicate(suite.get("status") or {}):
                return suite
            time.sleep(0.1)
        raise AssertionError(f"{name}: {run.api.get(GROUP, VERSION, 'evalsuites', NS, name)}")

    def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
        return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})

    suite = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EvalSuite",
        "metadata": {"name": "rbac-suite", "namespace": NS},
        # Two dashboard replicas at least: a PodDisruptionBudget too (pruned with the rest of
        # the dashboard once the store is made external without read-only credentials).
        # Monitoring, with the Prometheus Operator's CRDs installed: its monitors and rule
        # (pruned when the store and the cache stop being managed and monitoring goes off).
        "spec": {
            "dashboard": {"minReplicas": 2},
            "monitoring": {"enabled": True},
            "tls": {"enabled": True},
        },
    }
    run.post(suites, suite)
    suite_status(
        "rbac-suite",
        lambda s: (
            condition(s, "Ready").get("status") == "True"
            and condition(s, "MonitoringReady").get("reason") == "Ready"
        ),
    )
    # A bigger store: its data claim read and grown, its StatefulSet made again around its pod.
    run.api.patch(
        GROUP, VERSION, "evalsuites", NS, "rbac-suite",
        {"spec": {"store": {"managed": {"size": "11Gi"}}}},
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while True:
        claim = run.api.get("", "v1", "persistentvolumeclaims", NS, "data-rbac-suite-store-0")
        sts = run.api.get("apps", "v1", "statefulsets", NS, "rbac-suite-store")
        template = (sts or {}).get("spec", {}).get("volumeClaimTemplates") or [{}]
        if (claim or {}).get("spec", {}).get("resources", {}).get("requests") == {
            "storage": "11Gi"
        } and template[0].get("spec", {}).get("resources", {}).get("requests") == {
            "storage": "11Gi"
        }:
            break
        assert time.monotonic() < deadline, "the store's volume did not grow"
        time.sleep(0.1)
    body = manifest("in-suite", model, suiteRef={"name": "rbac-suite"})
    run.post(f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}", body)
    run.wait("in-suite", lambda s: s.get("phase") == "Succeeded")
    # A matrix of one cell: the cell applied, run, reported on by a cell report Job (created,
    # read, deleted); then the matrix removed and its cell deleted.
    cell = manifest("cell", model)["spec"]
    matrix = {
        "models": [{"name": "demo", "model": cell["model"]}],
        "tasks": [{"name": "sums", "dataset": cell["dataset"], "task": cell["task"]}],
        "baseline": "previous",
    }
    run.api.patch(GROUP, VERSION, "evalsuites", NS, "rbac-suite", {"spec": matrix})
    suite_status(
        "rbac-suite",
        lambda s: (
            bool((s.get("currentRun") or {}).get("completionTime"))
            and condition(s, "Regressed").get("reason") == "NoBaseline"
        ),
    )
    run.api.patch(
        GROUP,
        VERSION,
        "evalsuites",
        NS,
        "rbac-suite",
        {"spec": {"models": None, "tasks": None, "baseline": None}},
    )
    deadline = time.monotonic() + 60
    while run.api.get(GROUP, VERSION, PLURAL, NS, "rbac-suite-demo-sums") is not None:
        assert time.monotonic() < deadline, "the matrix's cell was not deleted"
        time.sleep(0.1)
    # The cache disabled and the NetworkPolicies turned off: both pruned.
    run.api.patch(
        GROUP,
        VERSION,
        "evalsuites",
        NS,
        "rbac-suite",
        {
            "spec": {
                "cache": {"mode": "Disabled"},
                "networkPolicy": {"enabled": False},
                "monitoring": {"enabled": False},
            }
        },
    )
    suite_status("rbac-suite", lambda s: condition(s, "CacheReady").get("reason") == "Disabled")
    deadline = time.monotonic() + 60
    while run.api.list("monitoring.coreos.com", "v1", "prometheusrules", NS):
        assert time.monotonic() < deadline, "the suite's PrometheusRule was not pruned"
        time.sleep(0.1)
    external = {
        "managed": None,
        "mode": "External",
        "external": {"secretRef": {"name": "rbac-suite-store-credentials"}, "sslmode": "disable"},
    }
    run.api.patch(
        GROUP,
        VERSION,
        "evalsuites",
        NS,
        "rbac-suite",
        {"spec": {"store": external, "tls": {"enabled": False}}},
    )
    deadline = time.monotonic() + 60
    while run.api.get("apps", "v1", "statefulsets", NS, "rbac-suite-store") is not None:
        assert time.monotonic() < deadline, "the managed store was not pruned"
        time.sleep(0.1)
    while run.api.get("policy", "v1", "poddisruptionbudgets", NS, "rbac-suite-dashboard"):
        assert time.monotonic() < deadline, "the dashboard's disruption budget was not pruned"
        time.sleep(0.1)
    while run.api.list("cert-manager.io", "v1", "issuers", NS):
        assert time.monotonic() < deadline, "the suite's issuers were not pruned"
        time.sleep(0.1)
    run.api.delete(GROUP, VERSION, "evalsuites", NS, "rbac-suite")


def test_metrics_endpoint_reports_the_evaluations(run: Run) -> None:
    text = httpx.get(f"http://127.0.0.1:{run.metrics_port}/metrics", timeout=10).text
    # full-cycle and in-suite (the budgeted run failed)
    assert 'eval_operator_evaluations{namespace="default",phase="Succeeded"} 2.0' in text
    assert "eval_operator_reconcile_duration_seconds_count" in text


def test_reconcile_events_are_posted(run: Run) -> None:
    """One event per milestone, posted by the operator (not kopf), none repeated."""

    def about(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if e["involvedObject"].get("name") == "full-cycle"]

    def complete(events: list[dict[str, Any]]) -> bool:  # the re-run's Succeeded is the last
        return sum(e["reason"] == "Succeeded" for e in about(events)) >= 2

    events = about(events_when(run.api, complete))
    by_reason: dict[str, list[str]] = {}
    for event in events:
        by_reason.setdefault(event["reason"], []).append(event["message"])
    created = by_reason["JobCreated"]
    assert len(created) == 2  # the first run and the re-run
    assert all(re.fullmatch(r"Created Job full-cycle-\w{6} with 2 shard\(s\)", m) for m in created)
    jobs = {m.split()[2] for m in created}
    (resumed,) = by_reason["Resumed"]
    first_job = resumed.split()[2]
    assert first_job in jobs and resumed == f"Resumed Job {first_job} (spec.suspend: false)"
    (rerun,) = by_reason["RerunStarted"]
    (second_job,) = jobs - {first_job}
    assert rerun == f"evals.io/rerun='again': run {second_job} replaces run {first_job}"
    assert len(by_reason["Succeeded"]) == 2
    assert all(e["source"] == {"component": "eval-operator"} for e in events)


def test_every_operator_call_is_allowed_by_the_chart(run: Run) -> None:
    run.api.delete(GROUP, VERSION, PLURAL, NS, "full-cycle")
    time.sleep(1)  # let the operator see the deletion
    assert run.operator_calls(), "the operator's requests carry its token"
    decisions = run.operator_decisions()
    # What the apiserver authorized, verb by verb: an apply that created its object was a
    # create as well as a patch.
    used = {(d.attributes.group, d.attributes.resource_path, d.attributes.verb) for d in decisions}
    denied = sorted(
        {
            (d.attributes.group, d.attributes.resource_path, d.attributes.verb)
            for d in decisions
            if not d.allowed
        }
    )
    assert not denied, f"the chart's ClusterRole lacks what the operator does: {denied}"
    allowed = granted(render_cluster_wide_chart())
    unused = allowed - used - GRANTED_BUT_NOT_EXERCISED
    assert not unused, f"the chart grants what the operator never does: {sorted(unused)}"
    # Cluster-wide, kopf neither lists nor watches namespaces.
    assert not [u for u in used if u[1] == "namespaces"]
