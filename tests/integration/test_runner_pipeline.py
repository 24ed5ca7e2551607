"""run_shard against a real local model server: exact scores, usage, retries, failures."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from eval_api.aggregate import aggregate
from eval_api.shard import ScoreSums, ShardSummary
from eval_api.stats import score_result
from eval_api.v1alpha1 import Evaluation
from eval_runner.errors import PermanentError
from eval_runner.pipeline import run_shard
from tests.support.model_server import Faults, ModelServer

pytestmark = pytest.mark.integration

# Three of the first 20 builtin arithmetic questions, answered off by one by the server.
WRONG = ["What is 17 + 25?", "What is 90 - 45?", "What is 6 * 7?"]
SCORERS = ["exact_match", "numeric"]
KEY = "sk-test-key"


def evaluation(base_url: str, provider: str = "openai", **spec: Any) -> Evaluation:
    return Evaluation.model_validate(
        {
            "metadata": {"name": "arith", "namespace": "team"},
            "spec": {
                "model": {
                    "provider": provider,
                    "name": "test-model",
                    "baseURL": base_url,
                    "maxConcurrency": 4,
                    "parameters": {"temperature": "0", "maxTokens": 16, "seed": 1, "stop": ["\n"]},
                    "pricing": {"inputPerMillionUSD": "0.15", "outputPerMillionUSD": "0.60"},
                },
                "dataset": {"builtin": "arithmetic", "limit": 20},
                "task": {
                    "systemPrompt": "You are a calculator.",
                    "promptTemplate": "Answer with only the number. {{ input }}",
                    "scorers": [{"type": "exact_match"}, {"type": "numeric"}],
                },
                **spec,
            },
        }
    )


def expected_cost(server: ModelServer) -> str:
    cost = (Decimal("0.15") * server.input_tokens + Decimal("0.60") * server.output_tokens) / 10**6
    return format(cost.normalize(), "f")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_exact_scores_and_usage(provider: str) -> None:
    async with ModelServer(wrong=WRONG) as server:
        summary = await run_shard(evaluation(server.base_url, provider), 0, 1, KEY)
    result = aggregate([summary], SCORERS)
    assert summary.state == "done"
    assert (summary.total, summary.completed, summary.failed, summary.errors) == (20, 20, 0, {})
    assert [(r.name, r.value, r.n) for r in result.results] == [
        ("exact_match", 0.85, 20),
        ("numeric", 0.85, 20),
    ]
    assert summary.usage.requests == len(server.requests) == 20
    assert summary.usage.input_tokens == server.input_tokens > 0
    assert summary.usage.output_tokens == server.output_tokens == 20
    assert summary.usage.cost_usd == expected_cost(server)


async def test_openai_requests_carry_key_and_parameters() -> None:
    async with ModelServer() as server:
        await run_shard(evaluation(server.base_url), 0, 1, KEY)
    request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    body = request.body
    assert (body["model"], body["temperature"], body["max_tokens"], body["seed"], body["stop"]) == (
        "test-model",
        0.0,
        16,
        1,
        ["\n"],
    )
    assert body["messages"][0] == {"role": "system", "content": "You are a calculator."}
    assert body["messages"][1]["content"].startswith("Answer with only the number. What is")


async def test_anthropic_requests_follow_the_messages_api() -> None:
    async with ModelServer() as server:
        await run_shard(evaluation(server.base_url, "anthropic"), 0, 1, KEY)
    request = server.requests[0]
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in request.headers
    assert request.body["system"] == "You are a calculator."
    assert [m["role"] for m in request.body["messages"]] == ["user"]
    assert request.body["stop_sequences"] == ["\n"] and "seed" not in request.body


async def test_two_shards_aggregate_to_one() -> None:
    async with ModelServer(wrong=WRONG) as server:
        ev = evaluation(
            server.base_url, dataset={"builtin": "arithmetic", "limit": 20, "shuffleSeed": 3}
        )
        whole = await run_shard(ev, 0, 1, KEY)
        parts = [await run_shard(ev, i, 2, KEY) for i in range(2)]
    assert [p.total for p in parts] == [10, 10]
    assert aggregate(parts, SCORERS) == aggregate([whole], SCORERS)


async def test_rate_limits_are_retried_and_never_scored() -> None:
    async with ModelServer(wrong=WRONG) as server:
        clean = await run_shard(evaluation(server.base_url), 0, 1, KEY)
    async with ModelServer(wrong=WRONG, faults=Faults(rate_limit_first=6)) as server:
        throttled = await run_shard(evaluation(server.base_url), 0, 1, KEY)
    assert throttled.scores == clean.scores
    assert (throttled.completed, throttled.failed, throttled.errors) == (20, 0, {})
    assert throttled.usage.requests == len(server.requests) == 26
    assert throttled.usage.input_tokens == clean.usage.input_tokens  # 429s are not billed


async def test_retry_after_is_honoured() -> None:
    faults = Faults(rate_limit_first=1, retry_after="1")
    async with ModelServer(faults=faults) as server:
        started = time.monotonic()
        summary = await run_shard(
            evaluation(server.base_url, dataset={"builtin": "arithmetic", "limit": 1}), 0, 1, KEY
        )
        elapsed = time.monotonic() - started
    assert summary.completed == 1 and summary.usage.requests == 2
    assert 1.0 <= elapsed < 3.0


async def test_failed_requests_are_counted_not_scored() -> None:
    # One question always gets a 400 (not retried), another always a 429 (retried within the
    # throttling budget of 20 attempts, then given up).
    faults = Faults(status_for={"What is 17 + 25?": 400, "What is 48 + 36?": 429})
    async with ModelServer(wrong=WRONG, faults=faults) as server:
        summary = await run_shard(evaluation(server.base_url), 0, 1, KEY)
    result = aggregate([summary], SCORERS)
    assert summary.state == "done"
    assert (summary.completed, summary.failed) == (18, 2)
    assert summary.errors == {"http_400": 1, "http_429": 1}
    assert summary.usage.requests == len(server.requests) == 18 + 1 + 20
    # 2 wrong answers among the 18 scored: the failures are not counted as wrong
    assert [(r.value, r.n) for r in result.results] == [(round(16 / 18, 6), 18)] * 2


async def test_live_summary_and_progress_callback() -> None:
    seen: list[tuple[str, int, int]] = []
    summary = ShardSummary()

    def record(live: ShardSummary) -> None:
        assert live is summary
        seen.append((live.state, live.total, live.completed))

    async with ModelServer() as server:
        returned = await run_shard(
            evaluation(server.base_url), 1, 4, KEY, summary=summary, on_progress=record
        )
    assert returned is summary and summary.state == "done"
    assert (summary.shard, summary.shards, summary.total) == (1, 4, 5)
    assert seen == [("running", 5, n) for n in range(6)]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (
            {"task": {"promptTemplate": "{{ question }}", "scorers": [{"type": "exact_match"}]}},
            "TemplateError",
        ),
        ({"dataset": {"inline": [{"input": "a"}, {"prompt": "b"}]}}, "DatasetInvalid"),
        ({"dataset": {"url": "http://127.0.0.1:1/x.jsonl", "sha256": "0" * 64}}, None),
    ],
)
async def test_errors_stop_the_shard_before_any_request(
    spec: dict[str, Any], reason: str | None
) -> None:
    summary = ShardSummary()
    async with ModelServer() as server:
        with pytest.raises(Exception) as caught:
            await run_shard(evaluation(server.base_url, **spec), 0, 1, KEY, summary=summary)
    assert server.requests == []
    assert summary.state == "error"
    if reason:  # bad input: permanent
        assert isinstance(caught.value, PermanentError)
        assert summary.reason == reason
    else:  # an unreachable dataset URL may come back: retryable
        assert not isinstance(caught.value, PermanentError)
        assert summary.reason == "RunnerError"
        assert "cannot connect to 127.0.0.1:1: connection refused" in (summary.message or "")


async def test_grouped_samples_stay_in_one_shard_and_shards_add_up_to_one_pod() -> None:
    """With task.groupField the standard error is clustered by group; every group is scored in
    one shard, so the operator's sum of two shards is what one pod computes."""
    records = [
        {"input": f"What is {i} + {j}?", "target": str(i + j + (1 if (i + j) % 4 == 0 else 0)),
         "passage": f"p{i}"}
        for i in range(7)
        for j in range(3)
    ]  # fmt: skip
    async with ModelServer() as server:
        ev = evaluation(
            server.base_url,
            dataset={"inline": records, "shuffleSeed": 5},
            task={"groupField": "passage", "scorers": [{"type": "exact_match"}]},
        )
        whole = await run_shard(ev, 0, 1, KEY)
        parts = [await run_shard(ev, i, 2, KEY) for i in range(2)]
    assert sum(p.total for p in parts) == whole.total == 21
    assert [p.scores["exact_match"].groups for p in parts] in ([4, 3], [3, 4])
    merged, alone = aggregate(parts, ["exact_match"]), aggregate([whole], ["exact_match"])
    assert merged.results == alone.results
    sums = whole.scores["exact_match"]
    plain = score_result("exact_match", ScoreSums(n=sums.n, sum=sums.sum, sumsq=sums.sumsq))
    clustered = alone.results[0]
    assert clustered.value == plain.value and clustered.stderr != plain.stderr


async def test_a_record_without_the_group_field_is_bad_input() -> None:
    async with ModelServer() as server:
        ev = evaluation(
            server.base_url,
            dataset={"inline": [{"input": "a", "passage": "p"}, {"input": "b"}]},
            task={"groupField": "passage", "scorers": [{"type": "exact_match"}]},
        )
        with pytest.raises(PermanentError) as caught:
            await run_shard(ev, 0, 1, KEY)
    assert caught.value.reason == "DatasetInvalid"
    assert "sample 1 has no field 'passage' (task.groupField)" in caught.value.message
