"""One shard, start to end: load -> render -> ask -> score -> tally into a live ShardSummary."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from eval_api.shard import (
    BaselineSums,
    PairedSums,
    ResumedSamples,
    ScoreSums,
    ShardSummary,
    ShardUsage,
)
from eval_api.tasks import TaskFileError, TaskFileMissing, TaskPlan, task_plan
from eval_api.v1alpha1.evaluation import Evaluation, EvaluationSpec
from eval_runner import metrics
from eval_runner.budget import Budget, BudgetExceeded, usd
from eval_runner.cache import CachedModelClient, ResponseCache
from eval_runner.client import Completion, HttpModelClient, ModelClient, RequestFailed
from eval_runner.dataset import (
    DEFAULT_DATASET_DIR,
    DEFAULT_DOWNLOAD_DIR,
    Sample,
    load_samples,
    load_split_records,
)
from eval_runner.errors import PermanentError, RetryableError
from eval_runner.lmeval.run import Item, LmEvalShard, generation_model
from eval_runner.prompt import Message, PromptBuilder
from eval_runner.results import SampleResult
from eval_runner.scorers import (
    JudgeScorer,
    Scorer,
    ScoreUnavailable,
    build_judge_scorer,
    build_scorer,
    needs_judge,
)
from eval_runner.secrets import SECRETS
from eval_runner.stop import StopSignal
from eval_runner.store import Baseline, SampleStore, StoredSample, carried_usage, input_hash
from eval_runner.transport import open_transport

log = structlog.get_logger()

ProgressCallback = Callable[[ShardSummary], None]
BUDGET_EXCEEDED = "BudgetExceeded"


SampleCallback = Callable[[SampleResult], None]


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
    download_dir: Path = DEFAULT_DOWNLOAD_DIR,
    ca_bundle: Path | None = None,
    summary: ShardSummary | None = None,
    client: ModelClient | None = None,
    on_progress: ProgressCallback | None = None,
    on_sample: SampleCallback | None = None,
    budget: Budget | None = None,
    store: SampleStore | None = None,
    cache: ResponseCache | None = None,
    task_file: str | None = None,
    stop: StopSignal | None = None,
) -> ShardSummary:
    """Runs shard `shard` of `shards` and returns its summary.

    `summary` is updated in place as samples finish, so a progress server holding it reads the
    live state; on failure it is left in state "error" with a reason before the error propagates
    (BudgetStopped when the shard's share of spec.budget ran out: its scores so far are kept).
    `judge_api_keys[i]` is the key of the i-th llm_judge scorer's judge. `client` replaces the
    HTTP client of spec.model (tests). `on_sample` sees every finished sample (local runs write
    them out; per-sample data never goes into the summary). `budget` replaces the shard's
    share of spec.budget (a retry's, cut by what earlier attempts spent, and watched by the
    pod's termination-message checkpoints).

    With `store`, every finished sample is written to it as it completes, and the samples its
    earlier attempts stored are counted in the summary (summary.resumed says how many, and
    what they used) and not asked again; the last rows are written before this returns or
    raises. With `cache`, the model's answers are looked up in the response cache first and
    kept there; a cache that fails is left out (summary.cacheUnavailable says why). This
    function opens and closes both. `task_file` is the text of task.lmEval's task file.

    With execution.earlyStop the shard asks its samples in the run's seeded random order
    (dataset.asking_order), and `stop` (set by the progress server on the operator's word, or
    by a local run's own decision) ends it early: no new sample starts, the requests in flight
    finish and are counted, summary.stopped says why.
    """
    summary = summary if summary is not None else ShardSummary()
    summary.shard, summary.shards = shard, shards
    spec = evaluation.spec
    stop = stop if stop is not None else StopSignal()
    early_stop = spec.execution.early_stop
    budget = budget if budget is not None else Budget.for_shard(spec.budget, shard, shards)
    try:
        plan = _plan(spec, task_file)
        scorers: dict[str, Scorer] = {}
        judged = [s for s in spec.task.scorer_list if needs_judge(s)]
        for scorer_spec in spec.task.scorer_list:
            if not needs_judge(scorer_spec):
                scorers[scorer_spec.effective_name] = build_scorer(scorer_spec)
        model_spec = spec.model
        lm_eval: LmEvalShard | None = None
        if plan.lm_task is not None:
            model_spec = generation_model(spec.model, plan.lm_task)
            lm_eval = LmEvalShard(plan.lm_task, plan.preset, model_spec)
        samples = await load_samples(
            plan.dataset,
            dataset_dir=dataset_dir,
            dataset_file=dataset_file,
            ca_bundle=ca_bundle,
            download_dir=download_dir,
            group_field=spec.task.group_field,
            shard=shard,
            shards=shards,
            raw=lm_eval is not None,
            ask_seed=None if early_stop is None else early_stop.seed,
        )
        items: dict[int, Item] = {}
        if lm_eval is not None:
            pool = await _fewshot_pool(plan, download_dir)
            work = []
            for sample, messages, item in lm_eval.build(samples, pool):
                work.append((sample, messages))
                items[sample.id] = item
        else:
            prompts = PromptBuilder(spec.task)
            # Every prompt is rendered before the first request: a template that fails on
            # sample 900 fails the shard now, not after paying for 899 answers.
            work = [(sample, prompts.build(sample)) for sample in samples]
        summary.total = len(work)
        if early_stop is not None:
            summary.run_total = samples.run_total
        summary.scores = {name: ScoreSums() for name in plan.names}
        if judged:
            summary.usage.judge = summary.usage.judge or ShardUsage()
        sinks = [sink for sink in (on_sample, store and store.record) if sink is not None]
        sequential = None
        if early_stop is not None:
            summary.max_group = samples.max_group
            sequential = _Sequential(
                summary, [sample for sample, _ in work], spec.task.group_field is not None
            )
        tally = _Tally(summary, scorers, on_progress, _each(sinks), sequential)
        if store is not None:
            stored = await store.open(evaluation, shard, shards, work, plan)
            if sequential is not None and not sequential.grouped:
                hashes = {sample.id: input_hash(sample) for sample, _ in work}
                baseline = await store.baseline(hashes.values())
                if baseline is not None:
                    sequential.pair_with(baseline, hashes)
            work = tally.resume(work, stored)
        tally.notify()
        log.info(
            "shard started",
            samples=len(work),
            resumed=summary.resumed.samples if summary.resumed else 0,
            model=spec.model.name,
        )
        connections = spec.model.max_concurrency + sum(
            s.judge.max_concurrency for s in judged if s.judge is not None
        )
        # Stored samples: the endpoints answered an earlier attempt, a refusal now is an outage.
        answered = summary.resumed is not None
        async with open_transport(ca_bundle=ca_bundle, max_connections=connections) as http:
            model: ModelClient = client or HttpModelClient(
                model_spec,
                api_key,
                http,
                role="model",
                usage=summary.usage,
                budget=budget,
                answered_before=answered,
            )
            if cache is not None:
                model = CachedModelClient(
                    model, cache, model_spec, summary.usage, spec.execution.cache.reuse
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
                    answered_before=answered,
                )
                judges[scorer_spec.effective_name] = build_judge_scorer(scorer_spec, judge_client)
            answer = _answerer(lm_eval, items)
            asking = _ask_all(
                model, judges, work, tally, budget, spec.model.max_concurrency, answer, stop
            )
            if store is None:
                await asking
            else:
                await store.writing(asking)
        summary.stopped = stop.reason
        if budget.exceeded is not None:
            metrics.BUDGET_EXCEEDED.inc()
            raise BudgetStopped(_budget_message(budget, summary))
    except Exception as err:
        # A failure inside a worker arrives wrapped by the TaskGroup; report it, not the group.
        cause = _first_cause(err)
        if isinstance(cause, PermanentError | RetryableError):
            summary.state, summary.reason = "error", cause.reason
            summary.message = SECRETS.redact(cause.message)
        else:
            summary.state, summary.reason = "error", "RunnerError"
            summary.message = SECRETS.redact(f"{type(cause).__name__}: {cause}")
        if cause is not err:
            raise cause from None
        raise
    finally:
        # The cache's last writes and the store's connection, before the summary is reported.
        if cache is not None:
            await cache.close()
            summary.cache_unavailable = cache.unavailable
        if store is not None:
            await store.close()
    summary.state = "done"
    log.info(
        "shard finished",
        completed=summary.completed,
        failed=summary.failed,
        errors=summary.errors,
        requests=summary.usage.requests,
    )
    return summary


def _each(callbacks: list[SampleCallback]) -> SampleCallback | None:
    if len(callbacks) <= 1:
        return callbacks[0] if callbacks else None

    def call(result: SampleResult) -> None:
        for callback in callbacks:
            callback(result)

    return call


def _first_cause(err: BaseException) -> BaseException:
    while isinstance(err, BaseExceptionGroup):
        err = err.exceptions[0]
    return err


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


Work = list[tuple[Sample, list[Message]]]
Parked = list[tuple[Sample, list[Message], RequestFailed]]


async def _ask_all(
    model: ModelClient,
    judges: dict[str, JudgeScorer],
    work: Work,
    tally: _Tally,
    budget: Budget,
    workers: int,
    answer: Answerer,
    stop: StopSignal,
) -> None:
    """Ask every sample; then ask again those whose every attempt failed to connect (the
    endpoint was away: their requests mostly never reached it), round after round while a
    round brings at least one of them through. The last ones left count as errored. Once
    `stop` is set nothing new starts, and those left are not asked (they are in no count)."""
    rounds = 0
    while True:
        parked = await _ask_round(model, judges, work, tally, budget, workers, answer, stop)
        rounds += 1
        if stop.reason is not None:
            return
        if not parked or budget.exceeded is not None or (rounds > 1 and len(parked) == len(work)):
            break
        log.info("asking again the samples the endpoint could not be reached for", n=len(parked))
        work = [(sample, messages) for sample, messages, _ in parked]
    for sample, messages, err in parked:
        tally.errored(SampleResult(sample, messages, **_failure(err)))


async def _ask_round(
    model: ModelClient,
    judges: dict[str, JudgeScorer],
    work: Work,
    tally: _Tally,
    budget: Budget,
    workers: int,
    answer: Answerer,
    stop: StopSignal,
) -> Parked:
    pending = iter(work)
    parked: Parked = []

    async def worker() -> None:
        # Workers share one iterator, so each sample is taken exactly once, in work's order.
        for sample, messages in pending:
            if budget.exceeded is not None or stop.reason is not None:
                return  # nothing new starts; the requests in flight finish
            try:
                await _ask(model, judges, sample, messages, tally, parked, answer)
            except BudgetExceeded:
                return

    # maxConcurrency workers are the upper bound; the client's limiter sets the actual pace.
    async with asyncio.TaskGroup() as group:
        for _ in range(min(workers, len(work))):
            group.create_task(worker())
    return parked


def _failure(err: RequestFailed, prefix: str = "") -> dict[str, Any]:
    failure: dict[str, Any] = {
        "error_class": prefix + err.error_class,
        "error": err.detail,
        "url": err.url,
        "transient": err.retryable,
    }
    if not prefix:  # a judge's failure: the sample's spend is its model completion's
        failure["spend"] = err.spend
    return failure


async def _ask(
    model: ModelClient,
    judges: dict[str, JudgeScorer],
    sample: Sample,
    messages: list[Message],
    tally: _Tally,
    parked: Parked,
    answer: Answerer,
) -> None:
    try:
        completion, scores, details = await answer(model, sample, messages)
    except RequestFailed as err:
        if err.only_connection:
            parked.append((sample, messages, err))
        else:
            tally.errored(SampleResult(sample, messages, **_failure(err)))
        return
    judged: dict[str, float] = {}
    for name, judge in judges.items():
        try:
            judged[name] = await judge.score(sample.input, completion.text, sample.target)
        except RequestFailed as err:
            tally.errored(SampleResult(sample, messages, completion, **_failure(err, "judge_")))
            return
        except ScoreUnavailable as err:
            failed = SampleResult(
                sample, messages, completion, error_class=err.error_class, error=str(err)
            )
            tally.errored(failed)
            return
    tally.scored(sample, messages, completion, {**judged, **scores}, details)


# How a sample is asked and scored: its completion, the scores that do not come from
# task.scorers (an lm-eval task's metrics), and what its row keeps to explain them.
Answerer = Callable[
    [ModelClient, Sample, list[Message]],
    Awaitable[tuple[Completion, dict[str, float], dict[str, Any] | None]],
]


def _answerer(lm_eval: LmEvalShard | None, items: dict[int, Item]) -> Answerer:
    if lm_eval is None:

        async def ask_model(
            model: ModelClient, sample: Sample, messages: list[Message]
        ) -> tuple[Completion, dict[str, float], dict[str, Any] | None]:
            return await model.complete(messages), {}, None

        return ask_model

    async def ask_lm_eval(
        model: ModelClient, sample: Sample, messages: list[Message]
    ) -> tuple[Completion, dict[str, float], dict[str, Any] | None]:
        return await lm_eval.answer(model, items[sample.id], messages)

    return ask_lm_eval


def _plan(spec: EvaluationSpec, task_file: str | None) -> TaskPlan:
    try:
        return task_plan(spec, task_file)
    except TaskFileError as err:
        raise PermanentError(err.reason, err.message) from None
    except TaskFileMissing:
        ref = spec.task.lm_eval.config_map_ref if spec.task.lm_eval else None
        where = f"ConfigMap {ref.name} key {ref.key}" if ref else "task.lmEval"
        raise PermanentError(
            "LmEvalInvalid", f"the task file ({where}) was not given to the runner"
        ) from None


async def _fewshot_pool(plan: TaskPlan, download_dir: Path) -> list[dict[str, Any]]:
    """The docs few-shot examples are drawn from: the task's few-shot split, read whole (the
    draws index all of it); none without few-shot, or with the file's own samples."""
    task = plan.lm_task
    assert task is not None
    split = task.fewshot_split
    if task.num_fewshot == 0 or split is None:
        return []
    if plan.dataset.huggingface is None:  # spec_problems refuses this before the run
        raise PermanentError(
            "LmEvalInvalid", f"few-shot split {split!r} needs a huggingface dataset"
        )
    return await load_split_records(plan.dataset, split, download_dir)


class _Sequential:
    """execution.earlyStop: the shard's finished prefix of its asking order, counted into the
    scorers' sequential sums (ScoreSums.seq_*). A sample joins once every sample asked before it
    has finished (scored, or errored and counted as no score), so which samples the sequence
    has seen never depends on how fast, or how, they were answered. With task.groupField the
    samples of a group are asked one after another and the group joins whole, once its last
    sample is in the prefix."""

    def __init__(self, summary: ShardSummary, order: list[Sample], grouped: bool) -> None:
        self.summary = summary
        self.order = order
        self.position = {sample.id: index for index, sample in enumerate(order)}
        self.grouped = grouped
        self.done: dict[int, Mapping[str, float] | None] = {}
        self.next = 0  # the first position of the asking order not yet counted
        self.group: dict[str, list[float]] = {}  # the open group's [n, sum] per scorer
        # The regression gate: each sample's baseline scores (None: not paired), by sample id.
        self.baseline: dict[int, Mapping[str, float] | None] | None = None
        for sums in summary.scores.values():
            sums.seq_n, sums.seq_sum = 0, 0.0
            if grouped:
                sums.seq_groups = 0

    def finished(self, sample: Sample, scores: Mapping[str, float] | None) -> None:
        position = self.position.get(sample.id)
        if position is None:
            return
        self.done[position] = scores
        while self.next in self.done:
            scores = self.done.pop(self.next)
            current = self.order[self.next]
            self.next += 1
            if not self.grouped:
                for name, value in (scores or {}).items():
                    if name in self.summary.scores:
                        self.summary.scores[name].add_sequential(1, value)
                if self.baseline is not None:
                    self._pair(current, scores)
                continue
            for name, value in (scores or {}).items():
                running = self.group.setdefault(name, [0, 0.0])
                running[0], running[1] = running[0] + 1, running[1] + value
            following = self.order[self.next] if self.next < len(self.order) else None
            if following is None or following.group != current.group:
                for name, sums in self.summary.scores.items():
                    n_g, s_g = self.group.get(name, (0, 0.0))
                    sums.add_sequential(int(n_g), s_g, 1)
                self.group = {}

    def pair_with(self, baseline: Baseline, hashes: Mapping[int, str]) -> None:
        """Pair the prefix with `baseline` (the regression gate): each sample with the
        baseline's scores of its record (`hashes`: each sample's input_hash)."""
        self.summary.baseline = BaselineSums(
            run=baseline.run,
            suite_run=baseline.suite_run,
            # The results both runs have: a scorer added since the baseline has no pairs.
            scorers=[name for name in self.summary.scores if name in baseline.scorers],
        )
        if baseline.run is not None:
            self.baseline = {sid: baseline.scores.get(key) for sid, key in hashes.items()}

    def _pair(self, sample: Sample, scores: Mapping[str, float] | None) -> None:
        sums = self.summary.baseline
        assert sums is not None and self.baseline is not None
        base = self.baseline.get(sample.id)
        if base is None or scores is None:
            sums.unpaired += 1
            return
        for name in self.summary.scores:
            if name in scores and name in base:
                sums.paired.setdefault(name, PairedSums()).add(scores[name], base[name])


class _Tally:
    """Adds finished samples to the summary. Each update runs without an await in between, so a
    reader on the same event loop never sees a half-updated summary."""

    def __init__(
        self,
        summary: ShardSummary,
        scorers: dict[str, Scorer],
        on_progress: ProgressCallback | None,
        on_sample: SampleCallback | None,
        sequential: _Sequential | None = None,
    ) -> None:
        self.summary = summary
        self.scorers = [(name, scorer) for name, scorer in scorers.items()]
        self.on_progress = on_progress
        self.on_sample = on_sample
        # [n, sum] of each group's scores per scorer, for the clustered sums (task.groupField).
        self.groups: dict[str, dict[str, list[float]]] = {name: {} for name in summary.scores}
        self.sequential = sequential
        self._scored = metrics.SAMPLES.labels("scored")

    def resume(self, work: Work, stored: Mapping[int, StoredSample]) -> Work:
        """Count the samples earlier attempts stored as this shard's (scores with their
        groups, errors by class); returns the work left to ask."""
        if not stored:
            return work
        summary = self.summary
        left: Work = []
        for sample, messages in work:
            row = stored.get(sample.id)
            if row is None:
                left.append((sample, messages))
            elif row.error_class is None:
                self._add_scores(sample, row.scores)
                summary.completed += 1
                self._finished(sample, row.scores)
            else:
                summary.failed += 1
                summary.errors[row.error_class] = summary.errors.get(row.error_class, 0) + 1
                self._finished(sample, None)
        summary.resumed = ResumedSamples(samples=len(stored), usage=carried_usage(stored.values()))
        return left

    def _finished(self, sample: Sample, scores: Mapping[str, float] | None) -> None:
        if self.sequential is not None:
            self.sequential.finished(sample, scores)

    def _add_scores(self, sample: Sample, scores: dict[str, float]) -> None:
        for name, value in scores.items():
            group = None
            if sample.group is not None:
                group = self.groups[name].setdefault(sample.group, [0, 0.0])
            self.summary.scores[name].add(value, group)

    def scored(
        self,
        sample: Sample,
        messages: list[Message],
        completion: Completion,
        judged: dict[str, float],
        details: dict[str, Any] | None = None,
    ) -> None:
        summary = self.summary
        scores = {name: scorer(completion.text, sample.target) for name, scorer in self.scorers}
        scores.update(judged)
        self._add_scores(sample, scores)
        summary.completed += 1
        self._finished(sample, scores)
        self._scored.inc()
        if self.on_sample is not None:
            self.on_sample(SampleResult(sample, messages, completion, scores, details=details))
        self.notify()

    def errored(self, result: SampleResult) -> None:
        # Errored samples are counted, never scored: a rate limit is not a wrong answer.
        error_class = result.error_class or "error"
        log.info(
            "sample errored", sample=result.sample.id, error_class=error_class, error=result.error
        )
        summary = self.summary
        summary.failed += 1
        summary.errors[error_class] = summary.errors.get(error_class, 0) + 1
        self._finished(result.sample, None)
        metrics.ERRORS.labels(error_class).inc()
        metrics.SAMPLES.labels("errored").inc()
        if self.on_sample is not None:
            self.on_sample(result)
        self.notify()

    def notify(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.summary)
