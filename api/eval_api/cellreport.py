"""The contract between `eval-runner cell-report` and the operator: the matrix cells' reports.

When cells of an EvalSuite's matrix have succeeded, the operator runs a small Job that reads the
cells' per-sample rows from the store (the operator itself never holds the store's password):
for each cell it records the run as succeeded in the store, measures the answers' latency
percentiles, finds the baseline run, and compares the two sample by sample. One Job answers up
to REPORT_BATCH_CELLS cells of one suite run (one pod, one store connection); its termination
message is a BatchReport: of each cell, what the suite's status keeps (the latency, the main
scorer's comparison and how many scorers regressed), compact enough that the worst case fits
the 4096 bytes a termination message may hold. `kubectl evals compare` has its own Job and the
full CellReport (every scorer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from eval_api.shard import TERMINATION_MESSAGE_LIMIT
from eval_api.v1alpha1.matrix import CellComparison, ScorerComparison

# The baseline selector the operator passes (`--baseline`): none, previous, or suite-run:<id>.
BASELINE_NONE = "none"
BASELINE_PREVIOUS = "previous"
BASELINE_SUITE_RUN_PREFIX = "suite-run:"

# CellComparison.reason values.
COMPARED = "Compared"
# Compared, but most of the candidate's answers came from the response cache and are the
# baseline's own (execution.cache.reuse AcrossRuns): the comparison does not measure the model
# as it is now.
CACHED_ANSWERS = "CachedAnswers"
NO_BASELINE = "NoBaseline"
BASELINE_NOT_FOUND = "BaselineNotFound"
IS_BASELINE = "IsBaseline"
REPORT_FAILED = "ReportFailed"

# How many cells one report Job answers at most: a BatchReport of this many cells in the worst
# case (every name at its longest, every number at its longest, see
# tests/unit/test_cellreport_batch.py) fits TERMINATION_MESSAGE_LIMIT; one more does not.
REPORT_BATCH_CELLS = 8
# A failed cell's message in a BatchReport is cut to this many bytes (as JSON).
REPORT_ERROR_MESSAGE_LIMIT = 200


def no_baseline_message() -> str:
    return "no earlier succeeded run of this cell"


def baseline_not_found_message(suite_run: str) -> str:
    return f"suite run {suite_run} has no succeeded run of this cell"


def cached_answers_message(cached: int, pairs: int, baseline_run: str | None) -> str:
    return (
        f"{cached} of the {pairs} paired answers of this run came from the response cache "
        f"and are baseline run {baseline_run}'s own (execution.cache.reuse AcrossRuns): the "
        "comparison does not measure the model as it is now; with reuse WithinRun (the "
        "default) every run asks the model again"
    )


def comparison_message(comparison: CellComparison) -> str:
    """The message of a comparison, from its fields: a BatchReport does not carry it."""
    if comparison.reason == NO_BASELINE:
        return no_baseline_message()
    if comparison.reason == BASELINE_NOT_FOUND:
        return baseline_not_found_message(comparison.baseline or "")
    if comparison.reason == CACHED_ANSWERS:
        return cached_answers_message(
            comparison.cached_answers or 0, comparison.paired_samples or 0, comparison.baseline_run
        )
    return comparison.message


def decided_early(
    comparison: dict[str, Any], decided: Mapping[str, Any], limit: int | None = None
) -> dict[str, Any]:
    """A cell report's comparison (as JSON) of a run whose regression gate decided it early
    (status.stoppedEarly.regression, `decided`): whether it regressed is the gate's decision,
    an anytime-valid sequential test, not the fixed-sample tests', which do not hold on the
    samples of a run that stopped asking once it knew the answer. Left as it is when the report
    compared with another run than the gate did. `limit`: the message's length at most."""
    if (
        comparison.get("decidedEarly")  # taken already (a status kept from the last pass)
        or comparison.get("reason") not in (COMPARED, CACHED_ANSWERS)
        or comparison.get("baselineRun") != decided.get("baselineRun")
    ):
        return comparison
    message = f"decided early by the regression gate: {decided.get('message', '')}"
    if comparison.get("reason") == CACHED_ANSWERS and comparison.get("message"):
        message = f"{comparison['message']}; {message}"
    if limit is not None and len(message) > limit:
        message = message[: limit - 1] + "…"
    return {
        **comparison,
        "decidedEarly": True,
        "regressed": decided.get("decision") == "Regressed",
        "underpowered": False,
        "message": message,
    }


class CellReport(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    state: Literal["done", "error"]
    reason: str | None = Field(default=None, description="CamelCase reason when state is error.")
    message: str | None = None
    latency_p50_ms: float | None = Field(default=None, alias="latencyP50Ms")
    latency_p95_ms: float | None = Field(default=None, alias="latencyP95Ms")
    comparison: CellComparison | None = None

    def to_message(self) -> str:
        """Compact JSON within the termination message limit: with very many scorers the last
        ones are left out (the main scorer, first, always stays) and the message says so."""
        text = self.model_dump_json(by_alias=True, exclude_none=True)
        report = self
        while len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            comparison = report.comparison
            if comparison is None or len(comparison.scorers) <= 1:
                report = report.model_copy(update={"message": (report.message or "")[:512]})
                return report.model_dump_json(by_alias=True, exclude_none=True)
            kept = comparison.scorers[:-1]
            comparison = comparison.model_copy(
                update={
                    "scorers": kept,
                    "message": f"only the first {len(kept)} scorers fit the report",
                }
            )
            report = report.model_copy(update={"comparison": comparison})
            text = report.model_dump_json(by_alias=True, exclude_none=True)
        return text


def comparison_columns(comparison: CellComparison | None) -> tuple[str, str, str]:
    """The main scorer's difference and p-value, and the verdict (yes, no, or why there is
    none), as the leaderboards of `kubectl evals suite` and `eval-runner run suite.yaml` show
    them. A verdict the regression gate decided early shows "early" for its p-value: the
    fixed-sample test's does not hold on a run that stopped once it knew."""
    main = comparison.scorers[0] if comparison and comparison.scorers else None
    delta = "-" if main is None or main.difference is None else f"{main.difference:+.4f}"
    p_value = "-" if main is None or main.p_value is None else f"{main.p_value:.4g}"
    if comparison is not None and comparison.decided_early:
        p_value = "early"
    if comparison is None:
        verdict = "-"
    elif comparison.regressed:
        verdict = "yes"
    elif comparison.reason != COMPARED:
        verdict = comparison.reason  # why there is no "no": no baseline, cached answers, ...
    else:
        verdict = "no"
    return delta, p_value, verdict


# --- the batch report: what a report Job of several cells writes -------------------------------
#
# {"cells": [CELL, ...]}    every cell asked, in the order asked (exit 0)
# {"error": [reason, message]}    the batch failed as a whole (exit 1: retried; 3: permanent)
# CELL: {"e": [reason, message]} when that cell's report failed (its run is not in the store),
#   else {"l": [p50, p95]} (latency in ms, null when unknown) and, when compared, "c":
#   [reason, baseline, baselineRun, underpowered, cachedAnswers, pairedSamples,
#    regressedScorers, MAIN]
#   MAIN: null or the main scorer's [name, test, pairs, excluded, baselineMean, candidateMean,
#    difference, ci95, pValue, minDetectableEffect, regressed]
# Messages of comparisons are not carried: comparison_message makes them from the fields.


def _cut(text: str, limit: int) -> str:
    """text cut so that its JSON string takes at most `limit` bytes."""
    if len(json.dumps(text)) <= limit:
        return text
    text = text[:limit]
    while text and len(json.dumps(text + "…")) > limit:
        text = text[:-1]
    return text + "…"


def compact_cell(report: CellReport) -> dict[str, Any]:
    """One cell's report as a BatchReport carries it: what the suite's status keeps."""
    if report.state == "error":
        message = _cut(report.message or "", REPORT_ERROR_MESSAGE_LIMIT)
        return {"e": [report.reason or "ReportFailed", message]}
    cell: dict[str, Any] = {"l": [report.latency_p50_ms, report.latency_p95_ms]}
    comparison = report.comparison
    if comparison is not None:
        main = comparison.scorers[0] if comparison.scorers else None
        cell["c"] = [
            comparison.reason,
            comparison.baseline,
            comparison.baseline_run,
            comparison.underpowered,
            comparison.cached_answers,
            comparison.paired_samples,
            sum(1 for s in comparison.scorers if s.regressed),
            None
            if main is None
            else [
                main.name,
                main.test,
                main.pairs,
                main.excluded,
                main.baseline_mean,
                main.candidate_mean,
                main.difference,
                main.ci95,
                main.p_value,
                main.min_detectable_effect,
                main.regressed,
            ],
        ]
    return cell


def expand_cell(cell: Mapping[str, Any], alpha: str) -> CellReport:
    """A BatchReport's cell as the CellReport the status is made from (the main scorer alone,
    the others counted in regressedScorers)."""
    if "e" in cell:
        reason, message = cell["e"]
        return CellReport(state="error", reason=reason, message=message)
    p50, p95 = cell.get("l") or (None, None)
    report = CellReport(state="done", latency_p50_ms=p50, latency_p95_ms=p95)
    if cell.get("c") is not None:
        reason, baseline, baseline_run, underpowered, cached, paired, regressed, main = cell["c"]
        scorers = []
        if main is not None:
            name, test, pairs, excluded, b_mean, c_mean, diff, ci95, p, mde, main_regressed = main
            scorers.append(
                ScorerComparison(
                    name=name,
                    test=test,
                    pairs=pairs,
                    excluded=excluded,
                    baseline_mean=b_mean,
                    candidate_mean=c_mean,
                    difference=diff,
                    ci95=ci95,
                    p_value=p,
                    min_detectable_effect=mde,
                    regressed=main_regressed,
                )
            )
        comparison = CellComparison(
            reason=reason,
            baseline=baseline,
            baseline_run=baseline_run,
            alpha=alpha,
            regressed=regressed > 0,
            underpowered=underpowered,
            cached_answers=cached,
            paired_samples=paired,
            scorers=scorers,
            regressed_scorers=regressed or None,
        )
        report.comparison = comparison.model_copy(
            update={"message": comparison_message(comparison)}
        )
    return report


class BatchReport(BaseModel):
    """The termination message of a report Job: its cells' reports in the order asked, or why
    the batch failed as a whole."""

    model_config = ConfigDict(extra="ignore")

    cells: list[dict[str, Any]] = Field(default_factory=list)
    error: list[str] | None = None

    @classmethod
    def of(cls, reports: Sequence[CellReport]) -> BatchReport:
        return cls(cells=[compact_cell(r) for r in reports])

    @classmethod
    def failed(cls, reason: str, message: str) -> BatchReport:
        return cls(error=[reason, _cut(message, REPORT_ERROR_MESSAGE_LIMIT)])

    def to_message(self) -> str:
        """Compact JSON within the termination message limit. A batch is sized so that its
        worst case fits; should it not, the last cells are left out (and asked again)."""
        if self.error is not None:
            return json.dumps({"error": self.error}, separators=(",", ":"))
        cells = list(self.cells)
        while True:
            text = json.dumps({"cells": cells}, separators=(",", ":"))
            if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT or not cells:
                return text
            cells.pop()

    def reports(self, runs: Sequence[str], alpha: str) -> dict[str, CellReport]:
        """Each answered run's report (runs: the cells' runs in the order asked); a batch that
        failed as a whole answers every run with its error."""
        if self.error is None and not self.cells:
            return self.failed("ReportMissing", "the report Job left no report").reports(
                runs, alpha
            )
        if self.error is not None:
            reason, message = (list(self.error) + ["", ""])[:2]
            failed = CellReport(state="error", reason=reason, message=message)
            return {run: failed for run in runs}
        found = {}
        for run, cell in zip(runs, self.cells, strict=False):
            try:
                found[run] = expand_cell(cell, alpha)
            except (ValueError, TypeError, KeyError):  # a report of another version
                found[run] = CellReport(
                    state="error", reason="ReportUnreadable", message=json.dumps(cell)[:200]
                )
        return found
