"""Statistics of one scorer's scores: mean, standard error and a 95% interval."""

from __future__ import annotations

import math

from eval_api.shard import ScoreSums
from eval_api.v1alpha1 import ScoreResult

Z_95 = 1.959963984540054


def score_result(name: str, sums: ScoreSums) -> ScoreResult:
    """Mean, standard error and a normal-approximation 95% interval clipped to [0, 1]
    (every scorer's values lie in [0, 1])."""
    n = sums.n
    mean = sums.sum / n if n else 0.0
    if n > 1:
        variance = max(sums.sumsq - n * mean * mean, 0.0) / (n - 1)
        stderr = math.sqrt(variance / n)
    else:
        stderr = 0.0
    low = max(0.0, mean - Z_95 * stderr)
    high = min(1.0, mean + Z_95 * stderr)
    return ScoreResult(
        name=name,
        value=round(mean, 6),
        stderr=round(stderr, 6),
        ci95=[round(low, 6), round(high, 6)],
        n=n,
    )
