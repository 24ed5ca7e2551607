"""A shard's early stop (execution.earlyStop): set once, by the progress server on the
operator's word (POST /stop) or by a local run's own decision (EarlyStopWatch: `eval-runner
run` of an Evaluation or of a suite's cells); the workers read it before each new sample."""

from __future__ import annotations

from typing import Any

import structlog

from eval_api.aggregate import Aggregate
from eval_api.earlystop import GatePlan, regression_decision, rounded, stopped_early
from eval_api.earlystop import evaluate as evaluate_early_stop
from eval_api.shard import ShardSummary
from eval_api.v1alpha1.evaluation import EvaluationSpec

log = structlog.get_logger()


class StopSignal:
    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            log.info("stopping early: no new sample starts", reason=reason)


class EarlyStopWatch:
    """A local run's execution.earlyStop: evaluates the run's own sums as samples finish (at
    most every 200th of the run, which any stopping rule may do) and stops it once decided."""

    def __init__(
        self, spec: EvaluationSpec, stop: StopSignal, gate: GatePlan | None = None
    ) -> None:
        assert spec.execution.early_stop is not None
        self.rule = spec.execution.early_stop
        self.thresholds = list(spec.thresholds)
        self.stop = stop
        # A suite cell run with --store and a baseline: its regression gate, on the pairs the
        # shard makes with the baseline's stored scores (summary.baseline).
        self.gate_plan = gate
        self.reason: str | None = None
        self.message: str | None = None
        self.passed: bool | None = None
        self.regression: dict[str, Any] | None = None
        self.max_group: int | None = None
        self._seen = 0

    def update(self, summary: ShardSummary) -> None:
        done = summary.completed + summary.failed
        if self.reason is not None or not summary.total:
            return
        if done - self._seen < max(1, summary.total // 200) and done < summary.total:
            return
        self._seen = done
        state = evaluate_early_stop(
            self.rule,
            self.thresholds,
            summary.scores,
            summary.total,
            max_group=summary.max_group,
            gate=self.gate_plan.gate if self.gate_plan is not None else None,
            baseline=summary.baseline,
            hold=self.gate_plan.hold if self.gate_plan is not None else None,
        )
        self.max_group = summary.max_group
        if state.decision is not None:
            self.reason, self.message, self.passed = state.decision, state.message, state.passed
            self.regression = regression_decision(state.regression)
            self.stop.set(state.decision)

    def finish(self, result: Aggregate) -> tuple[dict[str, Any] | None, bool | None]:
        """Every result's csInterval set on `result`; the stoppedEarly report (None when the
        run asked every sample) and the decided verdict."""
        state = evaluate_early_stop(
            self.rule,
            self.thresholds,
            result.sums,
            result.progress.total,
            max_group=self.max_group,
        )
        for score in result.results:
            interval = state.intervals.get(score.name)
            if interval is not None and score.n:
                score.cs_interval = rounded(interval)
        progress, usage = result.progress, result.usage
        report = stopped_early(
            self.reason,
            self.message,
            self.passed,
            progress.completed + progress.failed,
            progress.total,
            usage.requests,
            usage.cost_usd,
            self.regression,
        )
        return report, None if report is None else report.get("passed")
