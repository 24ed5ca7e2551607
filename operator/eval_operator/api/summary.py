"""The contract between runner pods and the operator: a shard summary, and its exact aggregation.

A runner pod serves its summary at GET /progress while it runs and writes the final one to its
termination message (/dev/termination-log, at most 4096 bytes) when it exits, as Tekton does. The
operator sums the shards' sufficient statistics (n, sum, sum of squares per scorer), so the
aggregate over shards is exactly the aggregate a single pod would have computed.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eval_operator.api.v1alpha1 import JudgeUsage, Progress, ScoreResult, Usage

# Exit codes of the runner. Permanent errors fail the index at once (the Job's podFailurePolicy
# maps this code to FailIndex), anything else non-zero is retried up to backoffLimitPerIndex.
EXIT_OK = 0
EXIT_PERMANENT = 3

TERMINATION_MESSAGE_LIMIT = 4096


def judge_key_env(index: int) -> str:
    """The environment variable holding the key of the index-th llm_judge scorer's judge: the
    Job builder mounts it there, the runner reads it there."""
    return "EVAL_JUDGE_API_KEY" if index == 0 else f"EVAL_JUDGE_API_KEY_{index}"


Z_95 = 1.959963984540054


class ScoreSums(BaseModel):
    """Sufficient statistics of one scorer over a shard: enough for mean, stderr and ci95."""

    model_config = ConfigDict(extra="ignore")

    n: int = 0
    sum: float = 0.0
    sumsq: float = 0.0

    def add(self, value: float) -> None:
        self.n += 1
        self.sum += value
        self.sumsq += value * value

    def merged(self, other: ScoreSums) -> ScoreSums:
        return ScoreSums(
            n=self.n + other.n, sum=self.sum + other.sum, sumsq=self.sumsq + other.sumsq
        )


class ShardUsage(BaseModel):
    """What a shard consumed: the model's requests, and its judges' apart in `judge`."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    requests: int = 0
    input_tokens: int = Field(default=0, alias="inputTokens")
    output_tokens: int = Field(default=0, alias="outputTokens")
    cache_hits: int = Field(default=0, alias="cacheHits")
    cost_usd: str = Field(default="0", alias="costUSD")
    judge: ShardUsage | None = None

    def merged(self, other: ShardUsage) -> ShardUsage:
        judge = self.judge
        if other.judge is not None:
            judge = other.judge if judge is None else judge.merged(other.judge)
        return ShardUsage(
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_hits=self.cache_hits + other.cache_hits,
            cost_usd=format(Decimal(self.cost_usd) + Decimal(other.cost_usd), "f"),
            judge=judge,
        )

    def total_cost(self) -> Decimal:
        """Model and judge cost together: what budgets limit."""
        return Decimal(self.cost_usd) + (self.judge.total_cost() if self.judge else Decimal(0))


class ShardSummary(BaseModel):
    """What one shard reports; small enough for a termination message."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    shard: int = 0
    shards: int = 1
    state: Literal["running", "done", "error"] = "running"
    total: int = 0
    completed: int = 0
    failed: int = 0
    scores: dict[str, ScoreSums] = Field(default_factory=dict)
    usage: ShardUsage = Field(default_factory=ShardUsage)
    errors: dict[str, int] = Field(
        default_factory=dict, description="Failed samples by error class."
    )
    reason: str | None = Field(default=None, description="CamelCase reason when state is error.")
    message: str | None = Field(default=None, description="Details when state is error.")

    def to_message(self) -> str:
        """Compact JSON for the termination message, at most TERMINATION_MESSAGE_LIMIT bytes:
        when too long, the error message is cut first, then the rarest error classes are
        folded into "other" (their counts kept), so scores and usage always arrive whole."""
        text = self.model_dump_json(by_alias=True, exclude_none=True)
        summary = self
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT and summary.message:
            room = len(summary.message) - (len(text.encode()) - TERMINATION_MESSAGE_LIMIT) - 3
            summary = summary.model_copy(
                update={"message": summary.message[: max(room, 0)] + "..."}
            )
            text = summary.model_dump_json(by_alias=True, exclude_none=True)
        ranked = sorted(summary.errors.items(), key=lambda item: (-item[1], item[0]))
        keep = len(ranked)
        while len(text.encode()) > TERMINATION_MESSAGE_LIMIT and keep > 0:
            keep -= 1
            errors = dict(ranked[:keep])
            errors["other"] = errors.get("other", 0) + sum(count for _, count in ranked[keep:])
            summary = summary.model_copy(update={"errors": errors})
            text = summary.model_dump_json(by_alias=True, exclude_none=True)
        return text


def score_result(name: str, sums: ScoreSums) -> ScoreResult:
    """Mean, standard error and a normal-approximation 95% interval clipped to [0, 1]
    (every scorer's values lie in [0, 1])."""
    n = sums.n
    mean = sums.sum / n if n else 0.0
    if n > 1:
        variance = max(sums.sumsq - n * mean * mean, 0.0) / (n - 1)
        stderr = math.sqrt(variance / n)
    else:
        stderr = 0.0
    low = max(0.0, mean - Z_95 * stderr)
    high = min(1.0, mean + Z_95 * stderr)
    return ScoreResult(
        name=name,
        value=round(mean, 6),
        stderr=round(stderr, 6),
        ci95=[round(low, 6), round(high, 6)],
        n=n,
    )


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
