"""A suite cell's regression decided early (issue 20), with the real operator against the API
emulator, a real PostgreSQL store and runner pods as real processes.

The cell runs once without execution.earlyStop (its baseline: every answer right, all 400
samples). Then the suite turns earlyStop on and runs again; the model now answers one question
in four wrong, and holds every request after the next 200 (no shard can end by itself). The
shards find the baseline run in the store as the cell report does, pair each finished sample
with its baseline score, and the operator decides on their sums: the threshold early, the
regression gate (worse by more than maxDrop, an empirical-Bernstein sequence) once its pairs
show it. Only then does it stop the shards; the cell's status says Regressed against that
baseline run, and the suite takes the gate's decision over the fixed-sample tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from eval_api.shard import ShardSummary
from tests.integration.test_early_stop_operator import (
    shard_summaries,
    wait_until_every_shard_stopped,
)
from tests.integration.test_evalsuite_matrix import run_finished
from tests.support.model_server import Faults, ModelServer
from tests.support.operator_cluster import GROUP, NS, VERSION, Cluster, condition, running_cluster
from tests.support.suites import store_rows, suite_manifest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SUITE = "gate"
CELL = f"{SUITE}-m-sums"
SAMPLES = 400
ANSWERED_BEFORE_HOLD = 200
RECORDS = [
    {"question": f"What is {i} + {i + 2}?", "answer": str(2 * i + 2)} for i in range(SAMPLES)
]
# One question in four answered wrong: 0.75 against a threshold of 0.5, and 0.25 below the
# baseline's 1.0 (maxDrop 0.05).
WRONG = [r["question"] for i, r in enumerate(RECORDS) if i % 4 == 0]
EARLY_STOP = {"when": "Verdict", "minSamples": 30, "seed": 7}


def spec(server: ModelServer, early_stop: bool) -> dict[str, Any]:
    execution: dict[str, Any] = {"shards": 2}
    if early_stop:
        execution["earlyStop"] = EARLY_STOP
    return {
        "cache": {"mode": "Disabled"},
        "models": [
            {
                "name": "m",
                "model": {
                    "name": "m",
                    "baseURL": server.base_url,
                    "apiKeySecretRef": {"name": "model-key", "key": "api-key"},
                    "maxConcurrency": 4,
                },
            }
        ],
        "tasks": [
            {
                "name": "sums",
                "dataset": {"inline": RECORDS, "inputField": "question", "targetField": "answer"},
                "task": {"scorers": [{"type": "exact_match"}]},
                "thresholds": ["exact_match >= 0.5"],
            }
        ],
        "defaults": {"execution": execution},
        "baseline": "previous",
        "regression": {"maxDrop": "0.05", "alpha": "0.05"},
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    server = ModelServer(wrong=[], faults=Faults(latency=0.005))
    with running_cluster(tmp_path_factory.mktemp("gate"), stack=True, model=server) as cluster:
        yield cluster


def test_a_cells_regression_is_decided_early_against_its_baseline(cluster: Cluster) -> None:
    cluster.apply(suite_manifest(SUITE, spec(cluster.model, early_stop=False))).raise_for_status()
    first = cluster.wait_suite(SUITE, run_finished(), timeout=240)
    first_id = first["status"]["currentRun"]["id"]
    baseline_run = cluster.evaluation(CELL)["status"]["jobName"]
    assert cluster.evaluation(CELL)["status"]["progress"]["completed"] == SAMPLES

    # Run two: earlyStop on, one answer in four wrong, the model holding after 200 more.
    cluster.model.wrong_for = {"m": WRONG}
    cluster.model.hold_after = cluster.model.count + ANSWERED_BEFORE_HOLD
    time.sleep(1.0)  # suite run ids have a resolution of one second
    cluster.api.patch(
        GROUP,
        VERSION,
        "evalsuites",
        NS,
        SUITE,
        {
            "metadata": {"annotations": {"evals.io/rerun": "2"}},
            "spec": {"defaults": spec(cluster.model, early_stop=True)["defaults"]},
        },
    )
    (stopping,) = cluster.wait_event(CELL, ("StoppingEarly",), timeout=180)
    assert "VerdictKnown" in stopping["message"], stopping
    # Both shards are told (the event comes first), then what they hold in flight is answered,
    # finishes and is counted.
    wait_until_every_shard_stopped(cluster, shards=2)
    cluster.model.hold_after = None
    second = cluster.wait_suite(SUITE, run_finished(first_id), timeout=240)
    cell = cluster.evaluation(CELL)
    status = cell["status"]
    run = status["jobName"]
    assert run != baseline_run
    summaries = shard_summaries(cluster, run)

    stopped = status["stoppedEarly"]
    assert stopped["reason"] == "VerdictKnown" and stopped["of"] == SAMPLES
    asked = status["progress"]["completed"] + status["progress"]["failed"]
    assert stopped["samples"] == asked <= ANSWERED_BEFORE_HOLD + 8  # 2 shards x 4 in flight
    assert stopped["passed"] is True  # 0.75 is above 0.5: the threshold holds
    regression = stopped["regression"]
    assert regression["decision"] == "Regressed", json.dumps(stopped, indent=1)
    assert regression["baselineRun"] == baseline_run
    low, high = regression["differences"]["exact_match"]
    assert high < -0.05 and low <= -0.25 <= high, regression
    assert 30 <= regression["pairs"] <= asked
    assert "worse than baseline run" in stopped["message"]

    # Each shard paired its finished prefix with the baseline it found in the store.
    assert len(summaries) == 2 and {s.stopped for s in summaries} == {"VerdictKnown"}
    for summary in summaries:
        baseline = summary.baseline
        assert baseline is not None and baseline.run == baseline_run
        assert baseline.suite_run == first_id and baseline.unpaired == 0
        paired = baseline.paired["exact_match"]
        assert paired.n == summary.scores["exact_match"].seq_n
    paired_total = sum(s.baseline.paired["exact_match"].n for s in summaries)  # type: ignore[union-attr]
    assert paired_total >= regression["pairs"]
    _same_as_the_stored_rows(cluster, summaries, run, baseline_run)

    # The suite takes the gate's decision: the cell regressed, decided early.
    board = second["status"]["leaderboard"][0]["entries"][0]
    comparison = board["comparison"]
    assert comparison["reason"] == "Compared" and comparison["baselineRun"] == baseline_run
    assert comparison["decidedEarly"] is True and comparison["regressed"] is True
    assert comparison["message"].startswith("decided early by the regression gate: worse")
    regressed = condition(second, "Regressed")
    assert regressed["status"] == "True" and regressed["message"].split("; ")[0].endswith(
        ": m/sums"
    ), regressed
    assert second["status"]["matrix"]["regressed"] == 1


def _same_as_the_stored_rows(
    cluster: Cluster, summaries: list[ShardSummary], run: str, baseline_run: str
) -> None:
    """The pairs the shards counted are pairs of stored rows: every paired candidate score
    against the baseline's of the same record (mean of (candidate - baseline + 1) / 2 over the
    stored pairs is at least the counted prefix's, which is a part of them)."""

    def scores(of: str) -> dict[str, float]:
        rows = store_rows(
            cluster, SUITE, "SELECT input_hash, scores FROM samples WHERE run = $1", of
        )
        return {r["input_hash"]: json.loads(r["scores"])["exact_match"] for r in rows}

    base, cand = scores(baseline_run), scores(run)
    assert len(base) == SAMPLES and set(cand) <= set(base)
    worse = sum(1 for key in cand if base[key] == 1.0 and cand[key] == 0.0)
    counted = sum(s.baseline.paired["exact_match"].n for s in summaries)  # type: ignore[union-attr]
    counted_worse = sum(
        s.baseline.paired["exact_match"].n - 2 * s.baseline.paired["exact_match"].sum  # type: ignore[union-attr]
        for s in summaries
    )
    # A worse pair is 0, a same pair 1/2: n - 2 * sum counts the worse pairs of the prefix.
    assert round(counted_worse) <= worse and counted <= len(cand)
    assert abs(worse / len(cand) - 0.25) < 0.1
