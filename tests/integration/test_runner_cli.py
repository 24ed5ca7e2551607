"""The eval-runner command as a subprocess against a real model server in a background thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eval_api.exitcodes import EXIT_PERMANENT
from eval_api.shard import ShardSummary
from tests.support.model_server import Faults, ModelServer
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
WRONG = ["What is 17 + 25?", "What is 90 - 45?", "What is 6 * 7?"]
KEY = "sk-never-printed"


def runner_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    # The source roots, as pytest's pythonpath has them: independent of how the venv was installed.
    env["PYTHONPATH"] = os.pathsep.join(str(ROOT / p) for p in ("runner", "operator"))
    return {**env, **extra}


def eval_runner(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eval_runner", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=runner_env(**env),
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServer]:
    with ModelServer(wrong=WRONG).in_thread() as running:
        yield running


def test_run_prints_the_results_table(server: ModelServer) -> None:
    before = len(server.requests)
    done = eval_runner(
        "run",
        str(QUICKSTART),
        "--base-url",
        server.base_url,
        "--limit",
        "20",
        "--no-progress",
        EVAL_API_KEY=KEY,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # 17 of 20: the Wilson interval, not a normal one cut at 1.
    assert "exact_match │ 0.8500 │ 0.0819 │ [0.6396, 0.9476] │ 20" in out
    assert "numeric     │ 0.8500" in out
    assert "samples: 20 scored, 0 errored, 20 total" in out
    assert "threshold exact_match >= 0.8: PASS" in out
    assert len(server.requests) - before == 20
    assert server.requests[-1].headers["Authorization"] == f"Bearer {KEY}"
    assert KEY not in out + done.stderr


def test_run_json_output_and_failing_threshold(server: ModelServer, tmp_path: Path) -> None:
    manifest = tmp_path / "strict.yaml"
    manifest.write_text(QUICKSTART.read_text().replace("exact_match >= 0.8", "exact_match >= 0.9"))
    tokens_before = (server.input_tokens, server.output_tokens)
    done = eval_runner(
        "run", str(manifest), "--base-url", server.base_url, "--limit", "20", "--output", "json"
    )
    assert done.returncode == 1, done.stderr  # a failed threshold fails CI
    report = json.loads(done.stdout)
    assert [(r["name"], r["value"], r["n"]) for r in report["results"]] == [
        ("exact_match", 0.85, 20),
        ("numeric", 0.85, 20),
    ]
    assert report["results"][0]["ci95"] == [0.639581, 0.947631]
    assert report["usage"] == {
        "requests": 20,
        "inputTokens": server.input_tokens - tokens_before[0],
        "outputTokens": server.output_tokens - tokens_before[1],
        "promptCacheTokens": 0,
        "cacheHits": 0,
        "timedOut": 0,
        "truncated": 0,
        "costUSD": "0",
    }
    assert report["progress"] == {"total": 20, "completed": 20, "failed": 0, "summary": "20/20"}
    assert report["thresholds"] == [{"threshold": "exact_match >= 0.9", "passed": False}]
    assert report["passed"] is False


def test_run_rejects_a_bad_manifest_readably(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        QUICKSTART.read_text()
        .replace("type: numeric", "type: numerc")
        .replace("builtin: arithmetic", "builtin: arithmetic\n    shuffle: true")
    )
    done = eval_runner("run", str(manifest))
    assert done.returncode == 2
    assert "is not a valid Evaluation" in done.stderr
    assert "spec.dataset.shuffle: Extra inputs are not permitted" in done.stderr
    assert "spec.task.scorers[1].type: Input should be" in done.stderr
    assert "Traceback" not in done.stderr


def shard_config(tmp_path: Path, base_url: str, **spec: Any) -> Path:
    evaluation = {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": "arith", "namespace": "team"},
        "spec": {
            "model": {"name": "m", "baseURL": base_url, "maxConcurrency": 2},
            "dataset": {"builtin": "arithmetic", "limit": 20},
            "task": {"scorers": [{"type": "exact_match"}]},
            "execution": {"shards": 2},
            **spec,
        },
    }
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(evaluation))
    return path


def start_shard(config: Path, termination_log: Path, **env: str) -> subprocess.Popen[str]:
    """`eval-runner shard` as the pod's container runs it, in the background."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eval_runner",
            "shard",
            "--config",
            str(config),
            "--termination-log",
            str(termination_log),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=runner_env(**env),
    )


def test_shard_serves_progress_and_writes_its_termination_message(tmp_path: Path) -> None:
    # Latency stretches the run (5 rounds of 2 concurrent requests) so /progress is seen mid-run.
    # Position 1 is answered wrong; shard 1 of 2 holds the odd positions.
    with ModelServer(wrong=["What is 48 + 36?"], faults=Faults(latency=0.15)).in_thread() as slow:
        port = free_port()
        termination_log = tmp_path / "termination-log"
        process = start_shard(
            shard_config(tmp_path, slow.base_url),
            termination_log,
            JOB_COMPLETION_INDEX="1",
            EVAL_PROGRESS_PORT=str(port),
            EVAL_API_KEY=KEY,
        )
        live: list[ShardSummary] = []
        while process.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/progress", timeout=1)
                live.append(ShardSummary.model_validate(response.json()))
            except httpx.TransportError:
                pass  # not listening yet, or already gone
            time.sleep(0.05)
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert any(s.state == "running" and 0 < s.completed < s.total == 10 for s in live)
    final = ShardSummary.model_validate_json(termination_log.read_text())
    assert (final.shard, final.shards, final.state, final.total, final.completed) == (
        1,
        2,
        "done",
        10,
        10,
    )
    assert final.scores["exact_match"].sum == 9
    logs = [json.loads(line) for line in stdout.splitlines()]
    assert {(line["evaluation"], line["namespace"], line["shard"]) for line in logs} == {
        ("arith", "team", 1)
    }
    assert KEY not in stdout + stderr


def test_shard_reports_a_permanent_error(tmp_path: Path) -> None:
    config = shard_config(
        tmp_path, "http://127.0.0.1:1/v1", dataset={"inline": [{"text": "no input"}]}
    )
    termination_log = tmp_path / "termination-log"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "eval_runner",
            "shard",
            "--config",
            str(config),
            "--shard",
            "0",
            "--termination-log",
            str(termination_log),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=runner_env(),
    )
    assert done.returncode == EXIT_PERMANENT
    final = ShardSummary.model_validate_json(termination_log.read_text())
    assert (final.state, final.reason) == ("error", "DatasetInvalid")
    assert "record 0" in (final.message or "")
