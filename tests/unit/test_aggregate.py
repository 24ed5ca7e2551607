"""The sum of shard summaries (eval_api.aggregate) and the termination message it is read from."""

from __future__ import annotations

import random

from eval_api.aggregate import aggregate
from eval_api.shard import (
    TERMINATION_MESSAGE_LIMIT,
    BaselineSums,
    PairedSums,
    ScoreSums,
    ShardSummary,
    ShardUsage,
)


def shard(completed: int, failed: int, **fields: object) -> ShardSummary:
    return ShardSummary(
        total=completed + failed,
        completed=completed,
        failed=failed,
        scores={"exact_match": ScoreSums(n=completed, sum=completed, sumsq=completed)},
        **fields,
    )


def test_progress_never_reads_as_done_when_samples_errored() -> None:
    assert aggregate([shard(40, 0)], ["exact_match"]).progress.summary == "40/40"
    errored = {"errors": {"http_401": 40}}
    assert aggregate([shard(0, 40, **errored)], ["exact_match"]).progress.summary == (
        "0/40, 40 errored"
    )
    two = aggregate([shard(19, 1, errors={"timeout": 1}), shard(19, 1)], ["exact_match"])
    assert two.progress.summary == "38/40, 2 errored"


def test_every_scorer_appears_even_with_nothing_scored() -> None:
    result = aggregate([shard(10, 0)], ["exact_match", "judged"])
    assert [(r.name, r.n) for r in result.results] == [("exact_match", 10), ("judged", 0)]
    judged = result.results[1]
    assert (judged.value, judged.stderr, judged.ci95) == (None, None, None)


def test_usage_sums_prompt_cache_tokens_timeouts_and_truncation_apart_from_cache_hits() -> None:
    usage = ShardUsage(
        requests=12,
        input_tokens=300,
        output_tokens=40,
        prompt_cache_tokens=100,
        timed_out=2,
        truncated=3,
        cost_usd="0.5",
        judge=ShardUsage(requests=10, timed_out=1, truncated=1, cost_usd="0.25"),
    )
    result = aggregate([shard(10, 0, usage=usage), shard(10, 0, usage=usage)], ["exact_match"])
    u = result.usage
    assert (u.requests, u.prompt_cache_tokens, u.cache_hits, u.timed_out, u.truncated) == (
        24,
        200,
        0,
        4,
        6,
    )
    assert u.cost_usd == "1.0" and u.judge is not None
    assert (u.judge.requests, u.judge.timed_out, u.judge.truncated) == (20, 2, 2)
    dumped = u.model_dump(by_alias=True)
    assert {"promptCacheTokens", "cacheHits", "timedOut", "truncated"} <= set(dumped)


def test_too_many_errors_and_no_sample_scored() -> None:
    few = aggregate([shard(97, 3, errors={"http_500": 3})], ["exact_match"])
    assert few.too_many_errors("0.05") is None
    many = aggregate([shard(90, 10, errors={"http_500": 6, "timeout": 4})], ["exact_match"])
    assert many.too_many_errors("0.05") == (
        "10 of 100 finished samples errored (10.0%, never scored), above "
        "execution.maxErroredFraction 0.05: http_500=6, timeout=4"
    )
    assert many.too_many_errors("0.1") is None
    none = aggregate([shard(0, 5, errors={"http_422": 5})], ["exact_match"])
    assert none.too_many_errors("1") == (
        "5 of 5 finished samples errored (100.0%, never scored), no sample was scored: http_422=5"
    )
    assert aggregate([shard(0, 0)], ["exact_match"]).too_many_errors("0") is None


def test_truncated_answers_note_above_5_percent() -> None:
    def with_truncated(n: int) -> ShardSummary:
        return shard(100, 0, usage=ShardUsage(requests=100, truncated=n))

    assert aggregate([with_truncated(5)], ["exact_match"]).truncated_note() is None
    note = aggregate([with_truncated(6)], ["exact_match"]).truncated_note()
    assert note is not None and note.startswith("6 of 100 answers (6.0%) were cut at maxTokens")


def test_the_termination_message_fits_with_clustered_sums_and_every_usage_field() -> None:
    rng = random.Random(1)
    scores = {}
    for index in range(16):  # the most scorers a task may have
        sums, running = ScoreSums(), {}
        for _ in range(5000):
            sums.add(rng.random(), running.setdefault(f"g{rng.randrange(800)}", [0, 0.0]))
        scores[f"scorer_with_a_long_name_{index:02d}"] = sums
    usage = ShardUsage(
        requests=987654,
        input_tokens=123456789,
        output_tokens=98765432,
        prompt_cache_tokens=1234567,
        timed_out=4321,
        truncated=5432,
        cost_usd="12345.678901234567",
        judge=ShardUsage(requests=987654, input_tokens=123456789, cost_usd="999.123456789"),
    )
    summary = ShardSummary(
        shard=999,
        shards=1000,
        state="error",
        total=5000,
        completed=4000,
        failed=1000,
        scores=scores,
        usage=usage,
        errors={f"http_{400 + i}": 10 + i for i in range(100)},
        reason="TooManyErrors",
        message="x" * 3000,
    )
    message = summary.to_message()
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    back = ShardSummary.model_validate_json(message)
    assert back.scores == scores and back.usage == usage  # sums and usage arrive whole
    assert sum(back.errors.values()) == sum(summary.errors.values())


def test_the_regression_gates_pairs_are_left_out_of_a_termination_message_too_long() -> None:
    """16 long-named scorers with the sequential sums and their pairs with the baseline: the
    pairs go (the operator decided on the live ones), scores and usage arrive whole; a shard
    of a few scorers keeps them."""
    rng = random.Random(2)

    def shard(scorers: int) -> ShardSummary:
        scores, paired = {}, {}
        for index in range(scorers):
            sums, pairs = ScoreSums(), PairedSums()
            for _ in range(3000):
                value = rng.random()
                sums.add(value)
                pairs.add(value, rng.random())
            sums.add_sequential(sums.n, sums.sum)
            name = f"a_scorer_with_quite_a_long_name_{index:02d}"
            scores[name], paired[name] = sums, pairs
        return ShardSummary(
            shard=3, shards=8, state="done", total=3000, completed=3000, scores=scores,
            run_total=24000, baseline=BaselineSums(
                run="nightly-model-with-a-long-name-task-with-a-long-name-abcdef",
                suite_run="20261206-020000", paired=paired, unpaired=12,
            ),
        )  # fmt: skip

    large = shard(16)
    assert len(large.model_dump_json(by_alias=True, exclude_none=True)) > TERMINATION_MESSAGE_LIMIT
    back = ShardSummary.model_validate_json(large.to_message())
    assert back.baseline is None and back.scores == large.scores
    small = shard(2)
    assert ShardSummary.model_validate_json(small.to_message()).baseline == small.baseline
