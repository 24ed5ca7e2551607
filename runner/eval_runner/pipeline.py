"""One shard, start to end: load -> render -> ask -> score -> tally into a live ShardSummary."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from eval_api.shard import ScoreSums, ShardSummary, ShardUsage
from eval_api.v1alpha1 import Evaluation
from eval_runner import metrics
from eval_runner.budget import Budget, BudgetExceeded, usd
from eval_runner.client import HttpModelClient, ModelClient, RequestFailed
from eval_runner.dataset import DEFAULT_DATASET_DIR, Sample, load_samples, shard_samples
from eval_runner.errors import PermanentError
from eval_runner.prompt import Message, PromptBuilder
from eval_runner.scorers import (
    JudgeScorer,
    Scorer,
    ScoreUnavailable,
    build_judge_scorer,
    build_scorer,
    needs_judge,
)
from eval_runner.transport import TransportKind, open_transport

log = structlog.get_logger()

ProgressCallback = Callable[[ShardSummary], None]
BUDGET_EXCEEDED = "BudgetExceeded"


class BudgetStopped(PermanentError):
    """The shard stopped at its share of the budget; its summary keeps the results so far."""

    def __init__(self, message: str) -> None:
        super().__init__(BUDGET_EXCEEDED, message)


async def run_shard(
    evaluation: Evaluation,
    shard: int,
    shards: int,
    api_key: str | None,
    *,
    judge_api_keys: Sequence[str | None] = (),
    dataset_dir: Path = DEFAULT_DATASET_DIR,
    dataset_file: Path | None = None,
    ca_bundle: Path | None = None,
    summary: ShardSummary | None = None,
    client: ModelClient | None = None,
    on_progress: ProgressCallback | None = None,
    transport: TransportKind = "lean",
) -> ShardSummary:
    """Runs shard `shard` of `shards` and returns its summary.

    `summary` is updated in place as samples finish, so a progress server holding it reads the
    live state; on failure it is left in state "error" with a reason before the error propagates
    (BudgetStopped when the shard's share of spec.budget ran out: its scores so far are kept).
    `judge_api_keys[i]` is the key of the i-th llm_judge scorer's judge. `client` replaces the
    HTTP client of spec.model (tests).
    """
    summary = summary if summary is not None else ShardSummary()
    summary.shard, summary.shards = shard, shards
    spec = evaluation.spec
    budget = Budget.for_shard(spec.budget, shard, shards)
    try:
        scorers: dict[str, Scorer] = {}
        judged = [s for s in spec.task.scorers if needs_judge(s)]
        for scorer_spec in spec.task.scorers:
            if not needs_judge(scorer_spec):
                scorers[scorer_spec.effective_name] = build_scorer(scorer_spec)
        prompts = PromptBuilder(spec.task)
        samples = await load_samples(
            spec.dataset, dataset_dir=dataset_dir, dataset_file=dataset_file, ca_bundle=ca_bundle
        )
        # Every prompt is rendered before the first request: a template that fails on sample
        # 900 fails the shard now, not after paying for 899 answers.
        work = [(sample, prompts.build(sample)) for sample in shard_samples(samples, shard, shards)]
        summary.total = len(work)
        summary.scores = {s.effective_name: ScoreSums() for s in spec.task.scorers}
        if judged:
            summary.usage.judge = summary.usage.judge or ShardUsage()
        tally = _Tally(summary, scorers, on_progress)
        tally.notify()
        log.info("shard started", samples=len(work), model=spec.model.name)
        connections = spec.model.max_concurrency + sum(
            s.judge.max_concurrency for s in judged if s.judge is not None
        )
        async with open_transport(
            transport, ca_bundle=ca_bundle, max_connections=connections
        ) as http:
            model = client or HttpModelClient(
                spec.model, api_key, http, role="model", usage=summary.usage, budget=budget
            )
            judges: dict[str, JudgeScorer] = {}
            for index, scorer_spec in enumerate(judged):
                assert scorer_spec.judge is not None  # the API requires judge for llm_judge
                key = judge_api_keys[index] if index < len(judge_api_keys) else None
                judge_client = HttpModelClient(
                    scorer_spec.judge,
                    key,
                    http,
                    role="judge",
                    usage=summary.usage.judge,
                    budget=budget,
                )
                judges[scorer_spec.effective_name] = build_judge_scorer(scorer_spec, judge_client)
            await _ask_all(model, judges, work, tally, budget, spec.model.max_concurrency)
        if budget.exceeded is not None:
            metrics.BUDGET_EXCEEDED.inc()
            raise BudgetStopped(_budget_message(budget, summary))
    except PermanentError as err:
        summary.state, summary.reason, summary.message = "error", err.reason, err.message
        raise
    except Exception as err:
        # A crash inside a worker arrives wrapped by the TaskGroup; report the crash itself.
        cause = err.exceptions[0] if isinstance(err, ExceptionGroup) else err
        summary.state, summary.reason = "error", "RunnerError"
        summary.message = f"{type(cause).__name__}: {cause}"
        raise
    summary.state = "done"
    log.info(
        "shard finished",
        completed=summary.completed,
        failed=summary.failed,
        errors=summary.errors,
        requests=summary.usage.requests,
    )
    return summary


def _budget_message(budget: Budget, summary: ShardSummary) -> str:
    spend = []
    if budget.max_cost is not None:
        spend.append(f"spent ${usd(budget.spent)} of ${usd(budget.max_cost)}")
    if budget.max_requests is not None:
        spend.append(f"{budget.requests} of {budget.max_requests} requests")
    done = summary.completed + summary.failed
    return (
        f"stopped at the shard's share of the budget: {', '.join(spend)} ({budget.exceeded}); "
        f"{done} of {summary.total} samples finished, results so far kept"
    )


async def _ask_all(
    model: ModelClient,
    judges: dict[str, JudgeScorer],
    work: list[tuple[Sample, list[Message]]],
    tally: _Tally,
    budget: Budget,
    workers: int,
) -> None:
    pending = iter(work)

    async def worker() -> None:
        # Workers share one iterator, so each sample is taken exactly once.
        for sample, messages in pending:
            if budget.exceeded is not None:
                return  # nothing new starts; the requests in flight finish
            try:
                await _ask(model, judges, sample, messages, tally)
            except BudgetExceeded:
                return

    # maxConcurrency workers are the upper bound; the client's limiter sets the actual pace.
    async with asyncio.TaskGroup() as group:
        for _ in range(min(workers, len(work))):
            group.create_task(worker())


async def _ask(
    model: ModelClient,
    judges: dict[str, JudgeScorer],
    sample: Sample,
    messages: list[Message],
    tally: _Tally,
) -> None:
    try:
        completion = await model.complete(messages)
    except RequestFailed as err:
        tally.errored(sample, err.error_class, str(err))
        return
    judged: dict[str, float] = {}
    for name, judge in judges.items():
        try:
            judged[name] = await judge.score(sample.input, completion.text, sample.target)
        except RequestFailed as err:
            tally.errored(sample, f"judge_{err.error_class}", str(err))
            return
        except ScoreUnavailable as err:
            tally.errored(sample, err.error_class, str(err))
            return
    tally.scored(sample, completion.text, judged)


class _Tally:
    """Adds finished samples to the summary. Each update runs without an await in between, so a
    reader on the same event loop never sees a half-updated summary."""

    def __init__(
        self,
        summary: ShardSummary,
        scorers: dict[str, Scorer],
        on_progress: ProgressCallback | None,
    ) -> None:
        self.summary = summary
        self.scorers = [(summary.scores[name], scorer) for name, scorer in scorers.items()]
        self.on_progress = on_progress
        self._scored = metrics.SAMPLES.labels("scored")

    def scored(self, sample: Sample, output: str, judged: dict[str, float]) -> None:
        summary = self.summary
        target = sample.target
        for sums, scorer in self.scorers:
            sums.add(scorer(output, target))
        for name, value in judged.items():
            summary.scores[name].add(value)
        summary.completed += 1
        self._scored.inc()
        self.notify()

    def errored(self, sample: Sample, error_class: str, detail: str) -> None:
        # Errored samples are counted, never scored: a rate limit is not a wrong answer.
        log.info("sample errored", sample=sample.id, error_class=error_class, error=detail)
        summary = self.summary
        summary.failed += 1
        summary.errors[error_class] = summary.errors.get(error_class, 0) + 1
        metrics.ERRORS.labels(error_class).inc()
        metrics.SAMPLES.labels("errored").inc()
        self.notify()

    def notify(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.summary)
