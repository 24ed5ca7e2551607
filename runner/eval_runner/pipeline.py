"""One shard, start to end: load -> render -> ask -> score -> tally into a live ShardSummary."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from pathlib import Path

import structlog

from eval_operator.api.summary import ScoreSums, ShardSummary
from eval_operator.api.v1alpha1 import Evaluation, Pricing
from eval_runner.client import Completion, ModelClient, RequestFailed, open_model_client
from eval_runner.dataset import DEFAULT_DATASET_DIR, Sample, load_samples, shard_samples
from eval_runner.errors import PermanentError
from eval_runner.metrics import SAMPLES
from eval_runner.prompt import Message, PromptBuilder
from eval_runner.scorers import Scorer, build_scorer

log = structlog.get_logger()

ProgressCallback = Callable[[ShardSummary], None]


async def run_shard(
    evaluation: Evaluation,
    shard: int,
    shards: int,
    api_key: str | None,
    *,
    dataset_dir: Path = DEFAULT_DATASET_DIR,
    dataset_file: Path | None = None,
    ca_bundle: Path | None = None,
    summary: ShardSummary | None = None,
    client: ModelClient | None = None,
    on_progress: ProgressCallback | None = None,
) -> ShardSummary:
    """Runs shard `shard` of `shards` and returns its summary.

    `summary` is updated in place as samples finish, so a progress server holding it reads the
    live state; on failure it is left in state "error" with a reason before the error propagates.
    `client` replaces the HTTP client built from spec.model (tests, a future cache layer).
    """
    summary = summary if summary is not None else ShardSummary()
    summary.shard, summary.shards = shard, shards
    spec = evaluation.spec
    try:
        scorers = {s.effective_name: build_scorer(s) for s in spec.task.scorers}
        prompts = PromptBuilder(spec.task)
        samples = await load_samples(
            spec.dataset, dataset_dir=dataset_dir, dataset_file=dataset_file, ca_bundle=ca_bundle
        )
        # Every prompt is rendered before the first request: a template that fails on sample
        # 900 fails the shard now, not after paying for 899 answers.
        work = [(sample, prompts.build(sample)) for sample in shard_samples(samples, shard, shards)]
        summary.total = len(work)
        summary.scores = {name: ScoreSums() for name in scorers}
        tally = _Tally(summary, scorers, spec.model.pricing, on_progress)
        tally.notify()
        log.info("shard started", samples=len(work), model=spec.model.name)
        opened: AbstractAsyncContextManager[ModelClient] = (
            nullcontext(client)
            if client is not None
            else open_model_client(spec.model, api_key, ca_bundle=ca_bundle)
        )
        async with opened as model:
            await _ask_all(model, work, tally, spec.model.max_concurrency)
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


async def _ask_all(
    model: ModelClient, work: list[tuple[Sample, list[Message]]], tally: _Tally, workers: int
) -> None:
    pending = iter(work)

    async def worker() -> None:
        # Workers share one iterator, so each sample is taken exactly once.
        for sample, messages in pending:
            await _ask(model, sample, messages, tally)

    # maxConcurrency workers are the upper bound; the client's limiter sets the actual pace.
    async with asyncio.TaskGroup() as group:
        for _ in range(min(workers, len(work))):
            group.create_task(worker())


async def _ask(model: ModelClient, sample: Sample, messages: list[Message], tally: _Tally) -> None:
    try:
        completion = await model.complete(messages)
    except RequestFailed as err:
        log.info("sample failed", sample=sample.id, error_class=err.error_class, error=str(err))
        tally.failed(err)
        return
    tally.scored(sample, completion)


class _Tally:
    """Adds finished samples to the summary. Each update runs without an await in between, so a
    reader on the same event loop never sees a half-updated summary."""

    def __init__(
        self,
        summary: ShardSummary,
        scorers: dict[str, Scorer],
        pricing: Pricing | None,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.summary = summary
        self.scorers = scorers
        self.pricing = pricing
        self.on_progress = on_progress

    def scored(self, sample: Sample, completion: Completion) -> None:
        summary = self.summary
        for name, scorer in self.scorers.items():
            summary.scores[name].add(scorer(completion.text, sample.target))
        usage = summary.usage
        usage.requests += completion.attempts
        usage.input_tokens += completion.input_tokens
        usage.output_tokens += completion.output_tokens
        if self.pricing is not None:
            # Priced from the totals: exact, and never a sum of rounded per-sample costs.
            cost = self.pricing.cost(usage.input_tokens, usage.output_tokens)
            usage.cost_usd = format(cost.normalize(), "f")
        summary.completed += 1
        SAMPLES.labels("scored").inc()
        self.notify()

    def failed(self, err: RequestFailed) -> None:
        summary = self.summary
        # Failed samples are counted, never scored: a rate limit is not a wrong answer.
        summary.usage.requests += err.attempts
        summary.failed += 1
        summary.errors[err.error_class] = summary.errors.get(err.error_class, 0) + 1
        SAMPLES.labels("failed").inc()
        self.notify()

    def notify(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.summary)
