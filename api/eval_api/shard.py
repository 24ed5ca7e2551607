"""The contract between runner pods and the operator: the shard summary.

A runner pod serves its summary at GET /progress while it runs and writes the final one to its
termination message (/dev/termination-log, at most 4096 bytes) when it exits, as Tekton does.
Scores travel as sufficient statistics (n, sum, sum of squares per scorer), so the aggregate
over shards (eval_api.aggregate) is exactly what a single pod would have computed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eval_api.sequential import variance_increment

# The kubelet keeps at most this many bytes of a container's termination message.
TERMINATION_MESSAGE_LIMIT = 4096


class ScoreSums(BaseModel):
    """Sufficient statistics of one scorer over a shard: enough for mean, stderr and ci95.

    With task.groupField, also the sums over the shard's groups that a cluster-robust standard
    error needs (G, and over the groups g with n_g samples scoring S_g: sum S_g^2, sum n_g S_g,
    sum n_g^2). They add up over shards because the runner keeps every group in one shard.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    n: int = 0
    sum: float = 0.0
    sumsq: float = 0.0
    groups: int | None = None
    group_sumsq: float | None = Field(default=None, alias="groupSumsq")
    group_cross: float | None = Field(default=None, alias="groupCross")
    group_nsq: int | None = Field(default=None, alias="groupNsq")
    # With execution.earlyStop: what the confidence sequence counts, the scores of the samples
    # in the shard's finished prefix of its asking order (a sample counts once every one asked
    # before it has finished: the order of finishing can depend on the answers, the order of
    # asking cannot); with task.groupField only whole groups of that prefix, and how many.
    seq_n: int | None = Field(default=None, alias="seqN")
    seq_sum: float | None = Field(default=None, alias="seqSum")
    seq_groups: int | None = Field(default=None, alias="seqGroups")

    def add(self, value: float, group: list[float] | None = None) -> None:
        """Count one score. `group` is the running [n_g, S_g] of the sample's group in this
        shard (updated here), or None without task.groupField."""
        self.n += 1
        self.sum += value
        self.sumsq += value * value
        if group is None:
            return
        n_g, s_g = group
        self.groups = (self.groups or 0) + (1 if n_g == 0 else 0)
        self.group_sumsq = (self.group_sumsq or 0.0) + 2 * s_g * value + value * value
        self.group_cross = (self.group_cross or 0.0) + s_g + (n_g + 1) * value
        self.group_nsq = (self.group_nsq or 0) + 2 * int(n_g) + 1
        group[0], group[1] = n_g + 1, s_g + value

    def add_sequential(self, n: int, total: float, groups: int | None = None) -> None:
        """Count `n` scores summing to `total` (and `groups` whole groups) into the sums the
        confidence sequence reads."""
        self.seq_n = (self.seq_n or 0) + n
        self.seq_sum = (self.seq_sum or 0.0) + total
        if groups is not None:
            self.seq_groups = (self.seq_groups or 0) + groups

    def merged(self, other: ScoreSums) -> ScoreSums:
        grouped = self.groups is not None or other.groups is not None

        def plus(a: float | None, b: float | None) -> float | None:
            return (a or 0) + (b or 0) if grouped else None

        def plus_any(a: float | None, b: float | None) -> float | None:
            return None if a is None and b is None else (a or 0) + (b or 0)

        return ScoreSums(
            n=self.n + other.n,
            sum=self.sum + other.sum,
            sumsq=self.sumsq + other.sumsq,
            groups=plus(self.groups, other.groups),
            group_sumsq=plus(self.group_sumsq, other.group_sumsq),
            group_cross=plus(self.group_cross, other.group_cross),
            group_nsq=plus(self.group_nsq, other.group_nsq),
            seq_n=plus_any(self.seq_n, other.seq_n),
            seq_sum=plus_any(self.seq_sum, other.seq_sum),
            seq_groups=plus_any(self.seq_groups, other.seq_groups),
        )


class PairedSums(BaseModel):
    """The regression gate's sequence for one scorer (an EvalSuite cell with a baseline and
    execution.earlyStop): over the shard's finished prefix of its asking order, the samples
    both runs scored, each as (candidate - baseline + 1) / 2 in [0, 1]: their count, sum and
    variance process (sum of squared distances from the running mean before each,
    eval_api.sequential.bernstein_sequence). All three add up over shards."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    n: int = 0
    sum: float = 0.0
    variance: float = 0.0

    def add(self, candidate: float, baseline: float) -> None:
        value = min(1.0, max(0.0, (candidate - baseline + 1) / 2))
        self.variance += variance_increment(self.n, self.sum, value)
        self.n += 1
        self.sum += value

    def merged(self, other: PairedSums) -> PairedSums:
        return PairedSums(
            n=self.n + other.n, sum=self.sum + other.sum, variance=self.variance + other.variance
        )


class BaselineSums(BaseModel):
    """What a suite cell's shard paired with its baseline run (the suite's spec.baseline, found
    in the store as the cell report finds it) for the regression gate to decide early."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    run: str | None = Field(
        default=None, description="The baseline run (its Job name); None: the cell has none."
    )
    suite_run: str | None = Field(default=None, alias="suiteRun")
    scorers: list[str] | None = Field(
        default=None,
        description=(
            "The results both runs have, known before any pair: the ones the gate decides on "
            "(None: every result of this run)."
        ),
    )
    paired: dict[str, PairedSums] = Field(default_factory=dict)
    unpaired: int = Field(
        default=0,
        description=(
            "Samples of the prefix left out of the pairs: the baseline did not score their "
            "record exactly once, or this run could not score them."
        ),
    )

    def merged(self, other: BaselineSums) -> BaselineSums | None:
        """Both shards' sums; None when they paired with different runs (never decided)."""
        if (self.run, self.suite_run, self.scorers) != (other.run, other.suite_run, other.scorers):
            return None
        paired = dict(self.paired)
        for name, sums in other.paired.items():
            paired[name] = paired[name].merged(sums) if name in paired else sums
        return BaselineSums(
            run=self.run,
            suite_run=self.suite_run,
            scorers=self.scorers,
            paired=paired,
            unpaired=self.unpaired + other.unpaired,
        )


class ShardUsage(BaseModel):
    """What a shard consumed: the model's requests, and its judges' apart in `judge`."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    requests: int = 0
    input_tokens: int = Field(default=0, alias="inputTokens")
    output_tokens: int = Field(default=0, alias="outputTokens")
    prompt_cache_tokens: int = Field(default=0, alias="promptCacheTokens")
    cache_hits: int = Field(default=0, alias="cacheHits")
    timed_out: int = Field(default=0, alias="timedOut")
    truncated: int = 0
    cost_usd: str = Field(default="0", alias="costUSD")
    # What the response cache's hits would have cost at the model's pricing (not in costUSD).
    cache_saved_usd: str = Field(default="0", alias="cacheSavedUSD")
    judge: ShardUsage | None = None

    def merged(self, other: ShardUsage) -> ShardUsage:
        judge = self.judge
        if other.judge is not None:
            judge = other.judge if judge is None else judge.merged(other.judge)
        return ShardUsage(
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            prompt_cache_tokens=self.prompt_cache_tokens + other.prompt_cache_tokens,
            cache_hits=self.cache_hits + other.cache_hits,
            timed_out=self.timed_out + other.timed_out,
            truncated=self.truncated + other.truncated,
            cost_usd=format(Decimal(self.cost_usd) + Decimal(other.cost_usd), "f"),
            cache_saved_usd=format(
                Decimal(self.cache_saved_usd) + Decimal(other.cache_saved_usd), "f"
            ),
            judge=judge,
        )

    def total_cost(self) -> Decimal:
        """Model and judge cost together: what budgets limit."""
        return Decimal(self.cost_usd) + (self.judge.total_cost() if self.judge else Decimal(0))


class ResumedSamples(BaseModel):
    """What a shard found already stored by its earlier attempts (a run with a store)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    samples: int = Field(
        default=0, description="Samples finished by earlier attempts; not asked again."
    )
    usage: ShardUsage = Field(
        default_factory=ShardUsage,
        description=(
            "What those samples used when they were asked (the model's requests only). Not in "
            "the summary's usage, which is this attempt's own: the earlier attempts reported "
            "theirs, and a budget is never charged for them twice."
        ),
    )


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
    reserved_usd: str | None = Field(
        default=None,
        alias="reservedUSD",
        description=(
            "Worst-case cost of the requests in flight when this summary was written. A "
            "running shard rewrites its termination message before each request it sends "
            "under a budget, so the message a killed pod leaves behind still counts them: "
            "they may have been billed. None (or 0) once the shard ended on its own."
        ),
    )

    resumed: ResumedSamples | None = Field(
        default=None,
        description=(
            "With a store: the samples earlier attempts had finished. They are counted in "
            "completed, failed, errors and scores (so the latest attempt's summary is the "
            "whole shard's), but not in usage."
        ),
    )
    run_total: int | None = Field(
        default=None,
        alias="runTotal",
        description=(
            "With execution.earlyStop: the samples of the whole run (every shard's), known to "
            "each shard from the dataset."
        ),
    )
    max_group: int | None = Field(
        default=None,
        alias="maxGroup",
        description=(
            "With execution.earlyStop and task.groupField: the most samples a group of the "
            "whole run has (bounds a group's weight in the confidence sequence; the same in "
            "every shard)."
        ),
    )
    stopped: str | None = Field(
        default=None,
        description=(
            "Set when the operator (execution.earlyStop) stopped the shard before its last "
            "sample: the reason. The requests in flight finished and are counted; the samples "
            "never asked are in total only."
        ),
    )
    baseline: BaselineSums | None = Field(
        default=None,
        description=(
            "A suite cell with execution.earlyStop and a baseline: the paired sums the "
            "regression gate decides on."
        ),
    )
    cache_unavailable: str | None = Field(
        default=None,
        alias="cacheUnavailable",
        description=(
            "Set when the response cache could not be used at some point of the run (down, "
            "refusing the password, out of memory): why. The run went on without it."
        ),
    )

    def spent(self) -> tuple[Decimal, int]:
        """What this attempt may have cost at most, and the requests it sent (model and
        judges): settled cost plus the worst case of what was in flight."""
        judge = self.usage.judge
        requests = self.usage.requests + (judge.requests if judge else 0)
        return self.usage.total_cost() + Decimal(self.reserved_usd or 0), requests

    def to_message(self) -> str:
        """Compact JSON for the termination message, at most TERMINATION_MESSAGE_LIMIT bytes:
        when too long, the error message is cut first, then the regression gate's pairs are
        left out, then the rarest error classes are folded into "other" (their counts kept),
        so scores and usage always arrive whole."""
        text = self.model_dump_json(by_alias=True, exclude_none=True)
        summary = self
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT and summary.message:
            room = len(summary.message) - (len(text.encode()) - TERMINATION_MESSAGE_LIMIT) - 3
            summary = summary.model_copy(
                update={"message": summary.message[: max(room, 0)] + "..."}
            )
            text = summary.model_dump_json(by_alias=True, exclude_none=True)
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT and summary.baseline is not None:
            # The regression gate's pairs go next: the operator decides on the live ones, and a
            # run decided before this shard ended keeps its decision.
            summary = summary.model_copy(update={"baseline": None})
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
