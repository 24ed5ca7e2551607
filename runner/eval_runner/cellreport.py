"""`eval-runner cell-report`: matrix cells' reports, run by the operator as a Job.

Once cells of an EvalSuite have succeeded, this reads each cell's rows from the store (with the
credentials the runner pods use, by reference; one connection for every cell asked) and:

1. records the run as the cell's succeeded run of its suite run (runs.cell, suite_run,
   succeeded_at): what later runs find as their baseline;
2. measures the median and 95th percentile latency of the answers the model gave (cache hits
   and errored samples left out);
3. finds the baseline run: `previous` is the cell's newest earlier succeeded run,
   `suite-run:<id>` the cell's succeeded run in that suite run;
4. compares the two runs scorer by scorer, pair by pair (eval_runner.compare): samples are
   matched by their record (the sha256 of the record as canonical JSON, and which occurrence of
   it), so a reshuffled or extended dataset still pairs correctly; a sample scored in only one
   run is left out and counted;
5. counts the pairs whose answer in this run came from the response cache and is the
   baseline's, word for word (a run with execution.cache.reuse AcrossRuns): when they are most
   of the pairs, the comparison's reason is CachedAnswers, never a plain "no regression".

The reports (eval_api.cellreport.BatchReport: of each cell what the suite's status keeps) are
written to the termination log. Exit 0 done (a cell whose run is not in the store is reported
as failed, the others as done); 3 when retrying cannot help; 1 to be retried (the store is
down: every cell is asked again).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from eval_api.cellreport import (
    BASELINE_NONE,
    BASELINE_NOT_FOUND,
    BASELINE_PREVIOUS,
    BASELINE_SUITE_RUN_PREFIX,
    CACHED_ANSWERS,
    COMPARED,
    NO_BASELINE,
    BatchReport,
    CellReport,
    baseline_not_found_message,
    cached_answers_message,
    no_baseline_message,
)
from eval_api.exitcodes import EXIT_OK, EXIT_PERMANENT
from eval_api.store.settings import StoreSettings, StoreSettingsError
from eval_api.v1alpha1.matrix import CellComparison, ScorerComparison
from eval_runner.compare import compare_paired
from eval_runner.secrets import SECRETS
from eval_runner.stackcheck import register_secrets
from eval_runner.store import find_baseline_run

EXIT_RETRY = 1
CONNECT_TIMEOUT_SECONDS = 10.0

RECORD_SUCCESS = """
UPDATE runs SET cell = $3, suite_run = $4, succeeded_at = coalesce(succeeded_at, now())
WHERE evaluation_uid = $1 AND run = $2
RETURNING namespace, suite, started_at, scorers
"""
LATENCY = """
SELECT percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY latency_ms)
FROM samples
WHERE evaluation_uid = $1 AND run = $2 AND latency_ms IS NOT NULL AND NOT cache_hit
  AND error_class IS NULL
"""
SCORES = """
SELECT sample_id, input_hash, scores, response, cache_hit FROM samples
WHERE evaluation_uid = $1 AND run = $2 AND error_class IS NULL
ORDER BY sample_id
"""


@dataclass(frozen=True)
class CellRun:
    namespace: str
    suite: str
    cell: str
    suite_run: str
    evaluation_uid: str
    run: str


class _Failed(Exception):
    def __init__(self, reason: str, message: str, code: int = EXIT_RETRY) -> None:
        super().__init__(message)
        self.reason, self.message, self.code = reason, message, code


def by_record(rows: list[Any]) -> dict[tuple[str, int], Any]:
    """Each row keyed by (record hash, occurrence): the n-th sample with a given record in one
    run pairs with the n-th in the other."""
    seen: dict[str, int] = defaultdict(int)
    keyed = {}
    for row in rows:
        occurrence = seen[row["input_hash"]]
        seen[row["input_hash"]] += 1
        keyed[(row["input_hash"], occurrence)] = row
    return keyed


def paired_scores(rows: list[Any]) -> dict[str, dict[tuple[str, int], float]]:
    """Per scorer, each scored sample's value keyed by (record hash, occurrence)."""
    by_scorer: dict[str, dict[tuple[str, int], float]] = defaultdict(dict)
    for key, row in by_record(rows).items():
        scores = row["scores"]
        if isinstance(scores, str):
            scores = json.loads(scores)
        for name, value in scores.items():
            by_scorer[name][key] = float(value)
    return by_scorer


def with_cached_answers(
    comparison: CellComparison, baseline_rows: list[Any], candidate_rows: list[Any]
) -> CellComparison:
    """The comparison with the pairs whose candidate answer came from the response cache and
    is the baseline's own counted; when they are most of the pairs its reason is
    CachedAnswers: it does not measure the model as it is now."""
    base = by_record(baseline_rows)
    pairs = cached = 0
    for key, row in by_record(candidate_rows).items():
        other = base.get(key)
        if other is None:
            continue
        pairs += 1
        if row["cache_hit"] and row["response"] == other["response"]:
            cached += 1
    update: dict[str, Any] = {"cached_answers": cached, "paired_samples": pairs}
    if cached * 2 > pairs:
        update["reason"] = CACHED_ANSWERS
        update["message"] = cached_answers_message(cached, pairs, comparison.baseline_run)
    return comparison.model_copy(update=update)


def compare_runs(
    baseline_rows: list[Any],
    candidate_rows: list[Any],
    scorers: list[str],
    *,
    max_drop: Decimal,
    alpha: Decimal,
) -> list[ScorerComparison]:
    base, cand = paired_scores(baseline_rows), paired_scores(candidate_rows)
    found = []
    for name in scorers:
        result = compare_paired(
            base.get(name, {}), cand.get(name, {}), max_drop=float(max_drop), alpha=float(alpha)
        )
        found.append(
            ScorerComparison(
                name=name,
                test=result.test,
                pairs=result.pairs,
                excluded=result.only_in_baseline + result.only_in_candidate,
                baseline_mean=result.baseline_mean,
                candidate_mean=result.candidate_mean,
                difference=result.difference,
                ci95=list(result.ci95) if result.ci95 is not None else None,
                p_value=result.p_value,
                min_detectable_effect=result.min_detectable_effect,
                regressed=result.regressed,
            )
        )
    return found


def underpowered(compared: list[ScorerComparison], max_drop: Decimal) -> bool:
    """The main scorer's pairs would likely miss a drop of twice maxDrop (its minimum
    detectable effect is larger). Never at maxDrop 0: every finite sample misses some drop
    beyond 0, and the minimum detectable effect says which."""
    if max_drop == 0:
        return False
    mde = compared[0].min_detectable_effect if compared else None
    return mde is None or mde > 2 * float(max_drop)


async def report_cell(
    conn: Any, cell: CellRun, baseline: str, *, max_drop: Decimal, alpha: Decimal
) -> CellReport:
    row = await conn.fetchrow(
        RECORD_SUCCESS, cell.evaluation_uid, cell.run, cell.cell, cell.suite_run
    )
    if row is None:
        raise _Failed(
            "RunNotStored",
            f"run {cell.run} of cell {cell.cell} is not in the store",
            EXIT_PERMANENT,
        )
    scorers = list(row["scorers"])
    p50, p95 = (await conn.fetchval(LATENCY, cell.evaluation_uid, cell.run)) or (None, None)
    report = CellReport(state="done", latency_p50_ms=p50, latency_p95_ms=p95)
    if baseline == BASELINE_NONE:
        return report
    try:
        found = await find_baseline_run(
            conn,
            baseline,
            namespace=cell.namespace,
            suite=cell.suite,
            cell=cell.cell,
            started_at=row["started_at"],
            evaluation_uid=cell.evaluation_uid,
            run=cell.run,
        )
    except ValueError as err:
        raise _Failed("InvalidBaseline", str(err), EXIT_PERMANENT) from None
    if found is None and baseline == BASELINE_PREVIOUS:
        report.comparison = CellComparison(
            reason=NO_BASELINE,
            message=no_baseline_message(),
            alpha=str(alpha),
        )
        return report
    if found is None:
        wanted = baseline.removeprefix(BASELINE_SUITE_RUN_PREFIX)
        report.comparison = CellComparison(
            reason=BASELINE_NOT_FOUND,
            message=baseline_not_found_message(wanted),
            baseline=wanted,
            alpha=str(alpha),
        )
        return report
    baseline_rows = await conn.fetch(SCORES, found["evaluation_uid"], found["run"])
    candidate_rows = await conn.fetch(SCORES, cell.evaluation_uid, cell.run)
    compared = compare_runs(baseline_rows, candidate_rows, scorers, max_drop=max_drop, alpha=alpha)
    report.comparison = CellComparison(
        reason=COMPARED,
        baseline=found["suite_run"],
        baseline_run=found["run"],
        alpha=str(alpha),
        regressed=any(s.regressed for s in compared),
        underpowered=underpowered(compared, max_drop),
        scorers=compared,
    )
    report.comparison = with_cached_answers(report.comparison, baseline_rows, candidate_rows)
    return report


async def report_cells(
    conn: Any, cells: list[CellRun], baseline: str, *, max_drop: Decimal, alpha: Decimal
) -> list[CellReport]:
    """Every cell's report on one connection. A cell that cannot be reported by retrying (its
    run is not in the store) is reported as failed; a store that fails fails them all."""
    reports = []
    for cell in cells:
        try:
            report = await report_cell(conn, cell, baseline, max_drop=max_drop, alpha=alpha)
        except _Failed as failed:
            if failed.code != EXIT_PERMANENT:
                raise
            report = CellReport(state="error", reason=failed.reason, message=failed.message)
        reports.append(report)
    return reports


async def _reports(
    env: dict[str, str] | os._Environ[str],
    cells: list[CellRun],
    baseline: str,
    *,
    max_drop: Decimal,
    alpha: Decimal,
) -> list[CellReport]:
    try:
        settings = StoreSettings.from_env(env)
    except StoreSettingsError as err:
        raise _Failed("InvalidStoreSecret", str(err)) from None
    if settings is None:
        raise _Failed("InvalidStoreSecret", "no store is configured", EXIT_PERMANENT)
    for form in settings.secrets():
        SECRETS.add(form)
    try:
        conn = await asyncpg.connect(**settings.connect_kwargs(), timeout=CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        raise _Failed(
            "StoreUnreachable",
            f"cannot connect to {settings.display()}: {type(err).__name__}: {err}",
        ) from None
    try:
        return await report_cells(conn, cells, baseline, max_drop=max_drop, alpha=alpha)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
        raise _Failed("StoreUnreachable", f"{type(err).__name__}: {err}") from None
    finally:
        await conn.close()


async def run_reports(
    env: dict[str, str] | os._Environ[str],
    cells: list[CellRun],
    baseline: str,
    *,
    max_drop: Decimal,
    alpha: Decimal,
) -> tuple[BatchReport, int]:
    """The cells' reports as a report Job writes them (what the suite's status keeps)."""
    try:
        reports = await _reports(env, cells, baseline, max_drop=max_drop, alpha=alpha)
    except _Failed as failed:
        return BatchReport.failed(failed.reason, failed.message), failed.code
    return BatchReport.of(reports), EXIT_OK


async def run_report(
    env: dict[str, str] | os._Environ[str],
    cell: CellRun,
    baseline: str,
    *,
    max_drop: Decimal,
    alpha: Decimal,
) -> tuple[CellReport, int]:
    """One cell's whole report (every scorer)."""
    try:
        (report,) = await _reports(env, [cell], baseline, max_drop=max_drop, alpha=alpha)
    except _Failed as failed:
        return CellReport(state="error", reason=failed.reason, message=failed.message), failed.code
    return report, EXIT_PERMANENT if report.state == "error" else EXIT_OK


SCORERS_OF_RUN = "SELECT scorers FROM runs WHERE evaluation_uid = $1 AND run = $2"


async def compare_stored_runs(
    env: dict[str, str] | os._Environ[str],
    baseline: tuple[str, str],
    candidate: tuple[str, str],
    *,
    max_drop: Decimal,
    alpha: Decimal,
) -> tuple[CellReport, int]:
    """Two stored runs (evaluation uid, run) compared pair by pair: `kubectl evals compare`."""
    try:
        settings = StoreSettings.from_env(env)
    except StoreSettingsError as err:
        return CellReport(state="error", reason="InvalidStoreSecret", message=str(err)), EXIT_RETRY
    if settings is None:
        return CellReport(state="error", reason="InvalidStoreSecret", message="no store"), 3
    for form in settings.secrets():
        SECRETS.add(form)
    try:
        conn = await asyncpg.connect(**settings.connect_kwargs(), timeout=CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
        message = f"cannot connect to {settings.display()}: {type(err).__name__}: {err}"
        return CellReport(state="error", reason="StoreUnreachable", message=message), EXIT_RETRY
    try:
        scorers = await conn.fetchval(SCORERS_OF_RUN, *candidate)
        if scorers is None or await conn.fetchval(SCORERS_OF_RUN, *baseline) is None:
            missing = candidate if scorers is None else baseline
            message = f"run {missing[1]} is not in the store"
            return CellReport(state="error", reason="RunNotStored", message=message), 3
        baseline_rows = await conn.fetch(SCORES, *baseline)
        candidate_rows = await conn.fetch(SCORES, *candidate)
        compared = compare_runs(
            baseline_rows,
            candidate_rows,
            list(scorers),
            max_drop=max_drop,
            alpha=alpha,
        )
    finally:
        await conn.close()
    comparison = CellComparison(
        reason=COMPARED,
        baseline_run=baseline[1],
        alpha=str(alpha),
        regressed=any(s.regressed for s in compared),
        underpowered=underpowered(compared, max_drop),
        scorers=compared,
    )
    comparison = with_cached_answers(comparison, baseline_rows, candidate_rows)
    return CellReport(state="done", comparison=comparison), EXIT_OK


def cmd_compare_runs(args: Any) -> int:
    register_secrets(os.environ)
    report, code = asyncio.run(
        compare_stored_runs(
            os.environ,
            (args.baseline_uid, args.baseline_run),
            (args.candidate_uid, args.candidate_run),
            max_drop=Decimal(args.max_drop),
            alpha=Decimal(args.alpha),
        )
    )
    return _write_report(report, code, args.termination_log)


def cmd_cell_report(args: Any) -> int:
    register_secrets(os.environ)
    cells = [
        CellRun(
            namespace=args.namespace,
            suite=args.suite,
            cell=cell,
            suite_run=args.suite_run,
            evaluation_uid=uid,
            run=run,
        )
        for cell, uid, run in args.cell_run
    ]
    report, code = asyncio.run(
        run_reports(
            os.environ,
            cells,
            args.baseline,
            max_drop=Decimal(args.max_drop),
            alpha=Decimal(args.alpha),
        )
    )
    return _write_report(report, code, args.termination_log)


def _write_report(report: CellReport | BatchReport, code: int, termination_log: Path) -> int:
    message = SECRETS.redact(report.to_message())
    try:
        Path(termination_log).write_text(message)
    except OSError as err:
        print(f"warning: cannot write {termination_log}: {err.strerror}", file=sys.stderr)
    print(message)
    return code
