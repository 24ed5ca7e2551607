"""The runner under fire, against the real local model server: faults never change a score,
budgets stop a run at its limit, the judge is counted apart, and the key stays secret."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from eval_api.aggregate import aggregate
from eval_api.exitcodes import EXIT_PERMANENT
from eval_api.shard import ShardSummary
from eval_api.v1alpha1 import Evaluation
from eval_runner.breaker import CircuitBreaker
from eval_runner.budget import max_input_tokens
from eval_runner.client import NEVER_ANSWERED_SECONDS, HttpModelClient
from eval_runner.metrics import CONCURRENCY, CONCURRENCY_CUTS
from eval_runner.pipeline import BudgetStopped, run_shard
from eval_runner.retry import RetryPolicy
from eval_runner.transport import open_transport
from tests.integration.test_runner_cli import runner_env, start_shard
from tests.support.model_server import Faults, ModelServer, RateLimits
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

QUESTIONS = [f"What is {i} + {3 * i % 17}?" for i in range(120)]
RECORDS = [{"input": q, "target": str(i + 3 * i % 17)} for i, q in enumerate(QUESTIONS)]
WRONG = QUESTIONS[::9]  # answered off by one: the scores are not all 1
# $1 per token: costs are whole numbers of dollars.
DOLLAR_A_TOKEN = {"inputPerMillionUSD": "1000000", "outputPerMillionUSD": "1000000"}
CANARY = "sk-canary-4f1d9a7e-never-anywhere"
JUDGE_CANARY = "sk-judge-canary-0b3c5e-never-anywhere"


def evaluation(base_url: str, name: str, **spec: Any) -> Evaluation:
    model = {
        "name": name,
        "baseURL": base_url,
        "maxConcurrency": 16,
        "timeoutSeconds": 1,
        "parameters": {"temperature": "0", "maxTokens": 8},
        **spec.pop("model", {}),
    }
    return Evaluation.model_validate(
        {
            "metadata": {"name": "fire", "namespace": "team"},
            "spec": {
                "model": model,
                "dataset": {"inline": RECORDS},
                "task": {"scorers": [{"type": "exact_match"}, {"type": "numeric"}]},
                **spec,
            },
        }
    )


def gauge(metric: Any, model: str) -> float:
    for family in metric.collect():
        for sample in family.samples:
            if sample.labels == {"role": "model", "model": model} and not sample.name.endswith(
                "_created"
            ):
                return sample.value
    raise AssertionError(f"no {metric} sample for {model}")


async def test_faults_change_no_score_and_throttling_slows_the_run_down() -> None:
    async with ModelServer(wrong=WRONG, faults=Faults(latency=0.01)) as server:
        clean = await run_shard(evaluation(server.base_url, "fire-clean"), 0, 1, "k")
    faults = Faults(
        latency=0.01,
        rate_limit=0.2,
        retry_after="1",
        server_error=0.05,
        timeout=0.02,
        hang_seconds=1.5,
        truncated=0.03,
        seed=5,
    )
    lowest = 16.0
    async with ModelServer(wrong=WRONG, faults=faults) as server:
        run = asyncio.create_task(run_shard(evaluation(server.base_url, "fire-faults"), 0, 1, "k"))
        while not run.done():  # the gauge as a scrape sees it; ends with the run
            await asyncio.sleep(0.02)
            lowest = min(lowest, gauge(CONCURRENCY, "fire-faults"))
        fired = await run
    assert clean.failed == 0 and clean.completed == len(RECORDS)
    # Identical scores, nothing errored: no fault was ever scored as a wrong answer.
    assert fired.scores == clean.scores
    assert (fired.completed, fired.failed, fired.errors) == (len(RECORDS), 0, {})
    assert set(server.injected) == {"rate_limit", "server_error", "timeout", "truncated"}
    assert fired.usage.requests == server.count == len(RECORDS) + sum(server.injected.values())
    assert fired.usage.input_tokens == clean.usage.input_tokens  # faults are not billed
    # The 429s slowed the run down: the adaptive limit was cut below maxConcurrency.
    assert lowest < 16
    assert gauge(CONCURRENCY_CUTS, "fire-faults") >= 1


@pytest.mark.parametrize(
    ("provider", "limit", "window", "samples"),
    [("openai", 20, 1.0, 80), ("anthropic", 50, 10.0, 70)],
)
async def test_provider_rate_limit_headers_pace_requests_before_a_429(
    provider: str, limit: int, window: float, samples: int
) -> None:
    """A provider's bucket (refilled continuously, its state in every answer's headers): the
    runner sends as fast as the bucket allows and no faster, so almost nothing is refused."""
    limits = RateLimits(requests=limit, window_seconds=window)
    async with ModelServer(faults=Faults(latency=0.01), limits=limits) as server:
        ev = evaluation(
            server.base_url,
            f"paced-{provider}",
            model={"provider": provider, "maxConcurrency": 16},
            dataset={"inline": RECORDS[:samples]},
        )
        started = time.monotonic()
        summary = await run_shard(ev, 0, 1, "k")
        elapsed = time.monotonic() - started
    assert (summary.completed, summary.failed) == (samples, 0)
    assert limits.throttled <= 1, f"{limits.throttled} of {server.count} requests got a 429"
    # The bucket lets the first `limit` through at once, then limit/window a second.
    allowed = (samples - limit) * window / limit
    assert allowed <= elapsed <= 1.25 * allowed + 0.5


async def test_samples_the_endpoint_could_not_be_reached_for_are_asked_again() -> None:
    """The endpoint is down for the first second. Samples whose every try failed to connect
    are not written off: once the endpoint answers again they are asked again, and every
    sample is scored."""
    port = free_port()
    server = ModelServer(port=port)
    ev = evaluation(
        f"http://127.0.0.1:{port}/v1",
        "comeback",
        model={"maxConcurrency": 4},
        dataset={"inline": RECORDS[:20]},
    )
    async with open_transport() as http:
        # Few, fast retries and a short open period, so that the outage outlasts both.
        client = HttpModelClient(
            ev.spec.model,
            "k",
            http,
            retry=RetryPolicy(max_errors=2, base_delay=0.05),
            breaker=CircuitBreaker(open_seconds=0.3),
        )
        comeback = asyncio.get_running_loop().call_later(
            1.0, lambda: asyncio.ensure_future(server.start())
        )
        try:
            summary = await run_shard(ev, 0, 1, "k", client=client)
        finally:
            comeback.cancel()
            await server.stop()
    assert (summary.completed, summary.failed, summary.errors) == (20, 0, {})
    assert summary.scores["exact_match"].n == 20


async def until(condition: Callable[[], bool], run: asyncio.Task[Any], what: str) -> None:
    """Wait for `condition`; the run ending first fails the test."""
    while not condition():
        if run.done():
            raise AssertionError(f"the run ended before {what}: {run.result()}")
        await asyncio.sleep(0.01)


async def test_an_endpoint_that_answered_and_went_away_keeps_the_outage_patience() -> None:
    """The endpoint answers 5 samples, then goes away: its port refuses connections for
    longer than the bound of an endpoint that never answered (NEVER_ANSWERED_SECONDS). That is
    an outage, not a wrong URL: the shard waits (unreachableAfterSeconds, 120 s here), and
    once the endpoint is back every sample is scored."""
    port = free_port()
    server = ModelServer(port=port)
    server.hold_after = 5  # what comes after the 5th waits unanswered: the run cannot end
    ev = evaluation(
        f"http://127.0.0.1:{port}/v1",
        "went-away",
        model={"maxConcurrency": 4, "timeoutSeconds": 30},
        dataset={"inline": RECORDS[:20]},
    )
    assert ev.spec.model.unreachable_after_seconds == 120
    async with open_transport() as http:
        # Short waits (the breaker's open period, the retries' backoff), so that the endpoint
        # back is soon found so.
        breaker = CircuitBreaker(open_seconds=0.3, max_open_seconds=1.0)
        retry = RetryPolicy(max_delay=1.0)
        client = HttpModelClient(ev.spec.model, "k", http, breaker=breaker, retry=retry)
        reachability = client.reachability
        await server.start()
        run = asyncio.create_task(run_shard(ev, 0, 1, "k", client=client))
        try:
            await until(lambda: server.held == 4, run, "every worker's 6th+ request waited")
            stopping = asyncio.create_task(server.stop())  # the port refuses from here on
            await until(lambda: server.count >= 5 and refuses(port), run, "the port refused")
            server.hold_after = None  # the held ones are answered on the way out
            await stopping

            def outage_past_the_short_bound() -> bool:
                since = reachability.since
                return since is not None and time.monotonic() - since > NEVER_ANSWERED_SECONDS

            await until(outage_past_the_short_bound, run, "the never-answered bound passed")
            await server.start()  # back, well within unreachableAfterSeconds
            summary = await run
        finally:
            run.cancel()
            await server.stop()
    assert (summary.completed, summary.failed, summary.errors) == (20, 0, {})
    assert reachability.answered and reachability.since is None


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_timed_out_requests_are_counted_and_charged_at_their_worst_case() -> None:
    """A provider may bill a request it never answered in time: each timeout costs its worst
    case, in usage and against the budget, which therefore still stops the run."""
    faults = Faults(timeout=1.0, hang_seconds=1.5)  # every request outlasts timeoutSeconds 1
    summary = ShardSummary()
    async with ModelServer(faults=faults) as server:
        ev = evaluation(
            server.base_url,
            "fire-timeouts",
            model={"pricing": DOLLAR_A_TOKEN, "maxConcurrency": 2, "parameters": {"maxTokens": 8}},
            dataset={"inline": RECORDS[:2]},
            budget={"maxCostUSD": "300"},
        )
        with pytest.raises(BudgetStopped):
            await run_shard(ev, 0, 1, "k", summary=summary)
    usage = summary.usage
    assert usage.requests == usage.timed_out == server.count > 0
    assert (usage.input_tokens, usage.output_tokens) == (0, 0)  # none was reported
    # Each request: every prompt byte as a token, + 8 per message + 16, and maxTokens 8.
    worst = {max_input_tokens([{"role": "user", "content": r["input"]}]) + 8 for r in RECORDS[:2]}
    assert len(worst) == 1  # both prompts are as long
    assert Decimal(usage.cost_usd) == worst.pop() * usage.timed_out <= 300
    assert f"spent ${usage.cost_usd} of $300" in (summary.message or "")


def spent(server: ModelServer) -> Decimal:
    """What the server billed, at $1 per token."""
    return Decimal(server.input_tokens + server.output_tokens)


async def test_max_cost_stops_the_shard_at_its_limit_and_keeps_its_results() -> None:
    summary = ShardSummary()
    async with ModelServer(wrong=WRONG) as server:
        ev = evaluation(
            server.base_url,
            "fire-cost",
            model={"pricing": DOLLAR_A_TOKEN, "maxConcurrency": 4},
            budget={"maxCostUSD": "800"},
        )
        with pytest.raises(BudgetStopped) as caught:
            await run_shard(ev, 0, 1, "k", summary=summary)
    assert (summary.state, summary.reason) == ("error", "BudgetExceeded")
    assert caught.value.reason == "BudgetExceeded"
    assert "spent $" in (summary.message or "") and "of $800" in (summary.message or "")
    assert 0 < summary.completed < len(RECORDS)
    # Never overspent: what the server billed, and what the shard counted, are within it.
    assert Decimal(summary.usage.cost_usd) == spent(server) <= 800
    # The results so far are kept, sample for sample.
    assert summary.scores["exact_match"].n == summary.completed
    assert summary.usage.requests == server.count


async def test_sharded_budgets_sum_within_the_limit() -> None:
    async with ModelServer(wrong=WRONG) as server:
        ev = evaluation(
            server.base_url,
            "fire-shards",
            model={"pricing": DOLLAR_A_TOKEN, "maxConcurrency": 4},
            budget={"maxCostUSD": "1000", "maxRequests": 41},
        )
        summaries = [ShardSummary(), ShardSummary()]
        outcomes = await asyncio.gather(
            *(run_shard(ev, i, 2, "k", summary=summaries[i]) for i in range(2)),
            return_exceptions=True,
        )
    assert all(isinstance(o, BudgetStopped) for o in outcomes)
    assert {s.reason for s in summaries} == {"BudgetExceeded"}
    total = sum(Decimal(s.usage.cost_usd) for s in summaries)
    assert total == spent(server) <= 1000
    assert sum(s.usage.requests for s in summaries) == server.count <= 41
    assert all(Decimal(s.usage.cost_usd) <= 500 for s in summaries)  # each within its half
    merged = aggregate(summaries, ["exact_match", "numeric"])
    assert merged.results[0].n == sum(s.completed for s in summaries) > 0


async def test_max_requests_counts_retries_and_stops_cleanly() -> None:
    faults = Faults(status_for={QUESTIONS[0]: 500})  # 6 attempts, then errored
    async with ModelServer(faults=faults) as server:
        ev = evaluation(
            server.base_url,
            "fire-requests",
            model={"maxConcurrency": 1},
            budget={"maxRequests": 10},
        )
        summary = ShardSummary()
        with pytest.raises(BudgetStopped):
            await run_shard(ev, 0, 1, "k", summary=summary)
    assert server.count == summary.usage.requests == 10
    assert (summary.failed, summary.completed, summary.errors) == (1, 4, {"http_500": 1})


def judge_verdict(prompt: str) -> str:
    """The stand-in judge: compares the expected and the given answer in the rubric."""
    expected = prompt.split("Expected: ")[1].split("\n")[0]
    given = prompt.split("Answer: ")[1].split("\n")[0]
    if "What is 7 + 4?" in prompt:
        return "I would rather not say."
    return "Score: 1" if expected == given else "FAIL: wrong number"


async def test_llm_judge_grades_and_is_counted_apart() -> None:
    scorers = [
        {"type": "exact_match"},
        {
            "type": "llm_judge",
            "name": "judged",
            "judge": {
                "name": "judge",
                "baseURL": "",
                "pricing": {"inputPerMillionUSD": "2", "outputPerMillionUSD": "2"},
            },
            "rubric": "Question: {{ input }}\nExpected: {{ target }}\nAnswer: {{ output }}\n",
        },
    ]
    async with ModelServer(wrong=WRONG, judge=judge_verdict) as server:
        scorers[1]["judge"]["baseURL"] = server.base_url  # type: ignore[index]
        ev = evaluation(server.base_url, "fire-judged", task={"scorers": scorers})
        summary = await run_shard(ev, 0, 1, "model-key", judge_api_keys=["judge-key"])
    judge_requests = [r for r in server.requests if r.body["model"] == "judge"]
    assert {r.headers["Authorization"] for r in judge_requests} == {"Bearer judge-key"}
    # One sample's verdict is unparsable: errored, never scored (by either scorer).
    assert summary.errors == {"judge_unparsable": 1}
    assert summary.completed == len(RECORDS) - 1
    assert summary.scores["judged"] == summary.scores["exact_match"]
    assert summary.scores["judged"].n == summary.completed
    judge = summary.usage.judge
    assert judge is not None and judge.requests == len(judge_requests) == len(RECORDS)
    assert summary.usage.requests == len(server.requests) - len(judge_requests)
    assert summary.usage.cost_usd == "0" and Decimal(judge.cost_usd) > 0


def test_the_key_is_in_no_log_line_metric_or_summary(tmp_path: Path) -> None:
    """A canary key and a canary judge key, a server that echoes request headers in its error
    bodies, retries and errors logged: the keys appear in no log line, no metric (label or
    value) and nowhere in the summary the operator turns into status."""
    faults = Faults(
        latency=0.02,
        server_error=0.1,
        rate_limit=0.1,
        retry_after="0",
        status_for={QUESTIONS[3]: 400, QUESTIONS[4]: 422},
        echo_headers=True,
        seed=2,
    )
    with ModelServer(wrong=WRONG, faults=faults, judge=judge_verdict).in_thread() as server:
        port = free_port()
        config = tmp_path / "evaluation.json"
        spec = evaluation(
            server.base_url,
            "canary",
            model={"maxConcurrency": 4, "pricing": DOLLAR_A_TOKEN},
            task={
                "scorers": [
                    {"type": "exact_match"},
                    {
                        "type": "llm_judge",
                        "judge": {
                            "name": "judge",
                            "baseURL": server.base_url,
                            "pricing": DOLLAR_A_TOKEN,
                            "parameters": {"maxTokens": 8},
                        },
                        "rubric": "Expected: {{ target }}\nAnswer: {{ output }}\n",
                    },
                ]
            },
            budget={"maxCostUSD": "100000"},
        )
        config.write_text(spec.model_dump_json(by_alias=True, exclude_none=True))
        termination_log = tmp_path / "termination-log"
        process = start_shard(
            config,
            termination_log,
            JOB_COMPLETION_INDEX="0",
            EVAL_PROGRESS_PORT=str(port),
            EVAL_API_KEY=CANARY,
            EVAL_JUDGE_API_KEY=JUDGE_CANARY,
        )
        scrapes: list[str] = []
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            try:
                scrapes.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text)
                scrapes.append(httpx.get(f"http://127.0.0.1:{port}/progress", timeout=1).text)
            except httpx.TransportError:
                pass  # not listening yet, or already gone
            time.sleep(0.1)
        stdout, stderr = process.communicate(timeout=30)
        echoed = [r for r in server.requests if r.body["messages"][-1]["content"] == QUESTIONS[3]]
    assert process.returncode == 0, stderr
    assert echoed, "the 400 question was asked"
    metrics_text = "\n".join(s for s in scrapes if "eval_runner_requests_total" in s)
    assert 'eval_runner_requests_total{model="canary",outcome="http_400",role="model"}' in (
        metrics_text
    )
    assert 'eval_runner_errors_total{error_class="http_400"}' in metrics_text
    logs = [json.loads(line) for line in stdout.splitlines()]
    assert any(line.get("error_class") == "http_400" for line in logs)
    assert any("[redacted]" in line.get("error", "") for line in logs)  # the echo was cut
    message = termination_log.read_text()
    final = ShardSummary.model_validate_json(message)
    assert final.state == "done" and final.errors["http_400"] == 1
    assert final.usage.judge is not None and final.usage.judge.requests > 0
    for secret in (CANARY, JUDGE_CANARY):
        assert secret not in stdout + stderr
        assert secret not in "\n".join(scrapes)
        assert secret not in message


def test_run_stops_at_the_budget_prints_the_results_and_exits_3(tmp_path: Path) -> None:
    with ModelServer(wrong=WRONG).in_thread() as server:
        manifest = tmp_path / "ev.yaml"
        spec = evaluation(
            server.base_url,
            "cli-budget",
            model={"pricing": DOLLAR_A_TOKEN, "maxConcurrency": 2},
            budget={"maxRequests": 30},
        )
        manifest.write_text(spec.model_dump_json(by_alias=True, exclude_none=True))
        done = subprocess.run(
            [sys.executable, "-m", "eval_runner", "run", str(manifest), "--output", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=runner_env(),
        )
    assert done.returncode == EXIT_PERMANENT, done.stderr
    report = json.loads(done.stdout)
    assert report["stopped"]["reason"] == "BudgetExceeded"
    assert report["usage"]["requests"] == 30 == len(server.requests)
    assert report["progress"]["completed"] == 30 and report["results"][0]["n"] == 30
    assert "error: BudgetExceeded: " in done.stderr and "30 of 30 requests" in done.stderr
