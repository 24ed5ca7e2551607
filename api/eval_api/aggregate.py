"""The sum of shard summaries, in the shape an Evaluation's status (or a local run) shows, and
the verdicts on errors and truncation that the operator and local runs share."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

from eval_api import cel
from eval_api.shard import ScoreSums, ShardSummary, ShardUsage
from eval_api.stats import score_result
from eval_api.v1alpha1.evaluation import Progress, ScoreResult, Usage

# Above this share of truncated answers the run says so (CLI warning, condition message).
TRUNCATED_NOTE_FRACTION = Decimal("0.05")
# Above this fraction of errored samples among the finished ones, status messages say so
# (documented on status.progress.failed); above execution.maxErroredFraction the run fails.
ERRORED_NOTE_FRACTION = Decimal("0.05")
TOP_ERROR_CLASSES = 3


class Aggregate(BaseModel):
    """The sum of shard summaries, in the shape status wants."""

    progress: Progress
    results: list[ScoreResult]
    usage: Usage
    errors: dict[str, int]
    # Each scorer's sums over the shards (what early stopping decides on).
    sums: dict[str, ScoreSums] = {}

    def too_many_errors(self, max_errored_fraction: str) -> str | None:
        """Why the run cannot pass (reason TooManyErrors), or None: more errored samples than
        execution.maxErroredFraction of the finished ones, or none scored at all."""
        p = self.progress
        finished = p.completed + p.failed
        if not p.failed:
            return None
        share = Decimal(p.failed) / finished
        if p.completed and share <= Decimal(max_errored_fraction):
            return None
        limit = (
            "no sample was scored"
            if not p.completed
            else f"above execution.maxErroredFraction {max_errored_fraction}"
        )
        return (
            f"{p.failed} of {finished} finished samples errored ({100 * share:.1f}%, never "
            f"scored), {limit}: {self.top_errors()}"
        )

    def errored_note(self) -> str | None:
        """A note when more than 5% of the finished samples errored, else None."""
        p = self.progress
        finished = p.completed + p.failed
        if not finished or Decimal(p.failed) / finished <= ERRORED_NOTE_FRACTION:
            return None
        return (
            f"{p.failed} of {finished} finished samples errored "
            f"({100 * p.failed / finished:.1f}%, never scored): {self.top_errors()}"
        )

    def top_errors(self) -> str:
        top = sorted(self.errors.items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{name}={count}" for name, count in top[:TOP_ERROR_CLASSES])

    def truncated_note(self) -> str | None:
        """A note when more than 5% of the model's answers were cut at maxTokens, else None."""
        answers = self.progress.completed + self.errors_after_answer()
        truncated = self.usage.truncated
        if not answers or Decimal(truncated) / answers <= TRUNCATED_NOTE_FRACTION:
            return None
        return (
            f"{truncated} of {answers} answers ({100 * truncated / answers:.1f}%) were cut at "
            "maxTokens (finish_reason length / stop_reason max_tokens) and scored as they are: "
            "raise model.parameters.maxTokens"
        )

    def errors_after_answer(self) -> int:
        """Errored samples that had the model's answer (their judge failed)."""
        return sum(count for name, count in self.errors.items() if name.startswith("judge_"))


def progress_summary(completed: int, failed: int, total: int | None) -> str:
    """ "120/500": samples scored of the total; the errored ones are named apart ("0/40, 40
    errored"), so a run whose samples all failed never reads as done."""
    text = f"{completed}/{total if total is not None else '?'}"
    return f"{text}, {failed} errored" if failed else text


def aggregate(
    summaries: list[ShardSummary], scorer_names: list[str], total: int | None = None
) -> Aggregate:
    """Sum shards. `scorer_names` fixes the order of results (the first is the main score);
    every scorer appears, n 0 when nothing was scored. `total` overrides the sum of shard
    totals when the caller knows the dataset size."""
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
            summary=progress_summary(completed, failed, grand_total) if grand_total else "",
        ),
        results=[score_result(name, sums) for name, sums in scores.items()],
        # The shard contract and the status share field names; judges have no response cache.
        usage=Usage.model_validate(
            usage.model_dump(by_alias=True, exclude={"judge": {"cache_hits", "cache_saved_usd"}}),
            context=cel.ADMITTED,
        ),
        errors=errors,
        sums=scores,
    )
