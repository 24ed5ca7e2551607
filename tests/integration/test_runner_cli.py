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
    env["PYTHONPATH"] = os.pathsep.join(str(ROOT / p) for p in ("api", "runner", "operator"))
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
        "cacheSavedUSD": "0",
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


# --- failing fast and telling the truth ---------------------------------------------------------


def run_against(
    faults: Faults, *args: str, manifest: Path = QUICKSTART, **env: str
) -> tuple[subprocess.CompletedProcess[str], ModelServer]:
    with ModelServer(wrong=WRONG, faults=faults).in_thread() as server:
        done = eval_runner(
            "run", str(manifest), "--base-url", server.base_url, "--no-progress", *args, **env
        )
    return done, server


@pytest.mark.parametrize(
    ("status", "reason", "words"),
    [
        (401, "AuthenticationFailed", "answered 401 Unauthorized: the API key was refused"),
        (403, "AuthenticationFailed", "answered 403 Forbidden: the API key was refused"),
        (404, "ModelNotFound", "answered 404 Not Found: no model 'demo' there"),
    ],
)
def test_a_refused_key_or_a_missing_model_fails_the_run_at_once(
    status: int, reason: str, words: str
) -> None:
    faults = Faults(status_for={"What is": status}, echo_headers=True)
    done, server = run_against(faults, EVAL_API_KEY=KEY)
    assert done.returncode == EXIT_PERMANENT, done.stderr
    assert f"error: {reason}: the model endpoint POST {server.base_url}/chat/completions" in (
        done.stderr
    )
    assert words in done.stderr
    # The requests in flight (maxConcurrency 8) when the first answer came; none retried.
    assert server.count <= 8
    assert KEY not in done.stdout + done.stderr


def test_more_errored_samples_than_allowed_fail_with_too_many_errors(tmp_path: Path) -> None:
    # 3 of 20 samples always get a 422 (never retried): 15% errored, above the default 5%.
    failing = {"What is 123 + 77?": 422, "What is 9 + 15?": 422, "What is 61 + 39?": 422}
    done, _ = run_against(Faults(status_for=failing), "--limit", "20", "--output", "json")
    assert done.returncode == EXIT_PERMANENT, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] is False  # exact_match >= 0.8 holds on the 17 scored; not enough
    assert report["stopped"]["reason"] == "TooManyErrors"
    expected = (
        "3 of 20 finished samples errored (15.0%, never scored), above "
        "execution.maxErroredFraction 0.05: http_422=3"
    )
    assert report["stopped"]["message"] == expected
    assert f"error: TooManyErrors: {expected}" in done.stderr
    # Allowed more errors, the same run passes on its scores.
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text(
        QUICKSTART.read_text().replace(
            "  thresholds:", '  execution:\n    maxErroredFraction: "0.2"\n  thresholds:'
        )
    )
    done, _ = run_against(Faults(status_for=failing), "--limit", "20", manifest=lenient)
    assert done.returncode == 0, done.stderr


def test_a_run_whose_every_sample_errored_exits_3_and_says_so(tmp_path: Path) -> None:
    everything = tmp_path / "everything.yaml"
    everything.write_text(
        QUICKSTART.read_text().replace("  thresholds:\n    - exact_match >= 0.8\n", "")
        + '  execution:\n    maxErroredFraction: "1"\n'
    )
    faults = Faults(status_for={"What is": 422})
    done, _ = run_against(faults, "--limit", "8", "--output", "json", manifest=everything)
    assert done.returncode == EXIT_PERMANENT, done.stderr
    report = json.loads(done.stdout)
    assert report["progress"] == {
        "total": 8,
        "completed": 0,
        "failed": 8,
        "summary": "0/8, 8 errored",
    }
    # Every scorer appears, with nothing scored: no value, never a 0.
    assert [(r["name"], r["value"], r["n"]) for r in report["results"]] == [
        ("exact_match", None, 0),
        ("numeric", None, 0),
    ]
    assert report["stopped"]["message"].startswith(
        "8 of 8 finished samples errored (100.0%, never scored), no sample was scored"
    )


def test_the_error_table_shows_the_request_and_a_redacted_answer() -> None:
    faults = Faults(status_for={"What is 9 + 15?": 422}, echo_headers=True)
    done, server = run_against(faults, "--limit", "8", EVAL_API_KEY=KEY, COLUMNS="200")
    assert "errored samples (never scored), by class:" in done.stdout
    assert (
        f"  http_422: 1; the first: POST {server.base_url}/chat/completions -> "
        '{"error": {"type": "injected", "message": "injected 422: Bearer [redacted]"}}'
    ) in done.stdout
    assert KEY not in done.stdout + done.stderr


def test_a_key_secret_in_the_manifest_without_a_key_here_warns(tmp_path: Path) -> None:
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text(
        QUICKSTART.read_text()
        .replace("    # apiKeySecretRef:", "    apiKeySecretRef:")
        .replace("    #   name: model-api-key", "      name: model-api-key")
        .replace("    #   key: api-key", "      key: api-key")
    )
    done, _ = run_against(Faults(), "--limit", "2", manifest=keyed)
    assert (
        "warning: spec.model.apiKeySecretRef names Secret model-api-key, but no key is set here: "
        "set EVAL_API_KEY or OPENAI_API_KEY"
    ) in done.stderr


def test_one_line_per_sample_with_output_jsonl_or_samples_file(tmp_path: Path) -> None:
    faults = Faults(status_for={"What is 9 + 15?": 422})
    done, _ = run_against(faults, "--limit", "5", "--output", "jsonl")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(line["id"] for line in lines) == [0, 1, 2, 3, 4]
    by_id = {line["id"]: line for line in lines}
    assert by_id[0]["input"] == "What is 17 + 25?" and by_id[0]["response"] == "43"  # WRONG
    assert by_id[0]["scores"] == {"exact_match": 0.0, "numeric": 0.0}
    assert by_id[0]["prompt"][-1] == {
        "role": "user",
        "content": "Answer with only the number, nothing else. What is 17 + 25?",
    }
    assert by_id[0]["inputTokens"] > 0 and by_id[0]["outputTokens"] == 1
    assert by_id[0]["latencySeconds"] > 0 and by_id[0]["errorClass"] is None
    assert (by_id[3]["errorClass"], by_id[3]["response"], by_id[3]["scores"]) == (
        "http_422",
        None,
        {},
    )
    assert "samples: 4 scored, 1 errored, 5 total" in done.stderr  # the table, on stderr
    samples = tmp_path / "samples.jsonl"
    done, _ = run_against(faults, "--limit", "5", "--samples", str(samples))
    assert "samples: 4 scored, 1 errored, 5 total" in done.stdout
    assert len(samples.read_text().splitlines()) == 5


def test_truncated_answers_are_counted_and_warned_about() -> None:
    done, _ = run_against(Faults(cut_answers=True), "--limit", "10", "--output", "json")
    report = json.loads(done.stdout)
    assert report["usage"]["truncated"] == 10
    assert (
        "warning: 10 of 10 answers (100.0%) were cut at maxTokens (finish_reason length / "
        "stop_reason max_tokens) and scored as they are: raise model.parameters.maxTokens"
    ) in done.stderr


def test_a_wrong_base_url_fails_fast_with_endpoint_unreachable() -> None:
    """A baseURL whose port refuses every connection from the first request is a typo, not an
    outage: the shard stops after client.NEVER_ANSWERED_SECONDS (10 s), not after
    unreachableAfterSeconds (the quickstart leaves it at 120 s), and says so, naming the URL
    without its userinfo (a password, sent as Basic credentials)."""
    port = free_port()  # bound, then closed: nothing listens there
    started = time.monotonic()
    done = eval_runner(
        "run",
        str(QUICKSTART),
        "--base-url",
        f"http://probe:url-secret@127.0.0.1:{port}/v1",
        "--no-progress",
    )
    elapsed = time.monotonic() - started
    assert done.returncode == EXIT_PERMANENT, done.stderr
    assert elapsed < 15, f"{elapsed:.1f} s"
    assert (
        f"error: EndpointUnreachable: cannot connect to 127.0.0.1:{port}: connection refused "
        "(the model endpoint never answered: no connection in the 10s since the first request; "
        f"check baseURL http://127.0.0.1:{port}/v1)"
    ) in done.stderr
    assert "url-secret" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
