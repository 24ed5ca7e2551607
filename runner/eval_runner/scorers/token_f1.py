"""token_f1: SQuAD-style token-level F1 between the normalised output and target."""

from __future__ import annotations

from collections import Counter

from eval_api.v1alpha1.task import ScorerSpec
from eval_runner.scorers.normalize import normalize
from eval_runner.scorers.registry import Scorer, register


@register("token_f1")
def build(spec: ScorerSpec) -> Scorer:
    def score(output: str, target: str) -> float:
        predicted = normalize(output, spec.normalize).split()
        expected = normalize(target, spec.normalize).split()
        if not predicted or not expected:
            # As in SQuAD: two empty answers agree; one empty answer shares nothing.
            return float(predicted == expected)
        common = sum((Counter(predicted) & Counter(expected)).values())
        if common == 0:
            return 0.0
        precision = common / len(predicted)
        recall = common / len(expected)
        return 2 * precision * recall / (precision + recall)

    return score
