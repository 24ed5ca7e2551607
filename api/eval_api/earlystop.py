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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from eval_api.sequential import confidence_sequence, grouped_sequence
from eval_api.shard import ScoreSums
from eval_api.stats import DIGITS
from eval_api.v1alpha1.execution import EARLY_STOP_VERDICT, EarlyStopSpec
from eval_api.v1alpha1.task import Threshold, parse_threshold

VERDICT_KNOWN = "VerdictKnown"
PRECISION_REACHED = "PrecisionReached"
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
class EarlyStopState:
    """What the sums say now: every result's interval, each threshold's side, and the
    decision (None while the run must go on)."""

    intervals: dict[str, tuple[float, float]]
    sides: tuple[Side, ...]
    decision: str | None  # VERDICT_KNOWN or PRECISION_REACHED
    message: str

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
) -> EarlyStopState:
    """The state of a run with execution.earlyStop `spec`. `sums`: each result's sums so far,
    the first being the main score; `total`: the run's samples; `every_shard`: the run's size
    is known (a shard has said it); `max_group`: with task.groupField, the
    largest group (the sums' whole groups are then the units counted,
    eval_api.sequential.grouped_sequence)."""
    confidence = float(Decimal(spec.confidence))
    alpha = 1 - confidence
    parsed = [parse_threshold(text) for text in thresholds]
    judged = {t.scorer for t in parsed}
    t_opt = tuned_for(spec, total)
    intervals: dict[str, tuple[float, float]] = {}
    for name, s in sums.items():
        # Deciding thresholds: a threshold's scorer at its share of alpha (Bonferroni over the
        # thresholds). Precision decides on the first result alone, at alpha.
        verdict = spec.when == EARLY_STOP_VERDICT
        level = alpha / len(parsed) if verdict and name in judged and parsed else alpha
        # The sequential sums (the shards' finished prefixes of their asking order); all the
        # sums from a summary without them (a runner older than earlyStop's sums).
        n = s.seq_n if s.seq_n is not None else s.n
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
    if spec.when == EARLY_STOP_VERDICT:
        message = "; ".join(side.describe() for side in sides)
        if sides and all(side.holds is not None for side in sides):
            decision = VERDICT_KNOWN
    elif main is not None:
        scored = _counted(sums[main])
        lower, upper = intervals[main]
        message = f"{main} [{lower:.4g}, {upper:.4g}], width {upper - lower:.4g}"
        if upper - lower <= float(Decimal(spec.ci_width or "0")):
            decision = PRECISION_REACHED
    if not every_shard or scored < spec.min_samples:
        decision = None
    return EarlyStopState(intervals, sides, decision, message)


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
) -> dict[str, Any] | None:
    """status.stoppedEarly (and a local run's report): None unless the run was decided
    (`reason`) before it asked its last sample. What was saved is estimated at the run's own
    rates so far: requests and cost per asked sample."""
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
    cost = Decimal(cost_usd)
    if cost > 0 and asked:
        found["savedUSD"] = format((cost / asked * left).quantize(Decimal("0.0001")), "f")
    return found
