"""json_valid: the output parses as JSON (the target is not used)."""

from __future__ import annotations

import json

from eval_api.v1alpha1.task import ScorerSpec
from eval_runner.scorers.registry import Scorer, register


@register("json_valid")
def build(spec: ScorerSpec) -> Scorer:
    def score(output: str, target: str) -> float:
        try:
            json.loads(output)
        except ValueError:
            return 0.0
        return 1.0

    return score
