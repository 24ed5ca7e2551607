"""The paired comparison behind regression gates, checked against independent computations: the
exact McNemar p-value from binomial coefficients, the exact signed-rank distribution by
enumerating every sign pattern, and the bootstrap interval's coverage of the true difference."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from scipy import stats

from eval_runner.compare import compare_paired


def mcnemar_exact(worse: int, better: int) -> float:
    """Two-sided exact McNemar: twice the smaller binomial tail at 1/2, at most 1."""
    n = worse + better
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(worse, better) + 1)) / 2**n
    return min(1.0, 2 * tail)


def signed_rank_exact(differences: list[float]) -> float:
    """Two-sided exact signed-rank p-value by enumerating every sign pattern (no ties, no 0)."""
    ranks = stats.rankdata([abs(x) for x in differences])
    observed = sum(r for r, x in zip(ranks, differences, strict=True) if x > 0)
    n = len(differences)
    mean = n * (n + 1) / 4
    extreme = 0
    for signs in itertools.product((0, 1), repeat=n):
        total = sum(r for r, s in zip(ranks, signs, strict=True) if s)
        if abs(total - mean) >= abs(observed - mean) - 1e-12:
            extreme += 1
    return extreme / 2**n


def test_mcnemar_matches_the_exact_binomial_computation() -> None:
    rng = random.Random(1)
    for _ in range(50):
        n = rng.randint(20, 300)
        base = {i: float(rng.random() < 0.7) for i in range(n)}
        cand = {i: float(rng.random() < 0.6) if rng.random() < 0.3 else base[i] for i in range(n)}
        result = compare_paired(base, cand, resamples=1000)
        worse = sum(1 for i in range(n) if base[i] == 1 and cand[i] == 0)
        better = sum(1 for i in range(n) if base[i] == 0 and cand[i] == 1)
        assert result.test == "mcnemar-exact"
        assert result.discordant == (worse, better)
        assert result.p_value == pytest.approx(mcnemar_exact(worse, better), abs=1e-9)
        assert result.difference == pytest.approx((better - worse) / n, abs=1e-12)


def test_wilcoxon_matches_the_exact_signed_rank_distribution() -> None:
    rng = random.Random(2)
    checked = 0
    for _ in range(10):
        n = 12
        base = {i: 0.3 + rng.random() * 0.3 for i in range(n)}
        # Distinct non-zero differences: the exact distribution applies.
        cand = {i: min(1.0, base[i] + (i + 1) * 0.013 * rng.choice((-1, 1, 1))) for i in range(n)}
        differences = [cand[i] - base[i] for i in range(n)]
        assume = len({abs(x) for x in differences}) == n and all(differences)
        if not assume:
            continue
        result = compare_paired(base, cand, resamples=1000)
        assert result.test == "wilcoxon"
        assert result.p_value == pytest.approx(signed_rank_exact(differences), abs=1e-9)
        checked += 1
    assert checked >= 5


def test_only_matched_samples_are_compared_and_the_rest_counted() -> None:
    base = {f"s{i}": 1.0 for i in range(10)}
    cand = {f"s{i}": 1.0 for i in range(5, 20)}
    result = compare_paired(base, cand, resamples=1000)
    assert (result.pairs, result.only_in_baseline, result.only_in_candidate) == (5, 5, 10)
    assert result.difference == 0.0 and result.p_value == 1.0
    nothing = compare_paired({"a": 1.0}, {"b": 0.0})
    assert nothing.test == "none" and nothing.pairs == 0 and nothing.p_value is None
    assert not nothing.regressed("0", "0.05")


def test_the_interval_is_seeded_and_covers_the_true_difference() -> None:
    rng = np.random.default_rng(3)
    covered = 0
    trials = 40
    for trial in range(trials):
        n = 400
        base = rng.random(n)
        cand = np.clip(base - 0.05 + rng.normal(0, 0.1, n), 0, 1)
        truth = float((cand - base).mean())  # the sample's own mean difference
        result = compare_paired(dict(enumerate(base)), dict(enumerate(cand)), seed=trial)
        again = compare_paired(dict(enumerate(base)), dict(enumerate(cand)), seed=trial)
        assert result.ci95 == again.ci95  # seeded: the same rows, the same interval
        low, high = result.ci95
        covered += low <= truth <= high
        assert low < result.difference < high
    assert covered == trials


def test_a_regression_is_a_drop_both_large_and_significant() -> None:
    n = 400
    base = {i: 1.0 for i in range(n)}
    big_drop = {i: (0.0 if i < 60 else 1.0) for i in range(n)}  # -0.15, 60 discordant
    small_drop = {i: (0.0 if i < 8 else 1.0) for i in range(n)}  # -0.02, significant
    big = compare_paired(base, big_drop, resamples=2000)
    small = compare_paired(base, small_drop, resamples=2000)
    assert big.regressed("0.05", "0.05")
    assert small.p_value < 0.05 and not small.regressed("0.05", "0.05")
    # A large drop on a handful of samples cannot be told from noise.
    tiny = compare_paired({i: 1.0 for i in range(4)}, {0: 0.0, 1: 0.0, 2: 1.0, 3: 1.0})
    assert tiny.difference == -0.5 and tiny.p_value == 0.5 and not tiny.regressed("0.1", "0.05")
    # Better is never a regression.
    assert not compare_paired(big_drop, base, resamples=2000).regressed("0", "0.05")


def test_the_minimum_detectable_effect_shrinks_with_more_samples() -> None:
    def mde(n: int) -> float:
        base = {i: float(i % 2) for i in range(n)}
        cand = {i: float((i % 2) if i % 10 else 1 - i % 2) for i in range(n)}
        return compare_paired(base, cand, resamples=1000).min_detectable_effect

    assert mde(40) > mde(400) > mde(4000)
    # No discordant pair at all: bounded by what one would show, never 0.
    same = compare_paired({i: 1.0 for i in range(50)}, {i: 1.0 for i in range(50)}, resamples=1000)
    assert same.min_detectable_effect == pytest.approx(
        (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / 50
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1, 1.5, "x"])
def test_scores_outside_zero_one_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        compare_paired({0: 1.0, 1: bad}, {0: 1.0, 1: 0.0})  # type: ignore[dict-item]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        compare_paired({0: 1.0}, {0: 1.0}, alpha=1.5)
    with pytest.raises(ValueError, match="resamples"):
        compare_paired({0: 1.0}, {0: 1.0}, resamples=10)
