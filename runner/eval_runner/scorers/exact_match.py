"""exact_match: the normalised output equals the normalised target."""

from __future__ import annotations

from eval_api.v1alpha1.task import ScorerSpec
from eval_runner.scorers.normalize import normalize
from eval_runner.scorers.registry import Scorer, register


@register("exact_match")
def build(spec: ScorerSpec) -> Scorer:
    def score(output: str, target: str) -> float:
        return float(normalize(output, spec.normalize) == normalize(target, spec.normalize))

    return score
