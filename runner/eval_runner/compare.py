"""Paired comparison of two runs' per-sample scores: the regression gate's statistics.

Two runs of the same task score the same samples, so they are compared pair by pair (matched by
sample id), not by their separate confidence intervals: pairing removes the samples' own
difficulty from the noise, which is what makes a small drop detectable at all. A sample scored
in only one run is left out and counted.

- 0/1 scores: McNemar's exact test, the two-sided binomial test on the discordant pairs
  (baseline right and candidate wrong, or the reverse), as scipy.stats.binomtest computes it.
- Other scores: the Wilcoxon signed-rank test of the paired differences (scipy.stats.wilcoxon).
- Either way, the 95% interval of the mean difference is a paired bootstrap percentile interval
  (10,000 resamples by default, seeded: the same rows always give the same interval).
- The minimum detectable effect says how large a drop this many pairs could detect at alpha
  with 80% power (normal approximation: (z(1-alpha/2) + z(0.8)) * sd(d) / sqrt(n)), so that a
  "no regression" verdict from a handful of samples is not read as more than it is.

A cell regresses when its candidate is worse by more than maxDrop AND the drop is significant at
alpha: a significant drop of 0.1 points is not a regression, nor is a large drop that a
sample this small cannot tell from noise.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import numpy as np
from scipy import stats

DEFAULT_RESAMPLES = 10_000
POWER = 0.8


@dataclass(frozen=True)
class PairedComparison:
    """Candidate minus baseline, over the samples both runs scored."""

    test: Literal["mcnemar-exact", "wilcoxon", "none"]
    pairs: int
    only_in_baseline: int
    only_in_candidate: int
    baseline_mean: float | None
    candidate_mean: float | None
    difference: float | None  # mean of candidate - baseline (negative: worse)
    ci95: tuple[float, float] | None
    p_value: float | None
    # 0/1 scores: (baseline right and candidate wrong, baseline wrong and candidate right).
    discordant: tuple[int, int] | None
    min_detectable_effect: float | None

    def regressed(self, max_drop: Decimal | str, alpha: Decimal | str) -> bool:
        """Worse by more than max_drop, and significantly so at alpha."""
        if self.difference is None or self.p_value is None:
            return False
        return -self.difference > float(max_drop) and self.p_value < float(alpha)


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


def compare_paired(
    baseline: Mapping[Hashable, float],
    candidate: Mapping[Hashable, float],
    *,
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """Compare `candidate` with `baseline` (sample id -> score in [0, 1])."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha {alpha} is not in (0, 1)")
    if resamples < 1000:
        raise ValueError("at least 1,000 bootstrap resamples are needed for a 95% interval")
    base, cand = _checked(baseline, "baseline"), _checked(candidate, "candidate")
    shared = sorted(set(base) & set(cand), key=repr)
    only_base, only_cand = len(base) - len(shared), len(cand) - len(shared)
    if not shared:
        return PairedComparison(
            "none", 0, only_base, only_cand, None, None, None, None, None, None, None
        )
    b = np.array([base[key] for key in shared])
    c = np.array([cand[key] for key in shared])
    d = c - b
    n = len(d)
    binary = _binary(b) and _binary(c)
    if binary:
        worse, better = int(np.sum((b == 1.0) & (c == 0.0))), int(np.sum((b == 0.0) & (c == 1.0)))
        discordant = (worse, better)
        p_value = (
            1.0 if worse + better == 0 else float(stats.binomtest(better, worse + better).pvalue)
        )
        test: Literal["mcnemar-exact", "wilcoxon", "none"] = "mcnemar-exact"
    else:
        discordant = None
        test = "wilcoxon"
        p_value = 1.0 if not np.any(d) else float(stats.wilcoxon(c, b).pvalue)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    sd = float(np.std(d, ddof=1)) if n > 1 else 0.0
    if binary:
        # With no discordant pair the observed sd is 0; a single one is the least any run of
        # this size could show, and what its power is bounded by.
        sd = max(sd, math.sqrt(1.0 / n))
    z = stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(POWER)
    mde = float(z * sd / math.sqrt(n)) if n > 1 else None
    return PairedComparison(
        test=test,
        pairs=n,
        only_in_baseline=only_base,
        only_in_candidate=only_cand,
        baseline_mean=float(b.mean()),
        candidate_mean=float(c.mean()),
        difference=float(d.mean()),
        ci95=(float(low), float(high)),
        p_value=p_value,
        discordant=discordant,
        min_detectable_effect=mde,
    )
