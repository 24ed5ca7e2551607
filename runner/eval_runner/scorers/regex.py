"""regex: the pattern extracts the answer from the output (group 1, else the whole match) and it
is compared to the target after normalisation; with no target, any match scores 1."""

from __future__ import annotations

import re

from eval_api.v1alpha1.task import ScorerSpec
from eval_runner.scorers.normalize import normalize
from eval_runner.scorers.registry import Scorer, register


@register("regex")
def build(spec: ScorerSpec) -> Scorer:
    assert spec.pattern is not None  # the API requires pattern for regex
    pattern = re.compile(spec.pattern)

    def score(output: str, target: str) -> float:
        match = pattern.search(output)
        if match is None:
            return 0.0
        if not target:
            return 1.0
        extracted = (
            match.group(1) if pattern.groups and match.group(1) is not None else match.group(0)
        )
        return float(normalize(extracted, spec.normalize) == normalize(target, spec.normalize))

    return score
