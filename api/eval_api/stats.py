"""Statistics of one scorer's scores: mean, standard error and a 95% interval, from the sums
of a ShardSummary (so the operator's sum over shards gives what one pod would have computed).

- 0/1 scores (exact_match, contains, regex, numeric, json_valid; told apart from the sums:
  with every value in [0, 1], the sum of squares equals the sum exactly when every value is 0
  or 1): the Wilson score interval. A normal interval collapses to [1, 1] at 40 of 40; Wilson
  gives [0.912, 1].
- Other scores (token_f1, graded llm_judge verdicts): Student's t interval with n - 1 degrees
  of freedom, clipped to [0, 1].
- With task.groupField, the samples of a group are not independent (questions on one
  passage): the standard error is cluster-robust (CR1: G/(G-1) * sum over the G groups of
  (S_g - n_g * mean)^2, over n^2) with G - 1 degrees of freedom; 0/1 scores take the Wilson
  interval at the effective sample size mean*(1-mean)/stderr^2 scaled by (t_{n-1}/t_{G-1})^2,
  at most n (as Korn and Graubard, 1998, do for survey proportions).

No numerical library: the one quantile needed, Student's t at 97.5%, comes from the
regularised incomplete beta function by bisection (checked against scipy's values in
tests/unit/test_stats.py). scipy and numpy would add ~100 MB to both images for it.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

from eval_api.shard import ScoreSums
from eval_api.v1alpha1.evaluation import ScoreResult

Z_95 = NormalDist().inv_cdf(0.975)
DIGITS = 6  # of every number in a ScoreResult
_TINY = 1e-300
_CF_EPSILON = 1e-15
_CF_MAX_TERMS = 10_000
_BISECTIONS = 200


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    # The continued fraction of the incomplete beta function, by the modified Lentz method.
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _CF_MAX_TERMS):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            step = d * c
            h *= step
        if abs(step - 1.0) < _CF_EPSILON:
            return h
    raise ArithmeticError(f"incomplete beta ({a}, {b}, {x}) did not converge")


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


@lru_cache(maxsize=1024)
def t_quantile_975(df: int) -> float:
    """Student's t quantile at 0.975 with `df` degrees of freedom (1.96 as df grows).

    P(|T| > t) = I_y(1/2, df/2) complemented, with y = t^2 / (df + t^2); y is found by bisection,
    which needs nothing but the monotonicity of I.
    """
    if df < 1:
        raise ValueError("degrees of freedom must be at least 1")
    low, high = 0.0, 1.0
    for _ in range(_BISECTIONS):
        y = (low + high) / 2
        if incomplete_beta(0.5, df / 2, y) < 0.95:
            low = y
        else:
            high = y
        if high - low <= 1e-17 * high:
            break
    y = (low + high) / 2
    return math.sqrt(df * y / (1.0 - y))


def wilson(p: float, n: float) -> tuple[float, float]:
    """The Wilson score 95% interval of a proportion p observed over n trials."""
    z2 = Z_95 * Z_95
    denominator = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = Z_95 / denominator * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def _t_interval(mean: float, stderr: float, df: int) -> tuple[float, float]:
    half = t_quantile_975(df) * stderr
    return max(0.0, mean - half), min(1.0, mean + half)


def score_result(name: str, sums: ScoreSums) -> ScoreResult:
    """Mean, standard error and 95% interval of one scorer (the module's docstring says which
    interval). No scored sample: no value, n = 0. Too few samples (or groups) to estimate a
    spread: no standard error, and the interval of a continuous score is [0, 1]."""
    n = sums.n
    if n == 0:
        return ScoreResult(name=name, value=None, stderr=None, ci95=None, n=0)
    mean = sums.sum / n
    binary = sums.sumsq == sums.sum
    stderr: float | None = None
    if sums.groups is not None:
        groups = sums.groups
        if groups > 1:
            residuals = (
                (sums.group_sumsq or 0.0)
                - 2 * mean * (sums.group_cross or 0.0)
                + mean * mean * (sums.group_nsq or 0)
            )
            stderr = math.sqrt(groups / (groups - 1) * max(residuals, 0.0)) / n
    elif n > 1:
        stderr = math.sqrt(max(sums.sumsq - n * mean * mean, 0.0) / (n - 1) / n)

    if binary:
        effective = float(n)
        if sums.groups is not None and stderr is not None:
            spread = mean * (1 - mean)
            if stderr > 0 and spread > 0:
                effective = spread / (stderr * stderr)
            scale = (t_quantile_975(n - 1) if n > 1 else Z_95) / t_quantile_975(sums.groups - 1)
            effective = min(float(n), effective * scale * scale)
        ci95 = wilson(mean, effective) if sums.groups is None or stderr is not None else (0.0, 1.0)
    elif stderr is None:
        ci95 = (0.0, 1.0)
    else:
        df = (sums.groups - 1) if sums.groups is not None else n - 1
        ci95 = _t_interval(mean, stderr, df)
    return ScoreResult(
        name=name,
        value=round(mean, DIGITS),
        stderr=None if stderr is None else round(stderr, DIGITS),
        ci95=[round(ci95[0], DIGITS), round(ci95[1], DIGITS)],
        n=n,
    )
