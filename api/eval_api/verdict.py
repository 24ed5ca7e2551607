"""Whether an Evaluation's thresholds hold: one implementation for the operator and local runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from eval_api.v1alpha1.task import parse_threshold


@dataclass(frozen=True)
class ThresholdCheck:
    text: str  # the threshold as written, e.g. "exact_match >= 0.8"
    scorer: str
    value: float | None  # the scorer's mean; None when no sample was scored
    holds: bool

    def describe(self) -> str:
        if self.value is None:
            return f"{self.scorer}: no scored samples"
        threshold = parse_threshold(self.text)
        outcome = "ok" if self.holds else "not met"
        return f"{self.scorer} {self.value:.4g} {threshold.op} {threshold.value}: {outcome}"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str  # ThresholdsMet, ThresholdsNotMet or NoThresholds
    checks: tuple[ThresholdCheck, ...]

    @property
    def message(self) -> str:
        if not self.checks:
            return "no thresholds set"
        return "; ".join(check.describe() for check in self.checks)


def judge_thresholds(thresholds: list[str], values: Mapping[str, float]) -> Verdict:
    """`values` maps scorer names to their means; a scorer without a value fails its threshold."""
    checks = []
    for text in thresholds:
        threshold = parse_threshold(text)
        value = values.get(threshold.scorer)
        holds = value is not None and threshold.holds(value)
        checks.append(ThresholdCheck(text, threshold.scorer, value, holds))
    if not checks:
        return Verdict(True, "NoThresholds", ())
    passed = all(check.holds for check in checks)
    return Verdict(passed, "ThresholdsMet" if passed else "ThresholdsNotMet", tuple(checks))
