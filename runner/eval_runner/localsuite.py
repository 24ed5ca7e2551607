"""`eval-runner run suite.yaml`: an EvalSuite manifest's matrix, run on this machine.

Every cell (model x task, eval_api.matrix) runs in turn as one local shard, exactly as the
operator's child Evaluations would run, and the leaderboard is printed per task. With --store,
each cell's samples go to the store as a run of its cell in a new suite run, and each cell is
compared sample by sample with its baseline (spec.baseline) by the same code the operator's
cell report Jobs run (eval_runner.cellreport): `previous` is the cell's last succeeded run in
that store, a suite run id or `accepted` (the evals.io/accept-run annotation) names one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from eval_api.aggregate import aggregate
from eval_api.cellreport import BASELINE_NONE, CellReport, comparison_columns, decided_early
from eval_api.earlystop import GatePlan
from eval_api.matrix import baseline_selector, cells_of, gate_plan, regression_of
from eval_api.shard import ShardSummary
from eval_api.store.migrate import migrate
from eval_api.store.settings import StoreSettings
from eval_api.tasks import TaskFileMissing, spec_dataset, task_plan
from eval_api.v1alpha1.common import ObjectMeta
from eval_api.v1alpha1.evalsuite import EvalSuite
from eval_api.v1alpha1.evaluation import Evaluation, EvaluationSpec
from eval_api.v1alpha1.matrix import ACCEPT_RUN_ANNOTATION, CellComparison
from eval_api.verdict import judge_thresholds
from eval_runner.cellreport import CellRun, report_cell
from eval_runner.errors import PermanentError, RetryableError
from eval_runner.pipeline import run_shard
from eval_runner.results import SampleResult
from eval_runner.stop import EarlyStopWatch, StopSignal
from eval_runner.store import (
    RunIdentity,
    SampleStore,
    WriterSettings,
    local_evaluation_uid,
    new_local_run,
    spec_hash,
)

EXIT_OK = 0
EXIT_NOT_PASSED = 1


@dataclass
class CellOutcome:
    model: str
    task: str
    phase: str = "Failed"
    score: float | None = None
    ci95: list[float] | None = None
    n: int = 0
    cost: str = "0"
    passed: bool | None = None
    latencies: list[float] = field(default_factory=list)
    error: str | None = None
    report: CellReport | None = None
    stopped_early: dict[str, Any] | None = None  # execution.earlyStop decided the cell


def suite_run_id(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%d-%H%M%S")


async def run_cell(
    evaluation: Evaluation,
    api_key: str | None,
    judge_keys: list[str | None],
    store: SampleStore | None,
    gate: GatePlan | None = None,
) -> CellOutcome:
    """One cell as one local shard. With execution.earlyStop it stops once decided, as the
    operator would stop it (`gate`: its regression gate, with a store and a baseline)."""
    spec = evaluation.spec
    model = evaluation.metadata.labels["evals.io/model"]
    task = evaluation.metadata.labels["evals.io/task"]
    outcome = CellOutcome(model=model, task=task)
    summary = ShardSummary()
    stop = StopSignal()
    watch = None
    if spec.execution.early_stop is not None:
        watch = EarlyStopWatch(spec, stop, gate)

    def keep(result: SampleResult) -> None:
        completion = result.completion
        if completion is not None and result.error_class is None:
            outcome.latencies.append(completion.latency * 1000.0)

    try:
        await run_shard(
            evaluation,
            0,
            1,
            api_key,
            judge_api_keys=judge_keys,
            summary=summary,
            on_sample=keep,
            on_progress=watch.update if watch is not None else None,
            store=store,
            stop=stop,
        )
    except (PermanentError, RetryableError) as err:
        outcome.error = f"{err.reason}: {err.message}"
    try:
        names = task_plan(spec).names
    except TaskFileMissing:
        # An lm-eval task file lives in a ConfigMap: run_shard said so (the cell's error).
        names = []
    result = aggregate([summary], names, total=summary.total)
    too_many = result.too_many_errors(spec.execution.max_errored_fraction)
    first = result.results[0] if result.results else None
    if first is not None:
        outcome.score, outcome.n = first.value, first.n
        outcome.ci95 = list(first.ci95) if first.ci95 is not None else None
    outcome.cost = format(summary.usage.total_cost(), "f")
    if outcome.error is None and too_many is not None:
        outcome.error = f"TooManyErrors: {too_many}"
    if outcome.error is None:
        outcome.phase = "Succeeded"
        verdict = judge_thresholds(spec.thresholds, {r.name: r.value for r in result.results})
        outcome.passed = verdict.passed if verdict.checks else True
        if watch is not None:
            outcome.stopped_early, decided = watch.finish(result)
            if outcome.stopped_early is not None and decided is not None:
                outcome.passed = decided
    else:
        outcome.passed = False
    return outcome


async def run_suite(
    suite: EvalSuite,
    api_keys: dict[str, str | None],
    judge_keys_of: Any,
    store_settings: StoreSettings | None,
    console: Console,
) -> int:
    meta = suite.metadata
    namespace = meta.namespace or "default"
    spec = suite.spec
    run_id = suite_run_id(datetime.now(UTC))
    regression = regression_of(spec)
    accepted = meta.annotations.get(ACCEPT_RUN_ANNOTATION)
    outcomes: list[CellOutcome] = []
    if store_settings is not None:
        # The schema first (the same migrations a suite's migration Job applies).
        conn = await asyncpg.connect(**store_settings.connect_kwargs(), timeout=10)
        try:
            await migrate(conn)
        finally:
            await conn.close()
    for cell in cells_of(meta.name, spec):
        cell_spec = {k: v for k, v in cell.spec.items() if k != "suiteRef"}
        evaluation = Evaluation(
            metadata=ObjectMeta(
                name=cell.name,
                namespace=namespace,
                labels={
                    "evals.io/suite": meta.name,
                    "evals.io/model": cell.model,
                    "evals.io/task": cell.task,
                },
            ),  # fmt: skip
            spec=EvaluationSpec.model_validate(cell_spec),
        )
        console.print(Text(f"cell {cell.id}: running {spec_dataset(evaluation.spec).source()}"))
        store = None
        identity = None
        gate = None
        selector, no_compare = baseline_selector(spec, accepted, run_id)
        if store_settings is not None:
            gate = gate_plan(spec, cell.id, evaluation.spec, accepted, run_id)
            paired = gate is not None and gate.sequential  # the shard pairs with the baseline
            identity = RunIdentity(
                local_evaluation_uid(namespace, cell.name),
                new_local_run(spec_hash(evaluation.spec)),
                namespace,
                cell.name,
                suite=meta.name,
                cell=cell.id if paired else None,
                baseline=gate.baseline if gate is not None and paired else None,
            )
            store = SampleStore(store_settings, identity, WriterSettings())
        api_key = api_keys.get(evaluation.spec.model.provider)
        outcome = await run_cell(evaluation, api_key, judge_keys_of(evaluation), store, gate)
        if outcome.stopped_early is not None:
            console.print(
                Text(
                    f"cell {cell.id}: stopped early ({outcome.stopped_early['reason']}) after "
                    f"{outcome.stopped_early['samples']} of {outcome.stopped_early['of']} "
                    f"samples: {outcome.stopped_early['message']}"
                )
            )
        if store_settings is not None and identity is not None and outcome.phase == "Succeeded":
            conn = await asyncpg.connect(**store_settings.connect_kwargs(), timeout=10)
            try:
                outcome.report = await report_cell(
                    conn,
                    CellRun(namespace, meta.name, cell.id, run_id, identity.evaluation_uid,
                            identity.run),
                    selector if no_compare is None else BASELINE_NONE,
                    max_drop=Decimal(regression.max_drop),
                    alpha=Decimal(regression.alpha),
                )  # fmt: skip
            finally:
                await conn.close()
            if no_compare is not None and spec.baseline is not None:
                outcome.report.comparison = CellComparison(
                    reason=no_compare[0], message=no_compare[1]
                )
            decided = (outcome.stopped_early or {}).get("regression")
            if decided and outcome.report.comparison is not None:
                outcome.report.comparison = CellComparison.model_validate(
                    decided_early(
                        outcome.report.comparison.model_dump(
                            mode="json", by_alias=True, exclude_none=True
                        ),
                        decided,
                    )
                )
        outcomes.append(outcome)
    print_leaderboard(suite, run_id, outcomes, console)
    regressed = [
        f"{o.model}/{o.task}"
        for o in outcomes
        if o.report and o.report.comparison and o.report.comparison.regressed
    ]
    not_passed = [f"{o.model}/{o.task}" for o in outcomes if not o.passed]
    if regressed:
        console.print(Text(f"regressed: {', '.join(regressed)}", style="bold red"))
    if not_passed:
        console.print(Text(f"not passed: {', '.join(not_passed)}", style="bold red"))
    if not regressed and not not_passed:
        console.print(Text(f"suite run {run_id}: all {len(outcomes)} cells passed"))
    return EXIT_NOT_PASSED if regressed or not_passed else EXIT_OK


def _percentile(values: list[float], q: float) -> str:
    # Linear interpolation between the closest ranks: PostgreSQL's percentile_cont, which the
    # cluster's leaderboard reads from the store.
    return "-" if not values else f"{float(np.percentile(values, q)):.0f}ms"


def print_leaderboard(
    suite: EvalSuite, run_id: str, outcomes: list[CellOutcome], console: Console
) -> None:
    for task in suite.spec.tasks or []:
        rows = [o for o in outcomes if o.task == task.name]
        scored = [o for o in rows if o.phase == "Succeeded" and o.score is not None]
        best = max(scored, key=lambda o: o.score or 0.0).model if scored else None
        table = Table(title=Text(f"{suite.metadata.name} {run_id}: task {task.name}"))
        columns = ["", "model", "phase", "score [ci95]", "n", "cost USD", "p50/p95"]
        compared = suite.spec.baseline is not None
        if compared:
            columns += ["vs baseline", "p-value", "regressed"]
        for column in columns:
            table.add_column(column, no_wrap=True)
        for o in rows:
            score = "-" if o.score is None else f"{o.score:.4f}"
            if o.ci95 is not None:
                score += f" [{o.ci95[0]:.3f}, {o.ci95[1]:.3f}]"
            cells = [
                "*" if o.model == best else "",
                o.model,
                o.phase if o.error is None else f"Failed ({o.error.split(':')[0]})",
                score,
                str(o.n),
                o.cost,
                f"{_percentile(o.latencies, 50)}/{_percentile(o.latencies, 95)}",
            ]
            if compared:
                cells += comparison_columns(o.report.comparison if o.report else None)
            table.add_row(*cells)
        console.print(table)
