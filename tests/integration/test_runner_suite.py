"""`eval-runner run suite.yaml`: an EvalSuite's whole matrix run locally (a subprocess against a
real model server), and with --store compared with its previous run in a real PostgreSQL by
the same code the cluster's cell report Jobs run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from scipy import stats

from eval_runner.compare import mcnemar_margin_p
from tests.integration.test_runner_cli import eval_runner
from tests.support.model_server import ModelServer
from tests.support.servers import PostgresServer, postgres_server
from tests.support.store_db import create_database, fetch_now

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "evalsuite-matrix.yaml"


@pytest.fixture(scope="module")
def model() -> Iterator[ModelServer]:
    with ModelServer().in_thread() as running:
        yield running


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as running:
        yield running


def lines_of(text: str, task: str) -> list[str]:
    """The rows of a task's leaderboard table."""
    part = text.split(f"task {task}", 1)[1].split("task ", 1)[0]
    return [line for line in part.splitlines() if line.startswith("│")]


def row(text: str, task: str, model: str) -> list[str]:
    for line in lines_of(text, task):
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells[1] == model:
            return cells
    raise AssertionError(f"no row for {model} in task {task}:\n{text}")


def test_the_example_matrix_runs_locally_and_prints_its_leaderboard(model: ModelServer) -> None:
    done = eval_runner("run", str(EXAMPLE), "--base-url", model.base_url)
    assert done.returncode == 0, done.stderr + done.stdout
    exact = row(done.stdout, "arithmetic", "exact")
    assert exact[0] == "*" and exact[2] == "Succeeded" and exact[3].startswith("1.0000")
    assert exact[4] == "40"
    assert "all 6 cells passed" in done.stdout
    # 6 cells: 40 + 20 samples for each of the three models.
    assert model.count == 3 * 60


def test_with_a_store_each_cell_is_compared_with_its_previous_run(
    model: ModelServer, postgres: PostgresServer, tmp_path: Path
) -> None:
    dsn = asyncio.run(create_database(postgres))
    suite = yaml.safe_load(EXAMPLE.read_text())
    suite["spec"]["models"] = suite["spec"]["models"][:1]
    suite["spec"]["tasks"] = suite["spec"]["tasks"][1:]  # one cell: exact x 20 sums
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    first = eval_runner("run", str(path), "--base-url", model.base_url, "--store", dsn)
    assert first.returncode == 0, first.stderr + first.stdout
    assert row(first.stdout, "arithmetic-first-20", "exact")[-1] == "NoBaseline"
    assert fetch_now(dsn, "SELECT count(*) AS n FROM samples")[0]["n"] == 20
    # The second run answers a known subset wrong: the questions about numbers starting 1-3.
    model.wrong = [f"What is {a}" for a in ("1", "2", "3")]
    try:
        second = eval_runner("run", str(path), "--base-url", model.base_url, "--store", dsn)
    finally:
        model.wrong = []
    assert second.returncode == 1, second.stderr + second.stdout
    cells = row(second.stdout, "arithmetic-first-20", "exact")
    assert cells[-1] == "yes" and "regressed: exact/arithmetic-first-20" in second.stdout
    runs = fetch_now(
        dsn,
        "SELECT evaluation_uid, run FROM runs WHERE succeeded_at IS NOT NULL ORDER BY started_at",
    )
    assert len(runs) == 2

    def scores(r) -> dict[str, float]:
        rows = fetch_now(
            dsn,
            "SELECT input_hash, scores FROM samples WHERE evaluation_uid = $1 AND run = $2",
            r["evaluation_uid"],
            r["run"],
        )
        return {x["input_hash"]: json.loads(x["scores"])["exact_match"] for x in rows}

    base, cand = scores(runs[0]), scores(runs[1])
    worse = sum(1 for k in base if base[k] == 1.0 and cand[k] == 0.0)
    better = sum(1 for k in base if base[k] == 0.0 and cand[k] == 1.0)
    assert worse > 0
    # One-sided at the example's maxDrop 0.02: McNemar's exact test, and Tango's score test
    # (checked against scipy in tests/unit/test_compare.py); never below the exact test.
    expected = mcnemar_margin_p(worse, better, len(base), 0.02)
    assert expected >= stats.binomtest(worse, worse + better, alternative="greater").pvalue
    difference = sum(cand[k] - base[k] for k in base) / len(base)
    assert cells[-3] == f"{difference:+.4f}"
    assert cells[-2] == f"{expected:.4g}"


def test_a_matrix_whose_cells_would_share_a_name_is_refused(tmp_path: Path) -> None:
    """llama-3 x gsm and llama x 3-gsm are both <suite>-llama-3-gsm: refused before any cell
    runs, as the operator refuses it (eval_api.matrix.cell_problems)."""
    suite = yaml.safe_load(EXAMPLE.read_text())
    model, task = suite["spec"]["models"][0], suite["spec"]["tasks"][0]
    suite["spec"]["models"] = [{**model, "name": "llama"}, {**model, "name": "llama-3"}]
    suite["spec"]["tasks"] = [{**task, "name": "gsm"}, {**task, "name": "3-gsm"}]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    done = eval_runner("run", str(path), "--base-url", "http://127.0.0.1:9")
    assert done.returncode == 2, done.stderr + done.stdout
    name = suite["metadata"]["name"]
    assert (
        f"cells llama/3-gsm and llama-3/gsm would all be the Evaluation {name}-llama-3-gsm"
    ) in done.stderr


GATE_SAMPLES = 400
GATE_RECORDS = [
    {"question": f"What is {i} + {i + 2}?", "answer": str(2 * i + 2)} for i in range(GATE_SAMPLES)
]


def test_with_a_store_and_early_stop_a_cell_stops_once_its_regression_is_decided(
    model: ModelServer, postgres: PostgresServer, tmp_path: Path
) -> None:
    """The cluster's regression gate, in one process: the second run pairs each finished sample
    with the first run's stored score and stops once 'worse by more than maxDrop' is shown."""
    dsn = asyncio.run(create_database(postgres))
    suite = {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "EvalSuite",
        "metadata": {"name": "gate"},
        "spec": {
            "models": [{"name": "m", "model": {"name": "m", "baseURL": model.base_url}}],
            "tasks": [
                {
                    "name": "sums",
                    "dataset": {
                        "inline": GATE_RECORDS, "inputField": "question", "targetField": "answer"
                    },
                    "task": {"scorers": [{"type": "exact_match"}]},
                    "thresholds": ["exact_match >= 0.5"],
                }
            ],
            "baseline": "previous",
            "regression": {"maxDrop": "0.05"},
        },
    }  # fmt: skip
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    first = eval_runner("run", str(path), "--store", dsn)
    assert first.returncode == 0, first.stderr + first.stdout
    asked_before = model.count
    # Run two: earlyStop on, one question in four answered wrong.
    suite["spec"]["defaults"] = {
        "execution": {"earlyStop": {"when": "Verdict", "minSamples": 30, "seed": 3}}
    }
    path.write_text(yaml.safe_dump(suite))
    model.wrong = [r["question"] for i, r in enumerate(GATE_RECORDS) if i % 4 == 0]
    try:
        second = eval_runner("run", str(path), "--store", dsn)
    finally:
        model.wrong = []
    assert second.returncode == 1, second.stderr + second.stdout
    asked = model.count - asked_before
    assert 30 < asked < GATE_SAMPLES / 2, asked
    out = " ".join(second.stdout.split())  # the console wraps long lines
    assert "cell m/sums: stopped early (VerdictKnown)" in out, out
    assert "regression: worse than baseline run" in out and "regressed: m/sums" in out
    assert row(second.stdout, "sums", "m")[-2:] == ["early", "yes"]
    stored = fetch_now(dsn, "SELECT count(*) AS n FROM samples")[0]["n"]
    assert stored == GATE_SAMPLES + asked  # the baseline's every sample, this run's asked ones
    # Run three: every answer right again, against run two (its baseline now): shown not worse
    # by more than maxDrop, and stopped there.
    asked_before = model.count
    third = eval_runner("run", str(path), "--store", dsn)
    assert third.returncode == 0, third.stderr + third.stdout
    assert 30 < model.count - asked_before < GATE_SAMPLES / 2
    out = " ".join(third.stdout.split())
    assert "regression: not worse than baseline run" in out, out
    assert row(third.stdout, "sums", "m")[-2:] == ["early", "no"]
