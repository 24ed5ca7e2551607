"""The operator at the edges a real cluster shows (issue 7): each test here failed on the
operator before the watch-driven rewrite. The real operator, runner processes, the API
emulator and a stand-in Job controller/kubelet (tests/support/operator_cluster.py)."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trustme

from tests.support.job_controller import EXIT_ZERO_IMAGE, UNPULLABLE_PREFIX, UNSCHEDULABLE_LABEL
from tests.support.operator_cluster import (
    GROUP,
    NS,
    PLURAL,
    VERSION,
    Cluster,
    condition,
    manifest,
    running_cluster,
)
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

PROBE_PORT = free_port()
OPERATOR_ARGS = [
    "run", "--standalone", "--all-namespaces", "--verbose",
    f"--liveness=http://127.0.0.1:{PROBE_PORT}/healthz", "-m", "eval_operator.main",
]  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("edges"), operator_args=OPERATOR_ARGS) as running:
        yield running


def ready(ev: dict[str, Any]) -> dict[str, Any]:
    return condition(ev, "Ready") if (ev.get("status") or {}).get("conditions") else {}


def slow(cluster: Cluster, name: str, **spec: Any) -> dict[str, Any]:
    """A run of 10 samples, one at a time, that takes a few seconds."""
    body = manifest(name, cluster.model, **spec)
    body["spec"]["model"]["maxConcurrency"] = 1
    return body


def test_a_typo_in_a_threshold_is_fixable_and_fixing_it_starts_the_run(cluster: Cluster) -> None:
    """Item 1: InvalidSpec on a spec that never ran is not terminal."""
    body = manifest("typo", cluster.model, thresholds=["exact_matc >= 0.5"])
    assert cluster.apply(body).status_code == 201
    ev = cluster.wait("typo", lambda e: ready(e).get("reason") == "InvalidSpec")
    assert ev["status"]["phase"] == "Failed"
    assert "spec.thresholds[0]: 'exact_matc' names no scorer" in ready(ev)["message"]
    assert not [r for r in cluster.job_posts() if r.startswith("typo-")]
    (warning,) = cluster.wait_event("typo", ("InvalidSpec",))
    assert warning["type"] == "Warning"

    cluster.patch_spec("typo", {"thresholds": ["exact_match >= 0.5"]})
    done = cluster.wait_phase("typo", "Succeeded")
    assert condition(done, "Passed")["status"] == "True"
    assert done["status"]["observedGeneration"] == 2


def test_a_run_is_judged_by_the_spec_it_ran_with(cluster: Cluster) -> None:
    """Item 2: scorers, thresholds and shards swapped mid-run change nothing but a note."""
    cluster.model.faults.latency = 0.3
    try:
        assert cluster.apply(slow(cluster, "frozen")).status_code == 201
        cluster.wait_phase("frozen", "Running", timeout=30)
        cluster.patch_spec(
            "frozen",
            {
                "task": {"promptTemplate": "{{ input }}", "scorers": [{"type": "contains"}]},
                "thresholds": ["contains >= 0.99"],
                "execution": {"shards": 3},
            },
        )
        changed = cluster.wait("frozen", lambda e: e["status"].get("observedGeneration") == 2)
        assert (
            "the spec changed after this run started (generation 1 -> 2)"
            in (ready(changed)["message"])
        )
        done = cluster.wait_phase("frozen", "Succeeded")
    finally:
        cluster.model.faults.latency = 0.0
    status = done["status"]
    assert [r["name"] for r in status["results"]] == ["exact_match", "close"]
    assert status["progress"]["summary"] == "10/10"
    passed = condition(done, "Passed")
    assert passed["status"] == "True" and "exact_match 0.8 >= 0.75: ok" in passed["message"]
    (note,) = cluster.wait_event("frozen", ("SpecChanged",))
    assert "evals.io/rerun" in note["message"]


def test_kueue_admission_is_never_undone(cluster: Cluster) -> None:
    """Item 3: the suspend of a Job queued by Kueue is Kueue's alone: here the Evaluation asks
    for a suspended Job (as Kueue's webhook would make it), Kueue admits it, and the operator
    does not suspend it again although spec.suspend still says true."""
    body = manifest("queued", cluster.model, suspend=True)
    body["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "evals"}
    assert cluster.apply(body).status_code == 201
    ev = cluster.wait("queued", lambda e: ready(e).get("reason") == "Suspended")
    job_path = f"/apis/batch/v1/namespaces/{NS}/jobs/{ev['status']['jobName']}"
    job = cluster.api.get("batch", "v1", "jobs", NS, ev["status"]["jobName"])
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "evals"
    # Kueue admits the workload: it resumes the Job.
    cluster.api.patch(
        "batch", "v1", "jobs", NS, job["metadata"]["name"], {"spec": {"suspend": False}}
    )
    done = cluster.wait_phase("queued", "Succeeded")
    assert done["status"]["results"][0]["n"] == 10
    assert not [r for r in cluster.operator_requests("PATCH") if r.path == job_path]


def test_suspend_is_applied_only_when_spec_suspend_changes(cluster: Cluster) -> None:
    """Item 3: someone else's suspend of the Job is not reverted within seconds."""
    cluster.model.faults.latency = 0.3
    try:
        assert cluster.apply(slow(cluster, "hands-off")).status_code == 201
        ev = cluster.wait_phase("hands-off", "Running", timeout=30)
        run = ev["status"]["jobName"]
        cluster.api.patch("batch", "v1", "jobs", NS, run, {"spec": {"suspend": True}})
        time.sleep(2)
        job = cluster.api.get("batch", "v1", "jobs", NS, run)
        assert job["spec"]["suspend"] is True  # not forced back to spec.suspend (false)
        job_path = f"/apis/batch/v1/namespaces/{NS}/jobs/{run}"
        assert not [r for r in cluster.operator_requests("PATCH") if r.path == job_path]
        cluster.wait("hands-off", lambda e: ready(e).get("reason") == "Suspended")
        # The user's own suspend and resume still work, once each.
        cluster.patch_spec("hands-off", {"suspend": True})
        cluster.patch_spec("hands-off", {"suspend": False})
        done = cluster.wait_phase("hands-off", "Succeeded", timeout=60)
    finally:
        cluster.model.faults.latency = 0.0
    assert done["status"]["progress"]["completed"] == 10


def test_a_job_deleted_mid_run_fails_the_run_and_is_not_recreated(cluster: Cluster) -> None:
    """Item 4: deleting the Job by hand is JobDeleted, with a Warning event; no second Job."""
    cluster.model.faults.latency = 0.3
    try:
        assert cluster.apply(slow(cluster, "lost-job")).status_code == 201
        ev = cluster.wait_phase("lost-job", "Running", timeout=30)
        run = ev["status"]["jobName"]
        cluster.api.delete("batch", "v1", "jobs", NS, run, propagation_policy="Background")
        failed = cluster.wait_phase("lost-job", "Failed", timeout=30)
    finally:
        cluster.model.faults.latency = 0.0
    assert ready(failed)["reason"] == "JobDeleted"
    assert "evals.io/rerun" in ready(failed)["message"]
    (warning,) = cluster.wait_event("lost-job", ("JobDeleted",))
    assert warning["type"] == "Warning"
    time.sleep(1.5)
    assert cluster.job_posts().count(run) == 1


def test_a_retry_spends_only_what_the_killed_attempt_left_and_both_are_counted(
    cluster: Cluster,
) -> None:
    """Item 4: under a budget, a retry's share is what earlier attempts left (the killed one
    counted from its last checkpointed termination message), and usage counts every attempt."""
    cluster.model.faults.latency = 0.2
    cluster.controller.crash_first_attempt["capped-retry"] = {0}
    requests_before = len(cluster.model.requests)
    try:
        body = manifest("capped-retry", cluster.model, budget={"maxRequests": 7})
        body["spec"]["model"]["maxConcurrency"] = 1
        body["spec"]["execution"] = {"shards": 1, "backoffLimitPerIndex": 2}
        assert cluster.apply(body).status_code == 201
        ev = cluster.wait_phase("capped-retry", "Failed", timeout=90)
    finally:
        cluster.model.faults.latency = 0.0
    run = ev["status"]["jobName"]
    attempts = [p for p in cluster.controller.pods_created if p.startswith(f"{run}-0-")]
    assert len(attempts) == 2  # the first was killed (SIGKILL, no chance to report) mid-shard
    sent = len(cluster.model.requests) - requests_before
    assert sent == 7, "both attempts together stay within the 7 requests of the budget"
    assert ev["status"]["usage"]["requests"] == sent  # the killed attempt is counted too
    assert ready(ev)["reason"] == "BudgetExceeded"
    # The ledger the retry read its share from (and, by now, the retry's own end too).
    ledger = cluster.api.get("", "v1", "configmaps", NS, f"{run}-ledger")
    assert json.loads(ledger["data"]["ledger.json"])["0"] == {
        "attempts": 2, "costUSD": "0", "requests": 7, "unknown": False,
    }  # fmt: skip


def test_a_shard_that_ends_without_a_summary_fails_the_run(cluster: Cluster) -> None:
    """Item 5: an image that exits 0 without a summary is never Succeeded or Passed."""
    body = manifest("no-summary", cluster.model)
    body["spec"]["execution"]["image"] = EXIT_ZERO_IMAGE
    assert cluster.apply(body).status_code == 201
    ev = cluster.wait_phase("no-summary", "Failed")
    assert ready(ev)["reason"] == "SummaryMissing"
    assert "ended without a shard summary" in ready(ev)["message"]
    assert condition(ev, "Passed")["status"] == "False"
    assert condition(ev, "Succeeded")["status"] == "False"


@pytest.mark.parametrize(
    ("name", "change", "reason", "text"),
    [
        (
            "bad-image",
            {"image": UNPULLABLE_PREFIX + "eval-runner:nope"},
            ("ErrImagePull", "ImagePullBackOff"),
            "unpullable.invalid/eval-runner:nope",
        ),
        (
            "nowhere",
            {"nodeSelector": {UNSCHEDULABLE_LABEL: "true"}},
            ("Unschedulable",),
            "didn't match Pod's node affinity/selector",
        ),
    ],
)
def test_stuck_runs_are_visible(
    cluster: Cluster, name: str, change: dict[str, Any], reason: tuple[str, ...], text: str
) -> None:
    """Item 7: pods that cannot start become a condition (and a Warning) within a reconcile."""
    body = manifest(name, cluster.model)
    body["spec"]["execution"].update(change)
    assert cluster.apply(body).status_code == 201
    ev = cluster.wait(name, lambda e: ready(e).get("reason") in reason, timeout=20)
    assert ev["status"]["phase"] == "Pending"
    assert text in ready(ev)["message"]
    assert condition(ev, "Progressing")["status"] == "False"
    (warning, *_) = cluster.wait_event(name, reason)
    assert warning["type"] == "Warning"


def test_a_pod_waiting_for_a_missing_volume_is_visible_and_recovers(cluster: Cluster) -> None:
    """Item 7: a CA bundle from a Secret that does not exist leaves the pod in ContainerCreating
    with no reason on the pod (only FailedMount events): past the operator's pod start timeout
    (3 s here) that is reason PodNotStarting with a Warning; creating the Secret starts the run."""
    body = manifest("no-ca", cluster.model)
    body["spec"]["model"]["caBundle"] = {"secretRef": {"name": "private-ca", "key": "ca.crt"}}
    assert cluster.apply(body).status_code == 201
    ev = cluster.wait("no-ca", lambda e: ready(e).get("reason") == "PodNotStarting", timeout=20)
    assert ev["status"]["phase"] == "Pending"
    assert "has been in ContainerCreating for" in ready(ev)["message"]
    assert "kubectl describe pod no-ca-" in ready(ev)["message"]
    (warning, *_) = cluster.wait_event("no-ca", ("PodNotStarting",))
    assert warning["type"] == "Warning"
    pem = trustme.CA().cert_pem.bytes()
    ca_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "private-ca", "namespace": NS},
        "data": {"ca.crt": base64.b64encode(pem).decode()},
    }
    cluster.api.create(ca_secret)
    ev = cluster.wait_phase("no-ca", "Succeeded")
    assert ready(ev)["reason"] == "Succeeded"


def test_a_job_the_apiserver_rejects_is_a_condition_not_a_retry_loop(cluster: Cluster) -> None:
    """Item 7: a 422 on the Job (requests above limits: the schema cannot compare them) is
    JobRejected at once, is not retried while the spec stays the same, and fixing it runs."""
    body = manifest("rejected", cluster.model)
    body["spec"]["execution"]["resources"] = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}
    assert cluster.apply(body).status_code == 201
    ev = cluster.wait("rejected", lambda e: ready(e).get("reason") == "JobRejected")
    assert ev["status"]["phase"] == "Failed"
    assert "must be less than or equal to cpu limit of 1" in ready(ev)["message"]
    (warning,) = cluster.wait_event("rejected", ("JobRejected",))
    assert warning["type"] == "Warning"
    run = ev["status"]["jobName"]
    posts = [
        r for r in cluster.operator_requests("POST") if r.path.endswith("/jobs")
        and r.body["metadata"]["name"] == run
    ]  # fmt: skip
    time.sleep(2)
    assert len([r for r in cluster.operator_requests("POST") if r.path.endswith("/jobs")
                and r.body["metadata"]["name"] == run]) == len(posts) == 1  # fmt: skip
    cluster.patch_spec("rejected", {"execution": {"resources": {"limits": {"cpu": "2"}}}})
    done = cluster.wait_phase("rejected", "Succeeded")
    assert done["status"]["observedGeneration"] == 2


def test_status_writes_carry_a_resource_version_and_kopf_writes_nothing(cluster: Cluster) -> None:
    """Item 8: a stale snapshot can never overwrite a newer status; nothing copies the spec
    into annotations (the Evaluations used above had ~1 KB specs; specs may be ~1 MB)."""
    status_writes = [
        r for r in cluster.operator_requests("PATCH") if r.path.startswith(f"/apis/{GROUP}/")
    ]
    assert status_writes
    for request in status_writes:
        assert request.path.endswith("/status"), request.path
        assert request.body["metadata"]["resourceVersion"], request.body
    for ev in cluster.api.list(GROUP, VERSION, PLURAL, NS):
        assert not ev["metadata"].get("finalizers"), ev["metadata"]
        assert not [
            a
            for a in ev["metadata"].get("annotations") or {}
            if "kopf" in a or "operator.evals.io" in a
        ]


def test_a_refused_key_fails_the_run_at_once_with_a_warning(cluster: Cluster) -> None:
    """Issue 8 item 3 in the cluster: 401s are AuthenticationFailed, not a passing run."""
    cluster.model.faults.status_for = {"What is": 401}
    try:
        assert cluster.apply(manifest("refused", cluster.model)).status_code == 201
        ev = cluster.wait_phase("refused", "Failed")
    finally:
        cluster.model.faults.status_for = {}
    assert ready(ev)["reason"] == "AuthenticationFailed"
    assert cluster.model.base_url.split("//")[1].split("/")[0] in ready(ev)["message"]
    assert condition(ev, "Passed")["status"] == "False"
    (warning,) = cluster.wait_event("refused", ("AuthenticationFailed",))
    assert warning["type"] == "Warning"
    # Permanent: no index is retried.
    run = ev["status"]["jobName"]
    assert len([p for p in cluster.controller.pods_created if p.startswith(run)]) == 2


def test_more_errored_samples_than_allowed_fail_the_run(cluster: Cluster) -> None:
    """Issue 8 item 3 in the cluster: 2 of 10 samples errored is above the default 5%."""
    cluster.model.faults.status_for = {"What is 5 + 6?": 400, "What is 15 + 16?": 400}
    try:
        assert cluster.apply(manifest("errored", cluster.model)).status_code == 201
        ev = cluster.wait_phase("errored", "Failed")
        body = manifest("tolerant", cluster.model)
        body["spec"]["execution"]["maxErroredFraction"] = "0.25"
        assert cluster.apply(body).status_code == 201
        tolerant = cluster.wait_phase("tolerant", "Succeeded")
    finally:
        cluster.model.faults.status_for = {}
    assert ready(ev)["reason"] == "TooManyErrors"
    assert ready(ev)["message"].startswith("2 of 10 finished samples errored (20.0%, never scored)")
    assert condition(ev, "Passed")["status"] == "False"
    assert ev["status"]["progress"]["failed"] == 2
    assert "2 of 10 finished samples errored" in ready(tolerant)["message"]


def test_nothing_changing_means_no_writes(cluster: Cluster) -> None:
    """Item 10: a finished Evaluation, or one waiting on a suspended Job, costs no API write."""
    assert cluster.apply(manifest("quiet", cluster.model)).status_code == 201
    cluster.wait_phase("quiet", "Succeeded")
    assert cluster.apply(manifest("quiet-held", cluster.model, suspend=True)).status_code == 201
    cluster.wait("quiet-held", lambda e: ready(e).get("reason") == "Suspended")
    time.sleep(1.5)  # the last events and status writes of both settle
    before = len(cluster.operator_requests())
    writes_before = [r for r in cluster.operator_requests() if r.method != "GET"]
    time.sleep(3)
    writes = [r for r in cluster.operator_requests()[before:] if r.method != "GET"]
    assert writes == [], [f"{r.method} {r.path}" for r in writes][:10]
    assert writes_before  # the operator did write before: the count is not vacuous


def test_a_namespace_of_suspended_evaluations_deletes_with_the_operator_stopped(
    cluster: Cluster,
) -> None:
    """Item 9: no finalizer holds an Evaluation, so nothing waits for the operator."""
    namespace = "bulk"
    cluster.api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    cluster.api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "model-key", "namespace": namespace},
            "stringData": {"api-key": "bulk"},
        }
    )
    for i in range(20):
        body = manifest(f"held-{i}", cluster.model, suspend=True)
        body["metadata"]["namespace"] = namespace
        url = f"{cluster.api.url}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        assert httpx.post(url, json=body, timeout=10).status_code == 201
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        held = cluster.api.list(GROUP, VERSION, PLURAL, namespace)
        if all((e.get("status") or {}).get("phase") == "Pending" for e in held) and len(held) == 20:
            break
        time.sleep(0.2)
    assert all(not e["metadata"].get("finalizers") for e in held)
    cluster.operator.stop()
    try:
        cluster.api.delete("", "v1", "namespaces", None, namespace)
        assert cluster.api.list(GROUP, VERSION, PLURAL, namespace) == []
        assert cluster.api.list("batch", "v1", "jobs", namespace) == []
    finally:
        cluster.operator.start()


def test_a_pod_made_by_hand_with_the_run_labels_changes_nothing(cluster: Cluster) -> None:
    """Item 11: only pods controlled by the run's Job count."""
    cluster.model.faults.latency = 0.2
    try:
        assert cluster.apply(slow(cluster, "forged")).status_code == 201
        ev = cluster.wait_phase("forged", "Running", timeout=30)
        run = ev["status"]["jobName"]
        job = cluster.api.get("batch", "v1", "jobs", NS, run)
        perfect = {
            "shard": 1, "shards": 2, "state": "done", "total": 5, "completed": 5,
            "scores": {
                "exact_match": {"n": 500, "sum": 500.0, "sumsq": 500.0},
                "close": {"n": 500, "sum": 500.0, "sumsq": 500.0},
            },
        }  # fmt: skip
        labels = dict(job["spec"]["template"]["metadata"]["labels"])
        forged = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{run}-1-forged",
                "namespace": NS,
                "labels": labels,
                "annotations": {"batch.kubernetes.io/job-completion-index": "1"},
                "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": run,
                     "uid": "00000000-0000-0000-0000-000000000000", "controller": True}
                ],
            },
            "spec": {"containers": [{"name": "runner", "image": "x"}]},
        }  # fmt: skip
        cluster.api.create(forged)
        cluster.api.patch_status(
            "",
            "v1",
            "pods",
            NS,
            forged["metadata"]["name"],
            {
                "phase": "Succeeded",
                "containerStatuses": [
                    {
                        "name": "runner", "ready": False, "restartCount": 0, "image": "x",
                        "imageID": "",
                        "state": {"terminated": {"exitCode": 0, "message": json.dumps(perfect)}},
                    }
                ],
            },
        )  # fmt: skip
        done = cluster.wait_phase("forged", "Succeeded")
    finally:
        cluster.model.faults.latency = 0.0
    results = {r["name"]: r for r in done["status"]["results"]}
    assert results["exact_match"]["n"] == 10 and results["exact_match"]["value"] == 0.8


def test_probe_requests_are_not_logged(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """Item 13: a liveness probe every few seconds must not flood the log at INFO."""
    caplog.set_level(logging.INFO)
    url = f"http://127.0.0.1:{PROBE_PORT}/healthz"
    answered, deadline = 0, time.monotonic() + 20
    while answered < 5 and time.monotonic() < deadline:
        try:
            answered += httpx.get(url, timeout=5).status_code == 200
        except httpx.ConnectError:
            time.sleep(0.2)  # kopf serves the probe once its start-up handlers are done
    assert answered == 5
    assert any(r.name.startswith("kopf") for r in caplog.records)  # the log is captured
    assert not [r for r in caplog.records if r.name == "aiohttp.access"]
