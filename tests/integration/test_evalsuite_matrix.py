"""An EvalSuite's matrix with the real operator, against the API emulator, with a real
PostgreSQL store (tests/support/stack_controller.py) and runner pods as real processes.

A 3 x 2 matrix runs twice; between the runs the model server starts answering one model wrong
on a known subset of one task. The second run is compared sample by sample with the first
(baseline previous): exactly that cell regresses, with the p-value scipy computes from the
stored rows, and a small drop of another cell that the test cannot tell from noise does not.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from scipy import stats

from eval_operator import kubectl_plugin
from eval_runner.compare import mcnemar_margin_p
from tests.support.model_server import Faults, ModelServer
from tests.support.operator_cluster import (
    GROUP,
    NS,
    RECORDS,
    VERSION,
    Cluster,
    condition,
    running_cluster,
)
from tests.support.suites import store_rows, suite_manifest
from tests.support.tools import tool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SUITE = "grid"
MODELS = ("small", "medium", "large")
BIG_RECORDS = [
    {"question": f"What is {200 + i} + {i}?", "answer": str(200 + 2 * i)} for i in range(10)
]
# In the second run "large" answers 8 of the 10 sums wrong: a drop of 0.8, p = 2 / 2^8.
LARGE_WRONG = [r["question"] for r in RECORDS[:8]]
# ... and "medium" one of them: a drop of 0.1 that 10 samples cannot tell from noise.
MEDIUM_WRONG = [RECORDS[9]["question"]]


def model(name: str, server: ModelServer) -> dict[str, Any]:
    return {
        "name": name,
        "model": {
            "name": name,
            "baseURL": server.base_url,
            "apiKeySecretRef": {"name": "model-key", "key": "api-key"},
            "maxConcurrency": 4,
        },
    }


def task(name: str, records: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": {"inline": records, "inputField": "question", "targetField": "answer"},
        "task": {"scorers": [{"type": "exact_match"}]},
        "thresholds": ["exact_match >= 0.5"],
    }


def grid_spec(server: ModelServer, models: tuple[str, ...] = MODELS) -> dict[str, Any]:
    return {
        # No cache: the second run must ask the model again.
        "cache": {"mode": "Disabled"},
        "models": [model(m, server) for m in models],
        "tasks": [task("sums", RECORDS), task("big", BIG_RECORDS)],
        "defaults": {"execution": {"shards": 2}},
        "baseline": "previous",
        "regression": {"maxDrop": "0.05", "alpha": "0.05"},
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    server = ModelServer(wrong=[], faults=Faults(latency=0.01))
    with running_cluster(tmp_path_factory.mktemp("matrix"), stack=True, model=server) as cluster:
        yield cluster


def run_finished(run_id: str | None = None):
    def check(suite: dict[str, Any]) -> bool:
        current = (suite.get("status") or {}).get("currentRun") or {}
        if run_id is not None and current.get("id") == run_id:
            return False
        return bool(current.get("completionTime"))

    return check


def cells(cluster: Cluster, suite: str) -> dict[str, dict[str, Any]]:
    found = cluster.api.list(
        GROUP, VERSION, "evaluations", NS, label_selector=f"evals.io/suite={suite}"
    )
    return {c["metadata"]["name"]: c for c in found}


def entry(suite: dict[str, Any], task_name: str, model_name: str) -> dict[str, Any]:
    board = next(b for b in suite["status"]["leaderboard"] if b["task"] == task_name)
    return next(e for e in board["entries"] if e["model"] == model_name)


def test_a_matrix_runs_compares_with_its_baseline_and_names_the_regressed_cell(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.apply(suite_manifest(SUITE, grid_spec(cluster.model))).raise_for_status()
    first = cluster.wait_suite(SUITE, run_finished(), timeout=240)
    status = first["status"]
    children = cells(cluster, SUITE)
    assert sorted(children) == sorted(f"{SUITE}-{m}-{t}" for m in MODELS for t in ("sums", "big"))
    for name, child in children.items():
        labels = child["metadata"]["labels"]
        assert name == f"{SUITE}-{labels['evals.io/model']}-{labels['evals.io/task']}"
        assert child["spec"]["suiteRef"] == {"name": SUITE}
        assert child["spec"]["execution"]["shards"] == 2
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["kind"] == "EvalSuite" and owner["uid"] == first["metadata"]["uid"]
        assert child["metadata"]["annotations"]["evals.io/rerun"] == status["currentRun"]["id"]
    assert status["matrix"] == {
        "models": 3, "tasks": 2, "cells": 6, "waiting": 0, "pending": 0, "running": 0,
        "succeeded": 6, "failed": 0, "done": "6/6", "regressed": 0,
    }  # fmt: skip
    for board in status["leaderboard"]:
        assert board["best"] == "small"  # all score 1.0: the first wins ties
        for e in board["entries"]:
            assert e["phase"] == "Succeeded" and e["score"] == 1.0 and e["n"] == 10
            assert e["passed"] is True
            assert 0 < e["latencyP50Ms"] <= e["latencyP95Ms"]
            assert e["comparison"]["reason"] == "NoBaseline"
    assert condition(first, "Passed")["status"] == "True"
    assert condition(first, "Regressed")["reason"] == "NoBaseline"
    assert [h["id"] for h in status["history"]] == [status["currentRun"]["id"]]
    # Every run is in the store as its cell's succeeded run of this suite run.
    stored = store_rows(
        cluster, SUITE, "SELECT cell, suite_run FROM runs WHERE succeeded_at IS NOT NULL"
    )
    assert sorted(r["cell"] for r in stored) == sorted(
        f"{m}/{t}" for m in MODELS for t in ("sums", "big")
    )
    assert {r["suite_run"] for r in stored} == {status["currentRun"]["id"]}
    # The report Jobs are deleted once their reports are in the status.
    deadline = time.monotonic() + 10
    while cluster.api.list(
        "batch", "v1", "jobs", NS, label_selector="app.kubernetes.io/component=cell-report"
    ):
        assert time.monotonic() < deadline, "report Jobs left behind"
        time.sleep(0.2)

    # The second run, with "large" worse on 8 of the sums and "medium" on one.
    cluster.model.wrong_for = {"large": LARGE_WRONG, "medium": MEDIUM_WRONG}
    first_id = status["currentRun"]["id"]
    time.sleep(1.0)  # suite run ids have a resolution of one second
    cluster.api.patch(
        GROUP,
        VERSION,
        "evalsuites",
        NS,
        SUITE,
        {"metadata": {"annotations": {"evals.io/rerun": "2"}}},
    )
    second = cluster.wait_suite(SUITE, run_finished(first_id), timeout=240)
    status = second["status"]
    regressed = condition(second, "Regressed")
    assert regressed["status"] == "True", regressed
    verdict, power_note = regressed["message"].split("; ", 1)
    assert verdict.endswith(": large/sums"), verdict
    assert "too small to detect" in power_note
    assert status["matrix"]["regressed"] == 1
    assert status["currentRun"]["regressed"] == ["large/sums"]
    assert condition(second, "Passed")["status"] == "False"
    assert condition(second, "Passed")["reason"] == "Regressed"
    assert [h["id"] for h in status["history"]] == [status["currentRun"]["id"], first_id]
    assert status["history"][1]["passed"] is True and status["history"][0]["passed"] is False

    large = entry(second, "sums", "large")["comparison"]
    assert large["reason"] == "Compared" and large["baseline"] == first_id and large["regressed"]
    (scorer,) = large["scorers"]
    assert scorer["test"] == "mcnemar-exact" and scorer["pairs"] == 10 and scorer["excluded"] == 0

    # The same numbers from the stored rows, with scipy directly.
    def scores(run: str) -> dict[str, float]:
        rows = store_rows(
            cluster,
            SUITE,
            "SELECT input_hash, scores FROM samples WHERE run = $1",
            run,
        )
        return {r["input_hash"]: json.loads(r["scores"])["exact_match"] for r in rows}

    base, cand = scores(large["baselineRun"]), scores(entry(second, "sums", "large")["run"])
    assert base.keys() == cand.keys() and len(base) == 10
    worse = sum(1 for k in base if base[k] == 1.0 and cand[k] == 0.0)
    better = sum(1 for k in base if base[k] == 0.0 and cand[k] == 1.0)
    # One-sided at the margin: McNemar's exact test, and Tango's score test (checked against
    # scipy in tests/unit/test_compare.py); never below the exact test.
    expected_p = mcnemar_margin_p(worse, better, len(base), 0.05)
    assert expected_p >= stats.binomtest(worse, worse + better, alternative="greater").pvalue
    expected_difference = sum(cand[k] - base[k] for k in base) / len(base)
    assert (worse, better) == (8, 0)
    assert abs(scorer["pValue"] - expected_p) < 1e-9
    assert abs(scorer["difference"] - expected_difference) < 1e-9
    assert scorer["ci95"][0] <= expected_difference <= scorer["ci95"][1]

    medium = entry(second, "sums", "medium")["comparison"]
    (small_drop,) = medium["scorers"]
    assert abs(small_drop["difference"] - (-0.1)) < 1e-9
    assert small_drop["pValue"] == mcnemar_margin_p(1, 0, 10, 0.05)
    assert not small_drop["regressed"] and not medium["regressed"]
    # Ten samples cannot detect a drop of twice 0.05: the status says so.
    assert medium["underpowered"] and small_drop["minDetectableEffect"] > 0.1
    # The suite's dashboard (its Deployment run by the stand-in kubelet, logged in as the
    # read-only role the migration made) ranks the same runs with the same numbers.
    assert condition(second, "DashboardReady")["status"] == "True"
    assert status["dashboard"]["url"] == f"http://{SUITE}-dashboard.{NS}.svc:80"
    dashboard = cluster.stack.dashboard(NS, f"{SUITE}-dashboard")
    base_url = f"http://{dashboard.host}:{dashboard.port}"
    board = httpx.get(f"{base_url}/api/v1/suites/{NS}/{SUITE}/leaderboard", timeout=30).json()
    for task in board["tasks"]:
        for shown in task["entries"]:
            expected = entry(second, task["task"], shown["model"])
            assert shown["run"] == expected["run"]
            assert shown["score"] == pytest.approx(expected["score"])
            assert shown["ci95"] == pytest.approx(expected["ci95"])
            assert shown["n"] == expected["n"]
            assert shown["latencyP95Ms"] == pytest.approx(expected["latencyP95Ms"], abs=0.01)
        top = [e["score"] for e in task["entries"][:2]]
        if top[0] > top[1]:  # a tie is broken differently (the status: spec order)
            assert task["best"] == next(
                b["best"] for b in status["leaderboard"] if b["task"] == task["task"]
            )
    ready = httpx.get(f"{base_url}/readyz", timeout=30).json()
    assert ready["components"]["store"]["status"] == "ok"
    assert ready["components"]["cache"]["status"] == "disabled"  # the suite has none
    # Kept for people (the README's figures, a closing note): $TEST_ARTIFACTS or the tmp dir.
    artifacts = Path(os.environ.get("TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "evalsuite-3x2-status.json").write_text(json.dumps(status, indent=1))


def plugin(cluster: Cluster, tmp_path: Path, *args: str) -> tuple[int, str]:
    """`kubectl evals ...` as a user runs it: through the real kubectl, with their kubeconfig."""
    kubeconfig = cluster.api.write_kubeconfig(tmp_path / "user-kubeconfig", token="a-user")
    out = io.StringIO()
    with mock.patch.dict(os.environ, {"KUBECTL": tool("kubectl")}):
        code = kubectl_plugin.main([*args, "--kubeconfig", str(kubeconfig)], out)
    return code, out.getvalue()


def test_the_plugin_shows_the_leaderboard_the_history_and_a_paired_test(
    cluster: Cluster, tmp_path: Path
) -> None:
    suite = cluster.suite(SUITE)
    assert suite is not None
    code, text = plugin(cluster, tmp_path, "suite", SUITE)
    assert code == 1, text  # the last run regressed: CI fails on it
    lines = text.splitlines()
    assert "regressed: True (Regression)" in text
    large = next(line for line in lines if line.split()[:2] == ["large", "Succeeded"])
    assert large.split()[-1] == "yes" and "-0.8000" in large
    assert any(line.startswith("*") and "small" in line for line in lines)
    code, text = plugin(cluster, tmp_path, "history", SUITE)
    assert code == 0 and text.count("\n") == 3  # the header and two runs
    assert "large/sums" in text.splitlines()[1]

    # Two cells of one task, paired sample by sample from the store by a Job in the cluster.
    code, text = plugin(cluster, tmp_path, "compare", f"{SUITE}-small-sums", f"{SUITE}-large-sums")
    assert code == 0, text
    paired = text.split("paired comparison of the per-sample scores", 1)[1]
    row = next(line for line in paired.splitlines() if line.startswith("exact_match"))
    assert row.split()[1:5] == ["mcnemar-exact", "10", "0", "-0.8000"], row
    assert (
        cluster.api.list(
            "batch", "v1", "jobs", NS, label_selector="app.kubernetes.io/component=compare"
        )
        == []
    )

    # Two runs of one cell: its baseline run and its current one.
    baseline_run = entry(suite, "sums", "large")["comparison"]["baselineRun"]
    code, text = plugin(
        cluster, tmp_path, "compare", f"{SUITE}-large-sums@{baseline_run}", f"{SUITE}-large-sums"
    )
    assert code == 0, text
    row = next(line for line in text.splitlines() if line.startswith("exact_match"))
    assert row.split()[1:5] == ["mcnemar-exact", "10", "0", "-0.8000"], row

    # The first run is accepted, and becomes the baseline of the runs after it.
    first = suite["status"]["history"][-1]["id"]
    code, text = plugin(cluster, tmp_path, "accept", SUITE, "--run", first)
    assert code == 0 and first in text
    assert plugin(cluster, tmp_path, "accept", SUITE, "--run", "19990101-000000")[0] == 2
    cluster.api.patch(GROUP, VERSION, "evalsuites", NS, SUITE, {"spec": {"baseline": "accepted"}})
    latest = suite["status"]["currentRun"]["id"]
    time.sleep(1.0)
    cluster.api.patch(
        GROUP,
        VERSION,
        "evalsuites",
        NS,
        SUITE,
        {"metadata": {"annotations": {"evals.io/rerun": "3"}}},
    )
    third = cluster.wait_suite(SUITE, run_finished(latest), timeout=240)
    assert third["status"]["acceptedRun"] == first
    comparison = entry(third, "sums", "large")["comparison"]
    assert comparison["baseline"] == first and comparison["regressed"]
    assert entry(third, "big", "large")["comparison"]["baseline"] == first


def test_the_matrix_follows_its_spec_and_the_suite_rerun(cluster: Cluster) -> None:
    suite = cluster.suite(SUITE)
    assert suite is not None and suite["status"]["currentRun"].get("completionTime")
    run_id = suite["status"]["currentRun"]["id"]
    uid_of_small = cells(cluster, SUITE)[f"{SUITE}-small-sums"]["metadata"]["uid"]
    posts = len(cluster.job_posts())
    # A model's spec changes: its cells' specs change, but finished cells do not run again.
    spec = grid_spec(cluster.model)
    spec["models"][0]["model"]["maxConcurrency"] = 2
    cluster.api.patch(GROUP, VERSION, "evalsuites", NS, SUITE, {"spec": {"models": spec["models"]}})
    deadline = time.monotonic() + 30
    while cells(cluster, SUITE)[f"{SUITE}-small-sums"]["spec"]["model"]["maxConcurrency"] != 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.0)
    assert len(cluster.job_posts()) == posts
    assert cluster.suite(SUITE)["status"]["currentRun"]["id"] == run_id

    # A model is added and one removed: its cells come and go; the store keeps the rows.
    spec["models"] = spec["models"][1:] + [model("tiny", cluster.model)]
    cluster.api.patch(GROUP, VERSION, "evalsuites", NS, SUITE, {"spec": {"models": spec["models"]}})
    done = cluster.wait_suite(
        SUITE,
        lambda s: (
            s["status"]["observedGeneration"] == s["metadata"]["generation"]
            and [e["model"] for e in s["status"]["leaderboard"][0]["entries"]]
            == ["medium", "large", "tiny"]
            and s["status"]["matrix"]["done"] == "6/6"
            and bool(s["status"]["currentRun"].get("completionTime"))
        ),
        timeout=180,
    )
    names = sorted(cells(cluster, SUITE))
    assert f"{SUITE}-small-sums" not in names and f"{SUITE}-tiny-sums" in names
    assert done["status"]["currentRun"]["id"] == run_id  # the new cells joined the run
    kept = store_rows(
        cluster, SUITE, "SELECT count(*) AS n FROM samples WHERE evaluation_uid = $1", uid_of_small
    )
    runs = store_rows(
        cluster, SUITE, "SELECT count(*) AS n FROM runs WHERE evaluation_uid = $1", uid_of_small
    )
    assert runs[0]["n"] >= 2 and kept[0]["n"] == 10 * runs[0]["n"]  # every run's rows
    # The baseline is the accepted run (the test before): the new cell was not in it.
    assert entry(done, "sums", "tiny")["comparison"]["reason"] == "BaselineNotFound"
    assert condition(done, "Regressed")["status"] in ("True", "False")

    # The suite is deleted: its cells go with it, the store's rows stay on the volume.
    cluster.api.delete(GROUP, VERSION, "evalsuites", NS, SUITE)
    deadline = time.monotonic() + 30
    while cells(cluster, SUITE):
        assert time.monotonic() < deadline
        time.sleep(0.2)
