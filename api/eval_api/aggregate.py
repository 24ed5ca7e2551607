"""The sum of shard summaries, in the shape an Evaluation's status (or a local run) shows."""

from __future__ import annotations

from pydantic import BaseModel

from eval_api.shard import ScoreSums, ShardSummary, ShardUsage
from eval_api.stats import score_result
from eval_api.v1alpha1 import JudgeUsage, Progress, ScoreResult, Usage


class Aggregate(BaseModel):
    """The sum of shard summaries, in the shape status wants."""

    progress: Progress
    results: list[ScoreResult]
    usage: Usage
    errors: dict[str, int]


def aggregate(
    summaries: list[ShardSummary], scorer_names: list[str], total: int | None = None
) -> Aggregate:
    """Sum shards. `scorer_names` fixes the order of results (the first is the main score);
    `total` overrides the sum of shard totals when the caller knows the dataset size."""
    scores = {name: ScoreSums() for name in scorer_names}
    usage = ShardUsage()
    errors: dict[str, int] = {}
    completed = failed = shard_total = 0
    for summary in summaries:
        completed += summary.completed
        failed += summary.failed
        shard_total += summary.total
        usage = usage.merged(summary.usage)
        for name, sums in summary.scores.items():
            if name in scores:
                scores[name] = scores[name].merged(sums)
        for error_class, count in summary.errors.items():
            errors[error_class] = errors.get(error_class, 0) + count
    grand_total = shard_total if total is None else total
    return Aggregate(
        progress=Progress(
            total=grand_total,
            completed=completed,
            failed=failed,
            summary=f"{completed + failed}/{grand_total}" if grand_total else "",
        ),
        results=[score_result(name, sums) for name, sums in scores.items() if sums.n],
        usage=Usage(
            requests=usage.requests,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_hits=usage.cache_hits,
            cost_usd=usage.cost_usd,
            judge=None
            if usage.judge is None
            else JudgeUsage(
                requests=usage.judge.requests,
                input_tokens=usage.judge.input_tokens,
                output_tokens=usage.judge.output_tokens,
                cost_usd=usage.judge.cost_usd,
            ),
        ),
        errors=errors,
    )
