"""Paired comparison of two runs' per-sample scores: the regression gate's statistics.

Two runs of the same task score the same samples, so they are compared pair by pair (matched by
sample id), not by their separate confidence intervals: pairing removes the samples' own
difficulty from the noise, which is what makes a small drop detectable at all. A sample scored
in only one run is left out and counted.

The statistic is the mean paired difference d = candidate - baseline (what the leaderboard's
scores differ by), and a cell regresses when it is worse by more than maxDrop:
H0: mean(d) >= -maxDrop against H1: mean(d) < -maxDrop, one-sided at alpha. The test is of
that mean, never of a median: a two-sided signed-rank test (what this module used before) asks
whether the differences are symmetric about 0, so 92 pairs at +0.02 and 8 at -0.5 (mean -0.022,
bootstrap interval [-0.053, +0.004]) came out "significant" at p = 2e-11 because most pairs
moved up, while the verdict's direction came from the mean.

- 0/1 scores: only the discordant pairs move the mean (worse: baseline right and candidate
  wrong; better: the reverse), mean(d) = (better - worse) / n.
  At maxDrop 0 the null is P(worse) = P(better), and given the m discordant pairs, worse is
  Binomial(m, 1/2): McNemar's exact test, one-sided (scipy.stats.binomtest, "greater").
  With a margin the null P(worse) - P(better) <= maxDrop depends on how often pairs disagree, a
  nuisance parameter no conditional test removes exactly; Tango's score test (Stat Med 1998;
  17:891-908) evaluates the variance of (worse - better) / n at the restricted maximum
  likelihood under the null's boundary and is the usual test of a paired-proportions margin.
  Rejecting "worse by at most maxDrop" must also reject "not worse at all", so the p-value
  is the larger of the two: exact where McNemar's test is, and never below it with a margin.
- Other scores: the one-sided paired t-test of mean(d) against -maxDrop
  (scipy.stats.ttest_1samp, "less"). The scores lie in [0, 1], so d is bounded and its mean
  is close to normal at the sample sizes evaluations have; the test is of the mean itself,
  with no symmetry assumption, unlike signed-rank and sign-flip tests.
- Either way, the 95% interval of the mean difference is a paired bootstrap percentile interval
  (10,000 resamples by default, seeded: the same rows always give the same interval). Memory
  does not grow with n: a resample's mean depends only on how often it draws each distinct
  difference, so when the differences take few values (0/1 scores: -1, 0, 1) the resamples are
  multinomial counts over them (exactly the same distribution as resampled indices); otherwise
  indices are drawn a bounded chunk of resamples at a time.
- The minimum detectable effect is the drop these pairs detect at alpha with 80% power:
  maxDrop + (z(1-alpha) + z(0.8)) * sd(d) / sqrt(n) (normal approximation, one-sided as the
  test is), so that a "no regression" verdict from a handful of samples is not read as more
  than it is.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

DEFAULT_RESAMPLES = 10_000
POWER = 0.8
# Indices (and gathered differences) held at once by the bootstrap: 16 MiB of each, whatever n.
BOOTSTRAP_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class PairedComparison:
    """Candidate minus baseline, over the samples both runs scored."""

    test: Literal["mcnemar-exact", "t-test", "none"]
    pairs: int
    only_in_baseline: int
    only_in_candidate: int
    baseline_mean: float | None
    candidate_mean: float | None
    difference: float | None  # mean of candidate - baseline (negative: worse)
    ci95: tuple[float, float] | None
    p_value: float | None  # one-sided, of H0: difference >= -max_drop
    # 0/1 scores: (baseline right and candidate wrong, baseline wrong and candidate right).
    discordant: tuple[int, int] | None
    min_detectable_effect: float | None
    regressed: bool  # worse by more than max_drop, significantly at alpha


def _binary(values: np.ndarray) -> bool:
    return bool(np.all((values == 0.0) | (values == 1.0)))


def _checked(scores: Mapping[Hashable, float], which: str) -> dict[Hashable, float]:
    checked = {}
    for key, value in scores.items():
        number = float(value)
        if not math.isfinite(number) or not 0.0 <= number <= 1.0:
            raise ValueError(f"{which} score of sample {key!r} is {value!r}: scores lie in [0, 1]")
        checked[key] = number
    return checked


def mcnemar_margin_p(worse: int, better: int, n: int, max_drop: float) -> float:
    """One-sided p-value of H0: P(worse) - P(better) <= max_drop over n pairs (the module's
    docstring says why): McNemar's exact test, and with a margin also Tango's score test."""
    if worse + better == 0:
        return 1.0
    exact = float(stats.binomtest(worse, worse + better, 0.5, alternative="greater").pvalue)
    if max_drop == 0.0:
        return exact
    # The restricted MLE of P(better) with P(worse) = P(better) + max_drop: the positive root
    # of 2n x^2 + (max_drop (2n - worse + better) - (worse + better)) x
    #     - better max_drop (1 - max_drop) = 0.
    a = 2.0 * n
    b = max_drop * (2 * n - worse + better) - (worse + better)
    c = -better * max_drop * (1.0 - max_drop)
    p_better = (-b + math.sqrt(b * b - 4.0 * a * c)) / (2.0 * a)
    variance = n * (2.0 * p_better + max_drop * (1.0 - max_drop))
    z = (worse - better - n * max_drop) / math.sqrt(variance)
    return max(exact, float(stats.norm.sf(z)))


def mean_margin_p(d: np.ndarray, max_drop: float) -> float | None:
    """One-sided paired t-test p-value of H0: mean(d) >= -max_drop; None for a single pair."""
    if len(d) < 2:
        return None
    if np.all(d == d[0]):
        # No spread: the t statistic is infinite (scipy says so with a precision warning).
        return 0.0 if d[0] < -max_drop else 1.0
    return float(stats.ttest_1samp(d, -max_drop, alternative="less").pvalue)


def bootstrap_means(d: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The means of `resamples` resamples of d with replacement, in memory bounded by
    BOOTSTRAP_ELEMENTS whatever len(d)."""
    rng = np.random.default_rng(seed)
    n = len(d)
    values, counts = np.unique(d, return_counts=True)
    if len(values) * resamples <= BOOTSTRAP_ELEMENTS:
        draws = rng.multinomial(n, counts / n, size=resamples)
        return draws @ values / n
    means = np.empty(resamples)
    chunk = max(1, BOOTSTRAP_ELEMENTS // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def compare_paired(
    baseline: Mapping[Hashable, float],
    candidate: Mapping[Hashable, float],
    *,
    max_drop: float = 0.0,
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """Compare `candidate` with `baseline` (sample id -> score in [0, 1]): is the candidate
    worse by more than `max_drop`, significantly at `alpha`?"""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha {alpha} is not in (0, 1)")
    if not 0.0 <= max_drop < 1.0:
        raise ValueError(f"maxDrop {max_drop} is not in [0, 1)")
    if resamples < 1000:
        raise ValueError("at least 1,000 bootstrap resamples are needed for a 95% interval")
    base, cand = _checked(baseline, "baseline"), _checked(candidate, "candidate")
    shared = sorted(set(base) & set(cand), key=repr)
    only_base, only_cand = len(base) - len(shared), len(cand) - len(shared)
    if not shared:
        return PairedComparison(
            "none", 0, only_base, only_cand, None, None, None, None, None, None, None, False
        )
    b = np.array([base[key] for key in shared])
    c = np.array([cand[key] for key in shared])
    d = c - b
    n = len(d)
    binary = _binary(b) and _binary(c)
    test: Literal["mcnemar-exact", "t-test", "none"]
    if binary:
        worse, better = int(np.sum((b == 1.0) & (c == 0.0))), int(np.sum((b == 0.0) & (c == 1.0)))
        discordant: tuple[int, int] | None = (worse, better)
        p_value = mcnemar_margin_p(worse, better, n, max_drop)
        test = "mcnemar-exact"
    else:
        discordant = None
        p_value = mean_margin_p(d, max_drop)
        test = "t-test"
    low, high = np.percentile(bootstrap_means(d, resamples, seed), [2.5, 97.5])
    sd = float(np.std(d, ddof=1)) if n > 1 else 0.0
    if binary:
        # With no discordant pair the observed sd is 0; a single one is the least any run of
        # this size could show, and what its power is bounded by.
        sd = max(sd, math.sqrt(1.0 / n))
    z = stats.norm.ppf(1.0 - alpha) + stats.norm.ppf(POWER)
    mde = float(max_drop + z * sd / math.sqrt(n)) if n > 1 else None
    difference = float(d.mean())
    return PairedComparison(
        test=test,
        pairs=n,
        only_in_baseline=only_base,
        only_in_candidate=only_cand,
        baseline_mean=float(b.mean()),
        candidate_mean=float(c.mean()),
        difference=difference,
        ci95=(float(low), float(high)),
        p_value=p_value,
        discordant=discordant,
        min_detectable_effect=mde,
        regressed=p_value is not None and -difference > max_drop and p_value < alpha,
    )
