"""task.lmEval end to end against lm-eval itself: the parity tasks' rows published on a stand-in
Hub (parquet, a tag), the deterministic completions server, and our real runner — sharded in
process, and `eval-runner run --task-file` as a user runs it. Every sample's prompt (a chat
model's: its messages), filtered answers, choice log-likelihoods and scores equal lm-eval's
per-sample output in tests/parity/golden.jsonl (`make parity`: local-completions, and
local-chat-completions for the generative tasks), and the status-level results are their
means."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from eval_api.lmeval.config import load_task, metric_key
from eval_api.shard import ShardSummary
from eval_api.v1alpha1.evaluation import Evaluation
from eval_runner.pipeline import run_shard
from eval_runner.results import SampleResult
from tests.support.completions_server import CompletionsServer
from tests.support.hfhub import StandInHub, parquet

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PARITY = ROOT / "tests" / "parity"
HEADER, *GOLDEN = [json.loads(line) for line in (PARITY / "golden.jsonl").read_text().splitlines()]
PASSES = sorted({(row["api"], row["task"]) for row in GOLDEN})


def publish(hub: StandInHub, name: str) -> str:
    """The task's splits as the Hub lays out parquet (default/<split>/*.parquet), tagged v1."""
    stem = name.removeprefix("parity_")
    files = {"README.md": f"# {name}\n".encode()}
    for path in sorted((PARITY / "data").glob(f"{stem}_*.jsonl")):
        split = path.stem.removeprefix(f"{stem}_")
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        files[f"default/{split}/0000.parquet"] = parquet(rows)
    hub.repo(f"parity/{stem}").add_commit(files, refs=("main", "v1"))
    return f"parity/{stem}"


def evaluation(
    name: str, repo: str, base_url: str, shards: int = 1, api: str = "Completions"
) -> dict[str, Any]:
    return {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": name.replace("_", "-"), "namespace": "default"},
        "spec": {
            "model": {"name": "parity", "baseURL": base_url, "api": api},
            "dataset": {"huggingface": {"repo": repo, "revision": "v1", "config": "default"}},
            "task": {"lmEval": {"configMapRef": {"name": "tasks", "key": f"{name}.yaml"}}},
            "execution": {"shards": shards},
        },
    }


def assert_as_lm_eval(name: str, lines: list[dict[str, Any]], api: str = "Completions") -> None:
    """Our per-sample lines (`--samples`) against lm-eval's, doc by doc and filter by filter."""
    task = load_task((PARITY / "tasks" / f"{name}.yaml").read_text(), name)
    ours = {line["id"]: line for line in lines}
    golden: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in GOLDEN:
        if row["task"] == name and row["api"] == api:
            golden[row["doc_id"]].append(row)
    assert sorted(ours) == sorted(golden), name
    for doc_id, rows in golden.items():
        line = ours[doc_id]
        assert line["errorClass"] is None, line
        contexts = [arguments[0] for arguments in rows[0]["arguments"]]
        shown = line["prompt"][0]["content"]
        if api == "ChatCompletions":
            assert line["prompt"] == contexts[0], (name, doc_id)
        elif task.output_type == "generate_until":
            assert shown == contexts[0], (name, doc_id)
        if task.output_type == "generate_until":
            assert line["response"] == rows[0]["resps"][0][0]
            for row in rows:
                answer = line["details"]["answers"][row["filter"]]
                assert [answer] == row["filtered_resps"], (name, doc_id, row["filter"])
                for metric, value in row["metrics"].items():
                    assert line["scores"][metric_key(metric, row["filter"])] == value
        else:
            (row,) = rows
            assert shown == "\n\n---\n\n".join(dict.fromkeys(contexts)), (name, doc_id)
            found = [c["loglikelihood"] for c in line["details"]["choices"]]
            assert found == [float(r[0][0]) for r in row["resps"]], (name, doc_id)
            assert line["scores"] == row["metrics"], (name, doc_id)


def sample_line(result: SampleResult) -> dict[str, Any]:
    from eval_runner.cli.output import sample_line as line_of

    return json.loads(json.dumps(line_of(result)))


@pytest.mark.parametrize(("api", "name"), PASSES)
def test_a_sharded_run_scores_every_sample_as_lm_eval(api: str, name: str, tmp_path: Path) -> None:
    """Two shards, each replaying the few-shot draws of the other's docs: together they give
    lm-eval's samples exactly, and their summaries its mean scores."""
    hub, server = StandInHub(), CompletionsServer()
    task_file = (PARITY / "tasks" / f"{name}.yaml").read_text()
    with hub.in_thread(), server.in_thread():
        repo = publish(hub, name)
        manifest = evaluation(name, repo, server.base_url, shards=2, api=api)
        spec = Evaluation.model_validate(manifest)
        lines: list[dict[str, Any]] = []
        summaries: list[ShardSummary] = []
        os.environ["HF_ENDPOINT"] = hub.url
        try:
            for shard in (0, 1):
                summaries.append(
                    asyncio.run(
                        run_shard(
                            spec,
                            shard,
                            2,
                            None,
                            download_dir=tmp_path / f"downloads-{shard}",
                            on_sample=lambda r: lines.append(sample_line(r)),
                            task_file=task_file,
                        )
                    )
                )
        finally:
            del os.environ["HF_ENDPOINT"]
    assert_as_lm_eval(name, lines, api)
    task = load_task(task_file, name)
    for metric, rows in _golden_means(name, api).items():
        sums = [s.scores[metric] for s in summaries]
        assert sum(x.n for x in sums) == len(rows)
        assert sum(x.sum for x in sums) == pytest.approx(sum(rows)), metric
    assert task.task == name


def _golden_means(name: str, api: str = "Completions") -> dict[str, list[float]]:
    found: dict[str, list[float]] = defaultdict(list)
    for row in GOLDEN:
        if row["task"] == name and row["api"] == api:
            for metric, value in row["metrics"].items():
                found[
                    metric_key(metric, row["filter"]) if row["filter"] != "none" else metric
                ].append(value)
    return found


def test_eval_runner_run_with_a_task_file_matches_lm_eval(tmp_path: Path) -> None:
    """The README's local path: the manifest, --task-file (the ConfigMap key's content),
    --samples; the report's results are lm-eval's numbers."""
    name = "parity_arith"
    hub, server = StandInHub(), CompletionsServer()
    with hub.in_thread(), server.in_thread():
        repo = publish(hub, name)
        manifest = evaluation(name, repo, server.base_url)
        manifest["spec"]["thresholds"] = ["exact_match_flexible_extract >= 0.5"]
        path = tmp_path / "evaluation.yaml"
        path.write_text(yaml.safe_dump(manifest))
        samples = tmp_path / "samples.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "EVAL_"))}
        env["PYTHONPATH"] = os.pathsep.join(str(ROOT / p) for p in ("api", "runner", "operator"))
        done = subprocess.run(
            [sys.executable, "-m", "eval_runner", "run", str(path), "--no-progress",
             "--output", "json", "--task-file", str(PARITY / "tasks" / f"{name}.yaml"),
             "--samples", str(samples)],
            capture_output=True, text=True, timeout=300, cwd=ROOT,
            env={**env, "HF_ENDPOINT": hub.url, "HOME": str(tmp_path)},
        )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    assert_as_lm_eval(name, lines)
    report = json.loads(done.stdout)
    results = {r["name"]: r for r in report["results"]}
    assert list(results) == ["exact_match_strict_match", "exact_match_flexible_extract"]
    for metric, values in _golden_means(name).items():
        assert results[metric]["value"] == pytest.approx(sum(values) / len(values))
        assert results[metric]["n"] == len(values)


def test_a_task_file_that_cannot_run_is_refused_naming_the_field(tmp_path: Path) -> None:
    name = "parity_arith"
    text = (PARITY / "tasks" / f"{name}.yaml").read_text() + "process_docs: !function utils.p\n"
    task_file = tmp_path / "task.yaml"
    task_file.write_text(text)
    path = tmp_path / "evaluation.yaml"
    path.write_text(yaml.safe_dump(evaluation(name, "parity/arith", "http://127.0.0.1:9/v1")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("api", "runner"))}
    done = subprocess.run(
        [sys.executable, "-m", "eval_runner", "run", str(path), "--no-progress",
         "--task-file", str(task_file)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "LmEvalUnsupported" in done.stderr and "process_docs" in done.stderr, done.stderr
