"""An EvalSuite's stack with the real operator, against the API emulator, with real PostgreSQL
and Redis servers standing in for its StatefulSet and Deployment (tests/support/
stack_controller.py) and runner pods as real processes that reach them by their Services'
names. Every object the operator makes is checked by kubernetes-validate --strict.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest

from tests.support.model_server import Faults, ModelServer
from tests.support.operator_cluster import (
    NS,
    RECORDS,
    Cluster,
    condition,
    manifest,
    running_cluster,
)
from tests.support.suites import reason, secret_value, store_rows, suite_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SUITE = "stack"
SAMPLES = len(RECORDS)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # A little latency per answer, so that a run is long enough to be hit mid-shard.
    model = ModelServer(wrong=[], faults=Faults(latency=0.05))
    with running_cluster(tmp_path_factory.mktemp("suite"), stack=True, model=model) as cluster:
        cluster.apply(suite_manifest(SUITE)).raise_for_status()
        cluster.wait_suite(SUITE, ready, timeout=120)
        yield cluster


def ready(suite: dict[str, Any]) -> bool:
    status = suite.get("status") or {}
    return status.get("observedGeneration") == suite["metadata"]["generation"] and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
    )


def in_suite(name: str, cluster: Cluster, **changes: Any) -> dict[str, Any]:
    spec_changes = {"suiteRef": {"name": SUITE}, "execution": {"shards": 2}, **changes}
    return manifest(name, cluster.model, **spec_changes)


def test_the_stack_is_made_valid_and_restricted_and_the_status_says_where(
    cluster: Cluster,
) -> None:
    suite = cluster.suite(SUITE)
    status = suite["status"]
    for type_, expected in (("StoreReady", "Ready"), ("CacheReady", "Ready"), ("Ready", "Ready")):
        assert condition(suite, type_)["status"] == "True"
        assert condition(suite, type_)["reason"] == expected
    assert status["store"]["endpoint"] == f"{SUITE}-store.{NS}.svc:5432/evals"
    assert status["store"]["schemaVersion"] >= 2
    assert status["cache"]["endpoint"] == f"{SUITE}-cache.{NS}.svc:6379"
    password = secret_value(cluster, f"{SUITE}-store-credentials", "password")
    kinds = {
        ("apps", "v1", "statefulsets"),
        ("apps", "v1", "deployments"),
        ("", "v1", "services"),
        ("", "v1", "configmaps"),
        ("", "v1", "secrets"),
        ("", "v1", "persistentvolumeclaims"),
        ("batch", "v1", "cronjobs"),
        ("batch", "v1", "jobs"),
    }
    made = []
    for group, version, plural in kinds:
        for obj in cluster.api.list(group, version, plural, NS, label_selector="evals.io/suite"):
            made.append((obj["kind"], obj["metadata"]["name"]))
            body = {k: v for k, v in obj.items() if k != "status"}
            body["metadata"] = {
                k: v
                for k, v in obj["metadata"].items()
                if k in ("name", "namespace", "labels", "annotations", "ownerReferences")
            }
            kubernetes_validate.validate(body, "1.30", strict=True)
            if obj["kind"] != "Secret":
                assert password not in str(obj), obj["kind"]
    assert {k for k, _ in made} >= {
        "StatefulSet",
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
        "CronJob",
        "Job",
    }
    assert password not in str(status)


def test_an_evaluation_in_the_suite_stores_every_sample(cluster: Cluster) -> None:
    before = cluster.model.count
    cluster.apply(in_suite("stored", cluster)).raise_for_status()
    ev = cluster.wait_phase("stored", "Succeeded", timeout=120)
    assert cluster.model.count - before == SAMPLES
    rows = store_rows(
        cluster,
        SUITE,
        "SELECT sample_id, scores, response FROM samples WHERE evaluation_uid = $1",
        ev["metadata"]["uid"],
    )
    assert sorted(r["sample_id"] for r in rows) == list(range(SAMPLES))
    assert all(r["response"] for r in rows)
    results = {r["name"]: r for r in ev["status"]["results"]}
    assert results["exact_match"]["n"] == SAMPLES
    assert condition(ev, "CacheAvailable")["status"] == "True"
    # The pods had the credentials by reference only.
    job = cluster.api.get("batch", "v1", "jobs", NS, ev["status"]["jobName"])
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("EVAL_STORE_PASSWORD", "EVAL_CACHE_URL"):
        assert "value" not in env[name] and "secretKeyRef" in env[name]["valueFrom"]


@pytest.mark.parametrize(
    ("reuse", "asked", "hits"), [("WithinRun", SAMPLES, 0), ("AcrossRuns", 0, SAMPLES)]
)
def test_a_rerun_asks_the_model_again_unless_answers_are_reused_across_runs(
    cluster: Cluster, reuse: str, asked: int, hits: int
) -> None:
    """The cache's contract: a re-run is a new run (a new Job, EVAL_RUN): by default it
    measures the model again; with execution.cache.reuse AcrossRuns it asks nothing."""
    name = f"rerun-{reuse.lower()}"
    execution = {"shards": 2, "cache": {"reuse": reuse}}
    cluster.apply(in_suite(name, cluster, execution=execution)).raise_for_status()
    first = cluster.wait_phase(name, "Succeeded", timeout=120)
    assert first["status"]["usage"]["cacheHits"] == 0
    before = cluster.model.count
    cluster.annotate(name, {"evals.io/rerun": "again"})
    again = cluster.wait(
        name,
        lambda ev: (
            ev["status"].get("rerunToken") == "again" and ev["status"].get("phase") == "Succeeded"
        ),
        timeout=120,
    )
    assert cluster.model.count - before == asked
    assert again["status"]["results"] == first["status"]["results"]
    assert again["status"]["usage"]["cacheHits"] == hits
    assert again["status"]["usage"]["requests"] == asked


@pytest.mark.parametrize("seed", [9, 23, 2026])
def test_kill_9_mid_shard_repeats_no_model_request(cluster: Cluster, seed: int) -> None:
    """A runner pod killed at random points, several times: the retries ask only for what is
    not stored, and the results are a clean run's. (A kill comes when the model server holds
    the next requests and the store has every answer so far: the writer is at most ~1 s
    behind, and a request in flight at a kill is asked again by the retry.)"""
    rng = random.Random(seed)
    name = f"killed-{seed}"
    # Questions of its own: the cache (warm from other tests) must not answer them.
    records = [{"question": f"What is {i} + {seed}?", "answer": str(i + seed)} for i in range(60)]
    spec = {
        "dataset": {"inline": records, "inputField": "question", "targetField": "answer"},
        "execution": {"shards": 1, "backoffLimitPerIndex": 6},
    }
    model = cluster.model
    start = model.count
    kills = []
    model.hold_after = start + rng.randint(5, 15)
    cluster.apply(in_suite(name, cluster, **spec)).raise_for_status()
    uid = cluster.wait(name, lambda ev: bool(ev.get("status", {}).get("jobName")))["metadata"][
        "uid"
    ]
    job = cluster.evaluation(name)["status"]["jobName"]
    try:
        for _ in range(3):
            held_at = model.hold_after
            deadline = time.monotonic() + 60
            # The run reaches the kill point: every answer so far is stored (the writer is at most
            # ~1 s behind), the next requests are held by the model server.
            while time.monotonic() < deadline:
                stored = store_rows(
                    cluster,
                    SUITE,
                    "SELECT count(*) AS n FROM samples WHERE evaluation_uid = $1",
                    uid,
                )[0]["n"]
                if model.count == held_at and stored == held_at - start:
                    break
                time.sleep(0.1)
            else:
                pods = sorted(cluster.controller.pods_created)
                raise AssertionError(
                    f"the run did not reach {held_at - start} stored samples: model count "
                    f"{model.count - start}, stored {stored}, kills {kills}, pods {pods}"
                )
            pods_before = len(cluster.controller.pods_created)
            assert cluster.controller.kill(NS, job, 0)
            kills.append(held_at - start)
            # The killed pod's held requests are dropped unanswered (their client is gone) before
            # the model server lets requests through again: only the retry's are answered.
            deadline = time.monotonic() + 30
            while len(cluster.controller.pods_created) == pods_before:
                assert time.monotonic() < deadline, "no retry"
                time.sleep(0.05)
            time.sleep(0.5)
            model.hold_after = held_at + rng.randint(5, 15)
    finally:
        # Never left holding: the next tests need the model server.
        model.hold_after = None
    ev = cluster.wait_phase(name, "Succeeded", timeout=120)
    assert model.count - start == len(records), (kills, model.count - start)
    rows = store_rows(
        cluster,
        SUITE,
        "SELECT count(*) AS n, count(DISTINCT sample_id) AS d, max(attempt) AS a "
        "FROM samples WHERE evaluation_uid = $1",
        uid,
    )[0]
    assert rows["n"] == rows["d"] == len(records)
    assert rows["a"] >= 2
    results = {r["name"]: r for r in ev["status"]["results"]}
    assert results["exact_match"]["n"] == len(records)
    assert results["exact_match"]["value"] == 1.0


def test_an_evaluation_waits_for_its_suite_and_names_a_missing_one(cluster: Cluster) -> None:
    missing = manifest("lost", cluster.model, suiteRef={"name": "no-such-suite"})
    cluster.apply(missing).raise_for_status()
    ev = cluster.wait("lost", lambda ev: reason(ev, "Ready") == "SuiteNotFound", timeout=30)
    assert "no-such-suite" in condition(ev, "Ready")["message"]
    assert ev["status"].get("jobName") is None or not cluster.api.get(
        "batch", "v1", "jobs", NS, ev["status"]["jobName"]
    )
    # The suite appears: the Evaluation starts without being touched.
    cluster.apply(suite_manifest("no-such-suite", {"cache": {"mode": "Disabled"}}))
    cluster.wait_phase("lost", "Succeeded", timeout=180)
    suite = cluster.suite("no-such-suite")
    assert condition(suite, "CacheReady")["reason"] == "Disabled"
