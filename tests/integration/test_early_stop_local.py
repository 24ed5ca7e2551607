"""execution.earlyStop in `eval-runner run`: the run decides for itself, in one process, as the
operator decides for a Job — and without earlyStop nothing changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_runner_cli import eval_runner
from tests.support.model_server import ModelServer

pytestmark = pytest.mark.integration

SAMPLES = 2000
RECORDS = [{"input": f"What is {i} + {i + 1}?", "target": str(2 * i + 1)} for i in range(SAMPLES)]
WRONG = [f"What is {i} + {i + 1}?" for i in range(0, SAMPLES, 10)]  # accuracy 0.9


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServer]:
    with ModelServer(wrong=WRONG).in_thread() as running:
        yield running


def run(
    tmp_path: Path, server: ModelServer, grouped: bool = False, **spec: Any
) -> tuple[int, dict[str, Any]]:
    data = tmp_path / "data.jsonl"
    rows = [{**r, "passage": f"p{i // 3}"} if grouped else r for i, r in enumerate(RECORDS)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": "early"},
        "spec": {
            "model": {"name": "m", "baseURL": server.base_url, "maxConcurrency": 4},
            "dataset": {"configMapRef": {"name": "data", "key": "data.jsonl"}},
            "task": {"promptTemplate": "{{ input }}", "scorers": [{"type": "exact_match"}]},
            **spec,
        },
    }
    path = tmp_path / "evaluation.yaml"
    path.write_text(yaml.safe_dump(manifest))
    done = eval_runner(
        "run", str(path), "--dataset-file", str(data), "--output", "json", "--no-progress"
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_a_verdict_known_early_stops_the_local_run(server: ModelServer, tmp_path: Path) -> None:
    before = len(server.requests)
    code, report = run(
        tmp_path,
        server,
        execution={"earlyStop": {"when": "Verdict"}},
        thresholds=["exact_match >= 0.8"],
    )
    asked = len(server.requests) - before
    stopped = report["stoppedEarly"]
    assert code == 0 and report["passed"] is True
    assert stopped["reason"] == "VerdictKnown" and stopped["of"] == SAMPLES
    assert stopped["samples"] == asked < SAMPLES // 4
    assert stopped["savedRequests"] == SAMPLES - asked
    (result,) = report["results"]
    low, high = result["csInterval"]
    assert 0.8 < low <= result["value"] <= high
    # The samples were asked in the seeded random order, not the file's.
    asked_inputs = [r.body["messages"][-1]["content"] for r in server.requests[before:]]
    assert asked_inputs != [r["input"] for r in RECORDS[: len(asked_inputs)]]


def test_precision_stops_once_the_interval_is_narrow(server: ModelServer, tmp_path: Path) -> None:
    code, report = run(
        tmp_path, server, execution={"earlyStop": {"when": "Precision", "ciWidth": "0.1"}}
    )
    (result,) = report["results"]
    low, high = result["csInterval"]
    assert report["stoppedEarly"]["reason"] == "PrecisionReached"
    assert high - low <= 0.1 and report["stoppedEarly"]["samples"] < SAMPLES
    assert code == 0 and report["passed"] is None  # no thresholds


def test_without_early_stop_every_sample_is_asked_as_before(
    server: ModelServer, tmp_path: Path
) -> None:
    code, report = run(tmp_path, server, thresholds=["exact_match >= 0.8"])
    assert code == 0 and "stoppedEarly" not in report
    (result,) = report["results"]
    assert "csInterval" not in result and result["n"] == SAMPLES


def test_groups_are_asked_whole_and_counted_once_finished(
    server: ModelServer, tmp_path: Path
) -> None:
    before = len(server.requests)
    code, report = run(
        tmp_path,
        server,
        task={
            "promptTemplate": "{{ input }}",
            "scorers": [{"type": "exact_match"}],
            "groupField": "passage",
        },
        execution={"earlyStop": {"when": "Verdict", "seed": 3}},
        thresholds=["exact_match >= 0.5"],
        grouped=True,
    )
    asked = [r.body["messages"][-1]["content"] for r in server.requests[before:]]
    stopped = report["stoppedEarly"]
    assert code == 0 and stopped["reason"] == "VerdictKnown" and report["passed"] is True
    assert stopped["samples"] == len(asked) < SAMPLES // 2
    # Groups (three consecutive records each) are asked whole, in a random order of groups:
    # only those in flight when the run stopped (at most maxConcurrency) are partly asked.
    positions = [int(text.split()[2]) for text in asked]
    members: dict[int, int] = {}
    for position in positions:
        members[position // 3] = members.get(position // 3, 0) + 1
    partial = [g for g, count in members.items() if count < 3]
    assert len(partial) <= 4, partial
    assert sorted(members) != list(range(len(members)))  # not the file's order
    (result,) = report["results"]
    assert 0.5 < result["csInterval"][0]
