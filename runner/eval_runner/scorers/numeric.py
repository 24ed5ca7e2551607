"""numeric: the last number in the output is within tolerance of the target."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from eval_api.v1alpha1.task import ScorerSpec
from eval_runner.scorers.registry import Scorer, register

# Thousands separators only in groups of three, so "1,2" is two numbers, not 12.
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")


def _parse(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", "").strip())
    except InvalidOperation:
        return None


@register("numeric")
def build(spec: ScorerSpec) -> Scorer:
    tolerance = Decimal(spec.tolerance or "0")

    def score(output: str, target: str) -> float:
        numbers = _NUMBER.findall(output)
        expected = _parse(target)
        if not numbers or expected is None:
            return 0.0
        # Decimal, not float: "0.3" within tolerance "0.1" of "0.2" must hold exactly.
        return float(abs(Decimal(numbers[-1].replace(",", "")) - expected) <= tolerance)

    return score
