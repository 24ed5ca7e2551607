"""Canary keys through every way a shard can end badly: a key that cannot be sent, an endpoint
that echoes it where the runner reports it, a scorer that crashes, a judge that refuses its
key, SIGTERM. The key is never in a log line (stdout, stderr), a scraped metric, or the
termination message the operator turns into status, in any form an error text could print it
(as is, as Python prints it inside a str or bytes repr, JSON-escaped)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from eval_api.exitcodes import EXIT_PERMANENT
from eval_api.shard import ShardSummary
from tests.integration.test_runner_cli import runner_env
from tests.support.model_server import Faults, ModelServer
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

CANARY = "sk-canary-7c1e5d-never-anywhere"
JUDGE_CANARY = "sk-judge-canary-93af0b-never-anywhere"
RECORDS = [{"input": f"What is {i} + 1?", "target": str(i + 1)} for i in range(12)]

# A scorer with a bug: its exception crashes the shard (exit 1, retried by the Job).
CRASHING_SCORER = """
import eval_runner.scorers.registry as registry

def crashing(spec):
    def score(output, target):
        raise RuntimeError("the scorer failed on " + output)
    return score

registry._FACTORIES["exact_match"] = crashing
"""


def forms(key: str) -> list[str]:
    return [
        key,
        repr(key)[1:-1],
        json.dumps(key)[1:-1],
        repr(key.encode("utf-8", "backslashreplace"))[2:-1],
        key.strip()[:16],  # any sizeable piece of it
    ]


@dataclass
class Outcome:
    code: int
    output: str  # stdout and stderr
    message: str  # the termination message ("" when none was written)
    scrapes: str

    @property
    def summary(self) -> ShardSummary:
        return ShardSummary.model_validate_json(self.message)

    def assert_secret(self, *keys: str) -> None:
        for key in keys:
            for form in forms(key):
                assert form not in self.output, f"{form!r} in the logs"
                assert form not in self.message, f"{form!r} in the termination message"
                assert form not in self.scrapes, f"{form!r} in /metrics or /progress"


def run_shard_process(
    tmp_path: Path,
    spec: dict[str, Any],
    env: dict[str, str],
    *,
    prelude: str = "",
    sigterm_after_completed: int | None = None,
) -> Outcome:
    config = tmp_path / "evaluation.json"
    config.write_text(
        json.dumps({"metadata": {"name": "secret", "namespace": "team"}, "spec": spec})
    )
    termination_log = tmp_path / "termination-log"
    port = free_port()
    argv = ["shard", "--config", str(config), "--termination-log", str(termination_log)]
    code = f"{prelude}\nfrom eval_runner.cli import main\nraise SystemExit(main({argv!r}))"
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=runner_env(JOB_COMPLETION_INDEX="0", EVAL_PROGRESS_PORT=str(port), **env),
    )
    scrapes: list[str] = []
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        try:
            progress = httpx.get(f"http://127.0.0.1:{port}/progress", timeout=1).text
            scrapes += [progress, httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text]
            live = ShardSummary.model_validate_json(progress)
            if sigterm_after_completed is not None and live.completed >= sigterm_after_completed:
                process.send_signal(signal.SIGTERM)
                sigterm_after_completed = None
        except httpx.TransportError:
            pass  # not listening yet, or already gone
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=30)
    message = termination_log.read_text() if termination_log.exists() else ""
    return Outcome(process.returncode, stdout + stderr, message, "\n".join(scrapes))


def spec_for(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": {
            "name": "m",
            "baseURL": base_url,
            "maxConcurrency": 2,
            "timeoutSeconds": 5,
            "apiKeySecretRef": {"name": "key", "key": "api-key"},
        },
        "dataset": {"inline": RECORDS},
        "task": {"scorers": [{"type": "exact_match"}]},
        **extra,
    }


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (CANARY + "-\u20ac", "a character outside latin-1 at position 33 of 33"),
        (CANARY[:10] + "\n" + CANARY[10:], "a line break at position 11"),
        (CANARY[:10] + "\r\nX-Evil: 1", "a line break at position 11"),
    ],
    ids=["not-latin-1", "line-break", "header-injection"],
)
def test_a_key_that_cannot_be_sent_fails_at_start_and_is_never_shown(
    tmp_path: Path, key: str, problem: str
) -> None:
    with ModelServer().in_thread() as server:
        outcome = run_shard_process(tmp_path, spec_for(server.base_url), {"EVAL_API_KEY": key})
        assert server.count == 0  # nothing was sent
    assert outcome.code == EXIT_PERMANENT
    assert (outcome.summary.state, outcome.summary.reason) == ("error", "InvalidAPIKey")
    assert f"EVAL_API_KEY holds {problem}" in (outcome.summary.message or "")
    outcome.assert_secret(key)


def test_an_endpoint_that_redirects_with_the_key_in_the_location(tmp_path: Path) -> None:
    faults = Faults(redirect_to="http://elsewhere.example/v1?key={key}")
    with ModelServer(faults=faults).in_thread() as server:
        outcome = run_shard_process(tmp_path, spec_for(server.base_url), {"EVAL_API_KEY": CANARY})
        assert server.count <= 2  # the first answer stopped the shard (2 were in flight)
    assert outcome.code == EXIT_PERMANENT
    assert outcome.summary.reason == "EndpointRedirected"
    assert "http://elsewhere.example/v1?key=[redacted]" in (outcome.summary.message or "")
    outcome.assert_secret(CANARY)


def test_a_crashing_scorer(tmp_path: Path) -> None:
    with ModelServer().in_thread() as server:
        outcome = run_shard_process(
            tmp_path, spec_for(server.base_url), {"EVAL_API_KEY": CANARY}, prelude=CRASHING_SCORER
        )
    assert outcome.code == 1  # a crash: the Job retries the index
    assert outcome.summary.reason == "RunnerError"
    assert "RuntimeError: the scorer failed on" in (outcome.summary.message or "")
    crash = [json.loads(line) for line in outcome.output.splitlines() if "shard crashed" in line]
    assert crash and crash[0]["exception"], "the crash is logged with its traceback"
    outcome.assert_secret(CANARY)


def test_a_judge_that_refuses_its_key(tmp_path: Path) -> None:
    faults = Faults(status_for={"Answer:": 401}, echo_headers=True)  # only the judge's prompts
    with ModelServer(faults=faults).in_thread() as server:
        judge = {
            "name": "judge",
            "baseURL": server.base_url,
            "apiKeySecretRef": {"name": "judge-key", "key": "api-key"},
        }
        scorers = [
            {"type": "exact_match"},
            {"type": "llm_judge", "judge": judge, "rubric": "Answer: {{ output }}"},
        ]
        outcome = run_shard_process(
            tmp_path,
            spec_for(server.base_url, task={"scorers": scorers}),
            {"EVAL_API_KEY": CANARY, "EVAL_JUDGE_API_KEY": JUDGE_CANARY},
        )
    assert outcome.code == EXIT_PERMANENT
    assert outcome.summary.reason == "AuthenticationFailed"
    message = outcome.summary.message or ""
    assert "the judge endpoint POST" in message and "answered 401" in message
    assert "[redacted]" in message  # the echo of the key, cut out
    outcome.assert_secret(CANARY, JUDGE_CANARY)


def test_sigterm_writes_the_summary_and_shows_no_key(tmp_path: Path) -> None:
    faults = Faults(latency=0.3, echo_headers=True, status_for={"What is 2 + 1?": 400})
    with ModelServer(faults=faults).in_thread() as server:
        started = time.monotonic()
        outcome = run_shard_process(
            tmp_path,
            spec_for(server.base_url),
            {"EVAL_API_KEY": CANARY},
            sigterm_after_completed=2,
        )
        stopped_in = time.monotonic() - started
    assert outcome.code == 128 + signal.SIGTERM
    summary = outcome.summary
    assert (summary.state, summary.reason) == ("error", "Terminated")
    assert 2 <= summary.completed < len(RECORDS) and summary.scores["exact_match"].n == (
        summary.completed
    )
    assert "stopped by SIGTERM" in (summary.message or "")
    assert stopped_in < 10  # the requests in flight were dropped, not waited for
    outcome.assert_secret(CANARY)
