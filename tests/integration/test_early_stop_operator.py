"""execution.earlyStop on the emulator with the real operator and runner pods: a 4-shard run whose
verdict is known long before its last sample stops there. The model answers 60 requests and
then holds the rest (no shard can end by itself: each has 100 samples), so the stop is the
operator's: once the shards' live sums decide the threshold it posts StoppingEarly and tells
every shard to stop with the run's token (a shard that starts later is told once it runs);
the held requests are then answered, finish and are counted, and the run succeeds with
status.stoppedEarly, each result's confidence-sequence interval and Passed from the decided
verdict."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from eval_api.shard import ShardSummary
from eval_operator.pods import pod_view, progress_url
from tests.support.operator_cluster import NS, condition, manifest, running_cluster

pytestmark = pytest.mark.integration

SAMPLES = 400
ANSWERED_BEFORE_HOLD = 60
# One question in ten is answered wrong: accuracy 0.9 against a threshold of 0.5.
RECORDS = [
    {"question": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)} for i in range(SAMPLES)
]
WRONG = [f"What is {i} + {i + 1}?" for i in range(0, SAMPLES, 10)]


def shard_summaries(cluster: Any, run: str) -> list[ShardSummary]:
    found = []
    for pod in cluster.api.list("", "v1", "pods", NS):
        if (pod["metadata"].get("labels") or {}).get("evals.io/run") != run:
            continue
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((status.get("state") or {}).get("terminated") or {}).get("message")
            if message:
                found.append(ShardSummary.model_validate(json.loads(message)))
    return found


def wait_until_every_shard_stopped(cluster: Any, shards: int, timeout: float = 60) -> None:
    """Until each runner pod's own /progress says it was told to stop."""
    deadline = time.monotonic() + timeout
    told: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        for pod in cluster.api.list("", "v1", "pods", NS):
            url = progress_url(pod_view(pod))
            if url is None or told.get(pod["metadata"]["name"]):
                continue
            try:
                summary = ShardSummary.model_validate(httpx.get(url, timeout=2).json())
            except (httpx.HTTPError, ValueError):
                continue
            told[pod["metadata"]["name"]] = summary.stopped
        if sum(1 for reason in told.values() if reason) == shards:
            return
        time.sleep(0.1)
    raise AssertionError(f"not every shard was told to stop: {told}")


def test_a_decided_run_stops_every_shard_and_reports_what_it_saved(tmp_path: Path) -> None:
    with running_cluster(tmp_path, wrong=WRONG) as cluster:
        cluster.model.hold_after = ANSWERED_BEFORE_HOLD
        body = manifest(
            "early",
            cluster.model,
            dataset={"inline": RECORDS, "inputField": "question", "targetField": "answer"},
            execution={
                "shards": 4,
                "earlyStop": {"when": "Verdict", "minSamples": 30, "seed": 7},
            },
            thresholds=["exact_match >= 0.5"],
        )
        assert cluster.apply(body).status_code == 201
        (stopping,) = cluster.wait_event("early", ("StoppingEarly",), timeout=120)
        assert "VerdictKnown" in stopping["message"], stopping
        # Every shard is told, the ones started after the decision too.
        wait_until_every_shard_stopped(cluster, shards=4)
        # What they hold in flight is answered now, and counted.
        cluster.model.hold_after = None
        done = cluster.wait_phase("early", "Succeeded", timeout=180)
        run = done["status"]["jobName"]
        summaries = shard_summaries(cluster, run)
        (secret,) = [
            s
            for s in cluster.api.list("", "v1", "secrets", NS)
            if s["metadata"]["name"] == f"{run}-control"
        ]
    status = done["status"]
    stopped = status["stoppedEarly"]
    assert stopped["reason"] == "VerdictKnown" and stopped["of"] == SAMPLES
    asked = status["progress"]["completed"] + status["progress"]["failed"]
    assert stopped["samples"] == asked
    # No shard asked past the hold but what it had in flight (4 shards x maxConcurrency 4).
    assert ANSWERED_BEFORE_HOLD <= asked <= ANSWERED_BEFORE_HOLD + 16, asked
    assert stopped["savedRequests"] == SAMPLES - asked  # one request per sample here
    assert "exact_match" in stopped["message"] and "above 0.5" in stopped["message"]
    # Every shard stopped on the operator's word and reported; together they are the run.
    assert len(summaries) == 4 and {s.stopped for s in summaries} == {"VerdictKnown"}, [
        (s.shard, s.state, s.total, s.completed, s.failed, s.stopped) for s in summaries
    ]
    assert sum(s.completed + s.failed for s in summaries) == asked
    assert all(s.state == "done" for s in summaries)
    results = {r["name"]: r for r in status["results"]}
    low, high = results["exact_match"]["csInterval"]
    assert 0.5 < low <= results["exact_match"]["value"] <= high
    # The sequence is wider than the fixed-size interval: it holds at every sample count.
    ci_low, ci_high = results["exact_match"]["ci95"]
    assert high - low > ci_high - ci_low
    passed = condition(done, "Passed")
    assert passed["status"] == "True" and passed["message"].startswith("decided early")
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "Evaluation"
