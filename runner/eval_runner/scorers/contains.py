"""contains: the normalised output contains the normalised target."""

from __future__ import annotations

from eval_api.v1alpha1.task import ScorerSpec
from eval_runner.scorers.normalize import normalize
from eval_runner.scorers.registry import Scorer, register


@register("contains")
def build(spec: ScorerSpec) -> Scorer:
    def score(output: str, target: str) -> float:
        expected = normalize(target, spec.normalize)
        # An empty target is contained in everything; it must not count as a right answer.
        return float(bool(expected) and expected in normalize(output, spec.normalize))

    return score
