"""The Evaluation's main paths with the real operator, runner processes and the API emulator
(tests/support/operator_cluster.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from eval_operator.builders.meta import run_name
from tests.support.operator_cluster import (
    API_KEY,
    GROUP,
    NS,
    PLURAL,
    RECORDS,
    VERSION,
    Cluster,
    condition,
    manifest,
    running_cluster,
    secret,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


# --- the main path ----------------------------------------------------------------------------


def test_evaluation_runs_to_succeeded_with_exact_results(cluster: Cluster) -> None:
    requests_before = len(cluster.model.requests)
    assert cluster.apply(manifest("happy", cluster.model)).status_code == 201

    ev = cluster.wait_phase("happy", "Succeeded")
    status = ev["status"]
    # 10 samples, 2 answered off by one: exact_match 8/10; numeric with tolerance 1: 10/10.
    results = {r["name"]: r for r in status["results"]}
    assert [r["name"] for r in status["results"]] == ["exact_match", "close"]
    assert results["exact_match"]["value"] == pytest.approx(0.8)
    assert results["exact_match"]["n"] == 10
    assert results["exact_match"]["stderr"] == pytest.approx((0.8 * 0.2 / 9) ** 0.5, abs=1e-6)
    assert results["close"]["value"] == 1.0
    assert results["close"]["ci95"] == [0.722467, 1.0]  # Wilson: 10 of 10 is not certainty
    assert status["progress"] == {"total": 10, "completed": 10, "failed": 0, "summary": "10/10"}
    # Usage is what the provider reported, summed over shards.
    model_requests = cluster.model.requests[requests_before:]
    assert status["usage"]["requests"] == len(model_requests) == 10
    assert status["usage"]["inputTokens"] == sum(
        len(r.body["messages"][-1]["content"].split()) for r in model_requests
    )
    assert status["usage"]["outputTokens"] == 10
    # The key reached the model server through the Secret, and only there.
    assert {r.headers["Authorization"] for r in model_requests} == {f"Bearer {API_KEY}"}
    assert API_KEY not in json.dumps(ev)

    assert condition(ev, "Ready")["status"] == "True"
    assert condition(ev, "Succeeded")["status"] == "True"
    passed = condition(ev, "Passed")
    assert (passed["status"], passed["reason"]) == ("True", "ThresholdsMet")
    assert all(
        c["observedGeneration"] == ev["metadata"]["generation"] for c in status["conditions"]
    )
    assert status["observedGeneration"] == ev["metadata"]["generation"]
    assert status["startTime"] and status["completionTime"]

    run = run_name("happy", ev["metadata"]["uid"], None)
    assert status["jobName"] == run
    job = cluster.api.get("batch", "v1", "jobs", NS, run)
    assert job["metadata"]["ownerReferences"][0]["uid"] == ev["metadata"]["uid"]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    assert cluster.job_posts().count(run) == 1
    (config_map,) = cluster.api.list(
        "", "v1", "configmaps", NS, label_selector=f"evals.io/run={run}"
    )
    assert API_KEY not in json.dumps(config_map)


def test_progress_is_visible_while_running(cluster: Cluster) -> None:
    cluster.model.faults.latency = 0.15
    try:
        records = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(40)]
        body = manifest(
            "slow",
            cluster.model,
            dataset={"inline": records, "inputField": "question", "targetField": "answer"},
        )
        body["spec"]["model"]["maxConcurrency"] = 1
        body["spec"]["execution"] = {"shards": 1}
        assert cluster.apply(body).status_code == 201
        mid = cluster.wait(
            "slow",
            lambda ev: (
                ev.get("status", {}).get("phase") == "Running"
                and 0 < ev["status"].get("progress", {}).get("completed", 0) < 40
            ),
            timeout=30,
        )
        assert mid["status"]["progress"]["total"] == 40
        assert condition(mid, "Progressing")["status"] == "True"
        assert condition(mid, "Ready")["reason"] == "Running"
        assert condition(mid, "Passed")["status"] == "Unknown"
        # Partial results are already there, computed from the live shard summary.
        assert mid["status"]["results"][0]["n"] == mid["status"]["progress"]["completed"]
    finally:
        cluster.model.faults.latency = 0.0
    done = cluster.wait_phase("slow", "Succeeded")
    assert done["status"]["progress"]["completed"] == 40


def test_a_crashed_index_is_retried_and_results_are_unchanged(cluster: Cluster) -> None:
    cluster.model.faults.latency = 0.15
    cluster.controller.crash_first_attempt["retry"] = {1}
    try:
        body = manifest("retry", cluster.model)
        body["spec"]["model"]["maxConcurrency"] = 1  # slow enough to be killed mid-shard
        assert cluster.apply(body).status_code == 201
        ev = cluster.wait_phase("retry", "Succeeded")
    finally:
        cluster.model.faults.latency = 0.0
    run = ev["status"]["jobName"]
    attempts = [p for p in cluster.controller.pods_created if p.startswith(f"{run}-1-")]
    assert len(attempts) == 2  # index 1 crashed once and was retried
    assert len([p for p in cluster.controller.pods_created if p.startswith(f"{run}-0-")]) == 1
    results = {r["name"]: r for r in ev["status"]["results"]}
    # The retry repeats only its index, and only its last attempt counts.
    assert (
        results["exact_match"]["value"] == pytest.approx(0.8) and results["exact_match"]["n"] == 10
    )
    assert ev["status"]["progress"]["completed"] == 10
    job = cluster.api.get("batch", "v1", "jobs", NS, run)
    assert job["status"]["failed"] == 1 and job["status"]["completedIndexes"] == "0-1"


# --- bad input ----------------------------------------------------------------------------------


def test_invalid_manifest_is_rejected_at_apply(cluster: Cluster) -> None:
    body = manifest("bad", cluster.model, dataset={"builtin": "arithmetic", "inline": RECORDS})
    response = cluster.apply(body)
    assert response.status_code == 422
    assert (
        "exactly one of builtin, configMapRef, inline, url or huggingface must be set"
        in response.json()["message"]
    )
    assert cluster.evaluation("bad") is None


def test_missing_secret_is_reported_and_recovers_when_created(cluster: Cluster) -> None:
    body = manifest("needs-key", cluster.model)
    body["spec"]["model"]["apiKeySecretRef"] = {"name": "late-key", "key": "api-key"}
    assert cluster.apply(body).status_code == 201
    ev = cluster.wait(
        "needs-key",
        lambda e: (
            e.get("status", {}).get("conditions") is not None
            and condition(e, "Ready")["reason"] == "SecretNotFound"
        ),
    )
    # The operator cannot read Secrets: the pods' CreateContainerConfigError tells it.
    assert ev["status"]["phase"] == "Pending"
    assert 'secret "late-key" not found' in condition(ev, "Ready")["message"]

    assert cluster.apply(secret("late-key")).status_code == 201
    done = cluster.wait_phase("needs-key", "Succeeded")
    assert condition(done, "Passed")["status"] == "True"


def test_missing_dataset_configmap_then_created(cluster: Cluster) -> None:
    body = manifest(
        "from-cm",
        cluster.model,
        dataset={
            "configMapRef": {"name": "qa", "key": "qa.jsonl"},
            "inputField": "question",
            "targetField": "answer",
        },
    )
    assert cluster.apply(body).status_code == 201
    cluster.wait(
        "from-cm",
        lambda e: (
            e.get("status", {}).get("conditions") is not None
            and condition(e, "Ready")["reason"] == "ConfigMapNotFound"
        ),
    )
    data = "\n".join(json.dumps(r) for r in RECORDS[:4])
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "qa", "namespace": NS},
        "data": {"qa.jsonl": data},
    }
    assert cluster.apply(cm).status_code == 201
    done = cluster.wait_phase("from-cm", "Succeeded")
    assert done["status"]["progress"]["total"] == 4
    assert {r["name"]: r["n"] for r in done["status"]["results"]} == {"exact_match": 4, "close": 4}


def test_checksum_mismatch_fails_without_retries(cluster: Cluster) -> None:
    cluster.model.files["data.jsonl"] = "\n".join(json.dumps(r) for r in RECORDS).encode()
    body = manifest(
        "bad-sum",
        cluster.model,
        dataset={
            "url": cluster.model.url("/files/data.jsonl"),
            "sha256": "0" * 64,
            "inputField": "question",
            "targetField": "answer",
        },
    )
    body["spec"]["execution"] = {"shards": 1, "backoffLimitPerIndex": 3}
    assert cluster.apply(body).status_code == 201
    ev = cluster.wait_phase("bad-sum", "Failed")
    ready = condition(ev, "Ready")
    assert ready["reason"] == "DatasetChecksumMismatch"
    assert ready["message"].startswith("shard 0:")
    assert condition(ev, "Stalled")["status"] == "True"
    assert condition(ev, "Passed")["status"] == "False"
    run = ev["status"]["jobName"]
    assert len([p for p in cluster.controller.pods_created if p.startswith(run)]) == 1


# --- lifecycle ----------------------------------------------------------------------------------


def test_suspend_holds_the_run_until_resumed(cluster: Cluster) -> None:
    assert cluster.apply(manifest("held", cluster.model, suspend=True)).status_code == 201
    ev = cluster.wait(
        "held",
        lambda e: (
            e.get("status", {}).get("conditions") is not None
            and condition(e, "Progressing")["reason"] == "Suspended"
        ),
    )
    assert ev["status"]["phase"] == "Pending"
    job = cluster.api.get("batch", "v1", "jobs", NS, ev["status"]["jobName"])
    assert job["spec"]["suspend"] is True
    time.sleep(1.0)
    assert not [p for p in cluster.controller.pods_created if p.startswith(ev["status"]["jobName"])]

    cluster.patch_spec("held", {"suspend": False})
    done = cluster.wait_phase("held", "Succeeded")
    assert done["status"]["results"][0]["n"] == 10


def test_rerun_annotation_and_spec_changes(cluster: Cluster) -> None:
    assert cluster.apply(manifest("again", cluster.model)).status_code == 201
    first = cluster.wait_phase("again", "Succeeded")
    first_run = first["status"]["jobName"]

    # A spec change on a finished Evaluation does not re-run it; the message says how to.
    cluster.patch_spec("again", {"thresholds": ["exact_match >= 0.9"]})
    changed = cluster.wait(
        "again", lambda e: e["status"]["observedGeneration"] == e["metadata"]["generation"] == 2
    )
    assert changed["status"]["jobName"] == first_run
    assert changed["status"]["phase"] == "Succeeded"
    assert "evals.io/rerun" in condition(changed, "Ready")["message"]
    assert cluster.job_posts().count(first_run) == 1

    cluster.annotate("again", {"evals.io/rerun": "1"})
    second = cluster.wait(
        "again",
        lambda e: e["status"].get("rerunToken") == "1" and e["status"].get("phase") == "Succeeded",
        timeout=60,
    )
    assert second["status"]["jobName"] != first_run
    assert second["status"]["runGeneration"] == 2
    # The new run is judged by the new threshold: 0.8 < 0.9.
    assert condition(second, "Passed")["status"] == "False"
    assert cluster.api.get("batch", "v1", "jobs", NS, first_run) is None
    assert "evals.io/rerun" not in condition(second, "Ready")["message"]


def test_cancel_stops_the_run(cluster: Cluster) -> None:
    cluster.model.faults.latency = 0.2
    try:
        body = manifest("stop-me", cluster.model)
        body["spec"]["model"]["maxConcurrency"] = 1
        assert cluster.apply(body).status_code == 201
        cluster.wait_phase("stop-me", "Running", timeout=30)
        cluster.patch_spec("stop-me", {"cancel": True})
        ev = cluster.wait_phase("stop-me", "Failed", timeout=30)
    finally:
        cluster.model.faults.latency = 0.0
    assert condition(ev, "Ready")["reason"] == "Cancelled"
    cluster.api.wait_for(
        "batch", "v1", "jobs", NS, ev["status"]["jobName"], lambda job: job is None
    )


def test_deleting_an_evaluation_removes_its_job_and_config(cluster: Cluster) -> None:
    assert cluster.apply(manifest("short-lived", cluster.model)).status_code == 201
    ev = cluster.wait_phase("short-lived", "Succeeded")
    run = ev["status"]["jobName"]
    assert cluster.api.get("batch", "v1", "jobs", NS, run) is not None
    # No finalizer holds the Evaluation: owner references let the garbage collector work.
    assert not ev["metadata"].get("finalizers")
    cluster.api.delete(GROUP, VERSION, PLURAL, NS, "short-lived")
    assert cluster.evaluation("short-lived") is None
    assert cluster.api.get("batch", "v1", "jobs", NS, run) is None
    assert cluster.api.list("", "v1", "configmaps", NS, label_selector=f"evals.io/run={run}") == []
    assert cluster.api.list("", "v1", "pods", NS, label_selector=f"evals.io/run={run}") == []


def test_budget_stops_a_sharded_run_with_budget_exceeded_and_keeps_its_results(
    cluster: Cluster,
) -> None:
    requests_before = len(cluster.model.requests)
    body = manifest("capped", cluster.model, budget={"maxCostUSD": "110"})
    model = body["spec"]["model"]
    # $1 a token. A request's worst case is its prompt's bytes + 8 + 16 input tokens and 4
    # output: $42 for "What is 1 + 2?", $44 for "What is 11 + 12?"; each really costs 5 + 1 =
    # $6. Each shard's share is $55. Shard 0 sends 3 requests ($0 + 42, 6 + 42, 12 + 43 <= 55;
    # 18 + 44 > 55) and shard 1 sends 2 (12 + 44 > 55): 5 samples, $30.
    model["pricing"] = {"inputPerMillionUSD": "1000000", "outputPerMillionUSD": "1000000"}
    model["parameters"] = {"maxTokens": 4}
    model["maxConcurrency"] = 1
    assert cluster.apply(body).status_code == 201
    ev = cluster.wait_phase("capped", "Failed")
    status = ev["status"]
    ready = condition(ev, "Ready")
    assert ready["reason"] == "BudgetExceeded"
    assert ready["message"] == (
        "shard 0: stopped at the shard's share of the budget: spent $18 of $55 (the next "
        "request could cost up to $44); 3 of 5 samples finished, results so far kept"
    )
    # Never overspent, and the results so far are kept.
    assert status["usage"]["costUSD"] == "30"
    assert len(cluster.model.requests) - requests_before == status["usage"]["requests"] == 5
    assert status["progress"] == {"total": 10, "completed": 5, "failed": 0, "summary": "5/10"}
    assert {r["name"]: r["n"] for r in status["results"]} == {"exact_match": 5, "close": 5}
    assert condition(ev, "Passed")["status"] == "False"
    # BudgetExceeded is permanent (exit code 3): no index is retried.
    run = status["jobName"]
    assert len([p for p in cluster.controller.pods_created if p.startswith(run)]) == 2
    assert API_KEY not in json.dumps(ev)


def test_operator_restart_creates_no_second_job_and_keeps_status(cluster: Cluster) -> None:
    """Runs last in the module: it stops and starts the operator."""
    before = {name: cluster.evaluation(name)["status"] for name in ("happy", "again")}
    posts_before = cluster.job_posts()
    cluster.operator.stop()
    cluster.operator.start()
    # kopf resumes every Evaluation on start; give it time to do so and to settle.
    time.sleep(3)
    for name, status in before.items():
        after = cluster.evaluation(name)["status"]
        assert after["jobName"] == status["jobName"]
        assert after["results"] == status["results"]
        assert after["phase"] == status["phase"]
        assert [c["lastTransitionTime"] for c in after["conditions"]] == [
            c["lastTransitionTime"] for c in status["conditions"]
        ]
    assert cluster.job_posts() == posts_before
