"""execution.earlyStop: whether a run's answer is already known, from the shards' sums.

One implementation for the operator (on the live sums it polls) and `eval-runner run` (on its own
tally). Each result gets the interval of an anytime-valid confidence sequence
(eval_api.sequential) — for a threshold's scorer at that threshold's share of 1 - confidence, so
the whole verdict holds with probability `confidence`. The run is decided:

- when Verdict: once every threshold's interval lies wholly on one side of it;
- when Precision: once the first result's interval is at most ciWidth wide;

and never before minSamples samples are counted, nor before the run's size is known (the
sequence is tuned for a tenth of the run). The first decision is the run's: the caller keeps it
(status.stoppedEarly), whatever later sums say.

An EvalSuite cell with a baseline also has a regression gate: the run is decided only once the
gate is too, from the shards' paired sums (eval_api.shard.BaselineSums): for each scorer an
empirical-Bernstein sequence (eval_api.sequential.bernstein_sequence) of the mean paired
difference, candidate minus baseline, at the regression's alpha shared among the scorers. The
gate is decided when some scorer is shown worse by more than maxDrop (Regressed), or every
scorer is shown not to be (NotRegressed). Only one of the two can be wrong whatever the truth,
so each side of a scorer's sequence is at the scorer's whole share of alpha. A cell whose
baseline has no run yet has no gate (the cell report says NoBaseline, or BaselineNotFound for a
named suite run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from eval_api.sequential import bernstein_sequence, confidence_sequence, grouped_sequence
from eval_api.shard import BaselineSums, ScoreSums
from eval_api.stats import DIGITS
from eval_api.v1alpha1.execution import EARLY_STOP_VERDICT, EarlyStopSpec
from eval_api.v1alpha1.task import Threshold, parse_threshold

VERDICT_KNOWN = "VerdictKnown"
PRECISION_REACHED = "PrecisionReached"
REGRESSED = "Regressed"
NOT_REGRESSED = "NotRegressed"
# Why a suite cell of a task with groupField asks every sample when its suite has a baseline.
GROUPED_GATE = (
    "regression: task.groupField, whose paired samples are not independent, is compared with "
    "its baseline by the cell report once every sample is asked"
)
# The variance of a paired value (candidate - baseline + 1) / 2 the gate's sequence is tuned
# for: 0/1 scores with a tenth of the pairs discordant (each such pair is 0 or 1, its squared
# distance from 1/2 a quarter).
PAIRED_VARIANCE = 0.025
# The sequence is tightest near this share of the run's samples (at least minSamples).
TUNED_SHARE = 10


def tuned_for(spec: EarlyStopSpec, total: int) -> int:
    """The sample count the sequence is tightest near: a tenth of the run, at least
    minSamples. Fixed before any score is seen (it depends on the run's size only)."""
    return max(spec.min_samples, math.ceil(total / TUNED_SHARE), 1)


@dataclass(frozen=True)
class Side:
    """Where a threshold stands."""

    threshold: Threshold
    interval: tuple[float, float]

    @property
    def side(self) -> str:
        lower, upper = self.interval
        value = float(self.threshold.value)
        if lower > value:
            return "above"
        if upper < value:
            return "below"
        return "undecided"

    @property
    def holds(self) -> bool | None:
        """Whether the threshold holds, once decided (an == threshold never is)."""
        side = self.side
        if side == "undecided" or self.threshold.op == "==":
            return None
        return (side == "above") == (self.threshold.op in (">=", ">"))

    def describe(self) -> str:
        lower, upper = self.interval
        t = self.threshold
        where = {"above": "above", "below": "below"}.get(self.side, "around")
        return f"{t.scorer} [{lower:.4g}, {upper:.4g}] {where} {t.value}"


@dataclass(frozen=True)
class RegressionGate:
    """The suite's regression settings, as a cell's run was started with."""

    max_drop: float
    alpha: float


class GatePlan(BaseModel):
    """A suite cell's regression gate, as its run was started with (execution.earlyStop and
    the suite's baseline, eval_api.matrix.gate_plan): which cell, which baseline the shards
    pair with, and when the gate says regressed."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    cell: str  # <model>/<task>, the cell's identity in the store
    baseline: str  # "previous" or "suite-run:<id>" (eval_api.cellreport)
    max_drop: str = Field(alias="maxDrop")
    alpha: str
    # False with task.groupField: no sequential test of grouped pairs, so the run asks every
    # sample (stopping on the thresholds would leave the cell report's tests on a sample the
    # stop chose).
    sequential: bool = True

    @property
    def gate(self) -> RegressionGate | None:
        """What evaluate decides the gate by (None when it is not sequential)."""
        if not self.sequential:
            return None
        return RegressionGate(float(self.max_drop), float(self.alpha))

    @property
    def hold(self) -> str | None:
        """Why the run asks every sample (evaluate's `hold`), when it must."""
        return None if self.sequential else GROUPED_GATE


@dataclass(frozen=True)
class GateState:
    """Where the regression gate stands: each scorer's interval of the mean paired difference
    (candidate minus baseline), the decision (REGRESSED, NOT_REGRESSED or None) and why."""

    baseline_run: str
    differences: dict[str, tuple[float, float]]
    pairs: int
    decision: str | None
    message: str


def gate_state(
    gate: RegressionGate, sums: BaselineSums, scorers: Sequence[str], t_opt: int, min_pairs: int
) -> GateState:
    """The gate on the shards' paired sums (`sums.run` set). `scorers`: every result of the
    run, fixed before any score (alpha is shared among them); the gate decides on those the
    baseline run has too (sums.scorers, known before any pair)."""
    assert sums.run is not None
    if sums.scorers is not None:
        scorers = [name for name in scorers if name in sums.scorers]
    level = gate.alpha / max(1, len(scorers))
    differences: dict[str, tuple[float, float]] = {}
    shown: list[str] = []
    ruled_out = 0
    described = []
    for name in scorers:
        paired = sums.paired.get(name)
        if paired is None or paired.n == 0:
            described.append(f"{name} no pairs yet")
            continue
        lower, upper = bernstein_sequence(
            paired.n, paired.sum, paired.variance, level, t_opt * PAIRED_VARIANCE
        )
        difference = (2 * lower - 1, 2 * upper - 1)
        differences[name] = difference
        decided = paired.n >= min_pairs
        if decided and difference[1] < -gate.max_drop:
            shown.append(name)
            where = "worse"
        elif decided and difference[0] > -gate.max_drop:
            ruled_out += 1
            where = "not worse"
        else:
            where = "undecided"
        described.append(
            f"{name} difference [{difference[0]:.4g}, {difference[1]:.4g}] over {paired.n} "
            f"pairs: {where}"
        )
    pairs = max((p.n for p in sums.paired.values()), default=0)
    decision = REGRESSED if shown else NOT_REGRESSED if ruled_out == len(scorers) else None
    head = {
        REGRESSED: f"worse than baseline run {sums.run} by more than maxDrop {gate.max_drop:g}",
        NOT_REGRESSED: f"not worse than baseline run {sums.run} by more than maxDrop "
        f"{gate.max_drop:g}",
        None: f"against baseline run {sums.run}",
    }[decision]
    return GateState(sums.run, differences, pairs, decision, f"{head}: " + "; ".join(described))


@dataclass(frozen=True)
class EarlyStopState:
    """What the sums say now: every result's interval, each threshold's side, and the
    decision (None while the run must go on)."""

    intervals: dict[str, tuple[float, float]]
    sides: tuple[Side, ...]
    decision: str | None  # VERDICT_KNOWN or PRECISION_REACHED
    message: str
    regression: GateState | None = None

    @property
    def passed(self) -> bool | None:
        """The decided verdict: every threshold holds (None unless every one is decided)."""
        holds = [side.holds for side in self.sides]
        if not holds or any(h is None for h in holds):
            return None
        return all(holds)


def _counted(sums: ScoreSums) -> int:
    """The scores the sequence has counted."""
    return sums.seq_n if sums.seq_n is not None else sums.n


def evaluate(
    spec: EarlyStopSpec,
    thresholds: Sequence[str],
    sums: Mapping[str, ScoreSums],
    total: int,
    *,
    every_shard: bool = True,
    max_group: int | None = None,
    gate: RegressionGate | None = None,
    baseline: BaselineSums | None = None,
    baseline_note: str = "waiting for the shards' pairs with the baseline",
    hold: str | None = None,
) -> EarlyStopState:
    """The state of a run with execution.earlyStop `spec`. `sums`: each result's sums so far,
    the first being the main score; `total`: the run's samples; `every_shard`: the run's size
    is known (a shard has said it); `max_group`: with task.groupField, the
    largest group (the sums' whole groups are then the units counted,
    eval_api.sequential.grouped_sequence). `gate`: a suite cell's regression gate, decided on
    the shards' merged `baseline` sums (None: not known yet, or the shards paired with
    different runs: never decided, `baseline_note` says which; its run None, or no result in
    common with it: the cell has no baseline to gate on, no gate). `hold`: why the run must ask
    every sample whatever the sums say (GROUPED_GATE)."""
    confidence = float(Decimal(spec.confidence))
    alpha = 1 - confidence
    parsed = [parse_threshold(text) for text in thresholds]
    judged = {t.scorer for t in parsed}
    t_opt = tuned_for(spec, total)
    intervals: dict[str, tuple[float, float]] = {}
    # Deciding thresholds: a threshold's scorer at its share of alpha (Bonferroni over the
    # thresholds). Precision decides on the first result alone, at alpha.
    verdict = spec.when == EARLY_STOP_VERDICT
    for name, s in sums.items():
        level = alpha / len(parsed) if verdict and name in judged and parsed else alpha
        # The sequential sums (the shards' finished prefixes of their asking order); all the
        # sums from a summary without them (a runner older than earlyStop's sums).
        n = _counted(s)
        total_score = s.seq_sum if s.seq_sum is not None else s.sum
        if s.seq_groups is not None:
            if not max_group:
                interval = (0.0, 1.0)  # no shard has said how large the run's groups are
            else:
                interval = grouped_sequence(
                    total_score, n, s.seq_groups, max_group, level, max(1.0, t_opt / max_group)
                )
        else:
            interval = confidence_sequence(total_score, n, level, t_opt)
        intervals[name] = interval
    sides = tuple(Side(t, intervals.get(t.scorer, (0.0, 1.0))) for t in parsed)
    scored = min((_counted(sums[t.scorer]) for t in parsed if t.scorer in sums), default=0)
    main = next(iter(sums), None)
    decision: str | None = None
    message = ""
    if verdict:
        message = "; ".join(side.describe() for side in sides)
        if sides and all(side.holds is not None for side in sides):
            decision = VERDICT_KNOWN
    elif main is not None:
        scored = _counted(sums[main])
        lower, upper = intervals[main]
        message = f"{main} [{lower:.4g}, {upper:.4g}], width {upper - lower:.4g}"
        if upper - lower <= float(Decimal(spec.ci_width or "0")):
            decision = PRECISION_REACHED
    regression: GateState | None = None
    if gate is not None:
        if baseline is None:
            decision = None
            message += f"; regression: {baseline_note}"
        elif baseline.run is not None and baseline.scorers != []:
            regression = gate_state(gate, baseline, list(sums), t_opt, spec.min_samples)
            message += f"; regression: {regression.message}"
            if regression.decision is None:
                decision = None
    if hold is not None:
        decision = None
        message += f"; {hold}"
    if not every_shard or scored < spec.min_samples:
        decision = None
    return EarlyStopState(intervals, sides, decision, message.removeprefix("; "), regression)


def rounded(interval: tuple[float, float]) -> list[float]:
    return [round(interval[0], DIGITS), round(interval[1], DIGITS)]


def stopped_early(
    reason: str | None,
    message: str | None,
    passed: bool | None,
    asked: int,
    total: int,
    requests: int,
    cost_usd: str,
    regression: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """status.stoppedEarly (and a local run's report): None unless the run was decided
    (`reason`) before it asked its last sample. What was saved is estimated at the run's own
    rates so far: requests and cost per asked sample. `regression`: the gate's decision
    (regression_decision)."""
    if reason is None or asked >= total:
        return None
    left = total - asked
    found: dict[str, Any] = {
        "reason": reason,
        "samples": asked,
        "of": total,
        "savedRequests": round(requests / asked * left) if asked else 0,
        "message": message or "",
    }
    if passed is not None:
        found["passed"] = passed
    if regression is not None:
        found["regression"] = regression
    cost = Decimal(cost_usd)
    if cost > 0 and asked:
        found["savedUSD"] = format((cost / asked * left).quantize(Decimal("0.0001")), "f")
    return found


def regression_decision(state: GateState | None) -> dict[str, Any] | None:
    """status.stoppedEarly.regression of a decided gate."""
    if state is None or state.decision is None:
        return None
    return {
        "decision": state.decision,
        "baselineRun": state.baseline_run,
        "pairs": state.pairs,
        "differences": {name: rounded(d) for name, d in state.differences.items()},
        "message": state.message,
    }
