"""The paired comparison behind regression gates, checked against independent computations: the
one-sided exact McNemar p-value from binomial coefficients, Tango's score test with the null's
maximum likelihood found by scipy, scipy's one-sided paired t-test, the bootstrap interval's
coverage of the true difference, and its memory at 100,000 pairs."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, stats

from eval_runner.compare import compare_paired

ROOT = Path(__file__).resolve().parents[2]


def mcnemar_exact(worse: int, better: int) -> float:
    """One-sided exact McNemar (is the candidate worse?): the binomial upper tail at 1/2."""
    n = worse + better
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(worse, n + 1)) / 2**n


def test_mcnemar_is_the_one_sided_exact_binomial_computation() -> None:
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


def restricted_mle_p_better(worse: int, better: int, n: int, margin: float) -> float:
    """P(better) maximising the multinomial likelihood with P(worse) = P(better) + margin,
    found numerically by scipy (Tango's closed form is what the module uses)."""

    def minus_log_likelihood(x: float) -> float:
        rest = 1.0 - 2.0 * x - margin
        return -(
            worse * math.log(x + margin)
            + better * math.log(x)
            + (n - worse - better) * math.log(rest)
        )

    found = optimize.minimize_scalar(
        minus_log_likelihood,
        bounds=(1e-12, (1.0 - margin) / 2 - 1e-12),
        method="bounded",
        options={"xatol": 1e-12},
    )
    return float(found.x)


def test_with_a_margin_0_1_scores_take_tangos_score_test() -> None:
    rng = random.Random(4)
    for _ in range(30):
        n = rng.randint(100, 600)
        worse, better = rng.randint(1, n // 4), rng.randint(1, n // 8)
        margin = rng.choice((0.01, 0.02, 0.05))
        base = {i: 1.0 if i < worse else 0.0 for i in range(n)}
        cand = {i: 1.0 if worse <= i < worse + better else 0.0 for i in range(n)}
        result = compare_paired(base, cand, max_drop=margin, resamples=1000)
        x = restricted_mle_p_better(worse, better, n, margin)
        z = (worse - better - n * margin) / math.sqrt(n * (2 * x + margin * (1 - margin)))
        score = float(stats.norm.sf(z))
        exact = float(stats.binomtest(worse, worse + better, alternative="greater").pvalue)
        assert result.p_value == pytest.approx(max(score, exact), rel=1e-5, abs=1e-12)
        # Worse by more than the margin: never more significant than "worse at all".
        assert result.p_value >= compare_paired(base, cand, resamples=1000).p_value
    # At the margin's boundary the score test holds its level (simulated, 2,000 suites).
    n, alpha, rejected = 400, 0.05, 0
    sim = np.random.default_rng(5)
    for _ in range(2000):
        outcome = sim.choice(3, size=n, p=[0.12, 0.07, 0.81])  # P(worse) - P(better) = 0.05
        base = {i: float(o != 1) for i, o in enumerate(outcome)}
        cand = {i: float(o == 1) if o != 2 else 1.0 for i, o in enumerate(outcome)}
        rejected += compare_paired(base, cand, max_drop=0.05, alpha=alpha, resamples=1000).regressed
    assert rejected / 2000 < alpha + 0.015


def test_other_scores_take_the_one_sided_paired_t_test_of_the_mean() -> None:
    rng = np.random.default_rng(2)
    for trial in range(20):
        n = int(rng.integers(10, 500))
        base = rng.random(n)
        cand = np.clip(base + rng.normal(-0.03, 0.2, n), 0, 1)
        margin = (0.0, 0.01, 0.05)[trial % 3]
        result = compare_paired(
            dict(enumerate(base)), dict(enumerate(cand)), max_drop=margin, resamples=1000
        )
        expected = stats.ttest_1samp(cand - base, -margin, alternative="less").pvalue
        assert result.test == "t-test"
        assert result.p_value == pytest.approx(expected, rel=1e-9)
        assert result.regressed == (expected < 0.05 and (cand - base).mean() < -margin)


def test_a_drop_of_the_mean_not_a_shift_of_the_median_is_what_regresses() -> None:
    # 92 pairs a little better, 8 much worse: most pairs moved up (a signed-rank test called it
    # significant at p = 2e-11), the mean moved down by 0.022 and its interval holds 0.
    base = {i: 0.5 for i in range(100)}
    cand = {i: 0.52 if i < 92 else 0.0 for i in range(100)}
    result = compare_paired(base, cand)
    assert result.difference == pytest.approx(-0.0216)
    low, high = result.ci95
    assert low < 0 < high
    differences = np.array([cand[i] - base[i] for i in range(100)])
    expected = stats.ttest_1samp(differences, 0.0, alternative="less").pvalue
    assert result.p_value == pytest.approx(expected) and result.p_value > 0.05
    assert not result.regressed


def test_the_test_is_one_sided() -> None:
    base = {i: 1.0 if i < 20 else 0.0 for i in range(200)}
    better = {i: 1.0 if i < 60 else 0.0 for i in range(200)}  # 40 pairs fixed, none broken
    result = compare_paired(base, better, resamples=1000)
    assert result.p_value == 1.0 and not result.regressed
    rng = np.random.default_rng(6)
    for _ in range(200):
        n = int(rng.integers(5, 80))
        b, c = rng.random(n), rng.random(n)
        if rng.random() < 0.5:
            b, c = np.round(b), np.round(c)
        found = compare_paired(dict(enumerate(b)), dict(enumerate(c)), alpha=0.4, resamples=1000)
        # Significant only in the direction of the mean: p < 1/2 only when the mean dropped.
        if found.p_value is not None and found.p_value < 0.4:
            assert found.difference < 0


def test_only_matched_samples_are_compared_and_the_rest_counted() -> None:
    base = {f"s{i}": 1.0 for i in range(10)}
    cand = {f"s{i}": 1.0 for i in range(5, 20)}
    result = compare_paired(base, cand, resamples=1000)
    assert (result.pairs, result.only_in_baseline, result.only_in_candidate) == (5, 5, 10)
    assert result.difference == 0.0 and result.p_value == 1.0
    nothing = compare_paired({"a": 1.0}, {"b": 0.0})
    assert nothing.test == "none" and nothing.pairs == 0 and nothing.p_value is None
    assert not nothing.regressed


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
    big = compare_paired(base, big_drop, max_drop=0.05, resamples=2000)
    small = compare_paired(base, small_drop, max_drop=0.05, resamples=2000)
    assert big.regressed
    assert compare_paired(base, small_drop, resamples=2000).p_value < 0.05
    assert not small.regressed
    # A large drop on a handful of samples cannot be told from noise.
    tiny = compare_paired(
        {i: 1.0 for i in range(4)}, {0: 0.0, 1: 0.0, 2: 1.0, 3: 1.0}, max_drop=0.1
    )
    assert tiny.difference == -0.5 and tiny.p_value >= 0.25 and not tiny.regressed
    # Better is never a regression.
    assert not compare_paired(big_drop, base, resamples=2000).regressed


def test_the_minimum_detectable_effect_shrinks_with_more_samples() -> None:
    def mde(n: int) -> float:
        base = {i: float(i % 2) for i in range(n)}
        cand = {i: float((i % 2) if i % 10 else 1 - i % 2) for i in range(n)}
        return compare_paired(base, cand, resamples=1000).min_detectable_effect

    assert mde(40) > mde(400) > mde(4000)
    # No discordant pair at all: bounded by what one would show, never 0.
    # One-sided, as the test is; with a margin, the drop detectable is beyond it.
    same = {i: 1.0 for i in range(50)}
    assert compare_paired(same, same, resamples=1000).min_detectable_effect == pytest.approx(
        (stats.norm.ppf(0.95) + stats.norm.ppf(0.8)) / 50
    )
    assert compare_paired(same, same, max_drop=0.02).min_detectable_effect == pytest.approx(
        0.02 + (stats.norm.ppf(0.95) + stats.norm.ppf(0.8)) / 50
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1, 1.5, "x"])
def test_scores_outside_zero_one_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        compare_paired({0: 1.0, 1: bad}, {0: 1.0, 1: 0.0})  # type: ignore[dict-item]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        compare_paired({0: 1.0}, {0: 1.0}, alpha=1.5)
    with pytest.raises(ValueError, match="maxDrop"):
        compare_paired({0: 1.0}, {0: 1.0}, max_drop=-0.1)
    with pytest.raises(ValueError, match="resamples"):
        compare_paired({0: 1.0}, {0: 1.0}, resamples=10)


MEMORY_OF_A_COMPARISON = """
import resource, sys
# A regression fails here with MemoryError instead of taking the machine's memory.
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
import numpy as np
from eval_runner.compare import compare_paired
n = 100_000
rng = np.random.default_rng(7)
base, cand = rng.random(n), rng.random(n)
if sys.argv[1] == "binary":
    base, cand = np.round(base), np.round(cand)
result = compare_paired(dict(enumerate(base.tolist())), dict(enumerate(cand.tolist())))
assert result.pairs == n and result.ci95[0] < result.difference < result.ci95[1]
# VmHWM, this process image's own peak: ru_maxrss would carry the peak of the parent that
# forked it (the test runner's) across exec.
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))  # KiB
"""


@pytest.mark.parametrize("scores", ["binary", "continuous"])
def test_a_comparison_of_100000_pairs_stays_under_256_mib(scores: str) -> None:
    # A child process, so that its peak RSS is the comparison's alone (the interpreter, numpy,
    # scipy and the two score dicts included).
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        str(ROOT / part) for part in ("runner", "api")
    )}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_OF_A_COMPARISON, scores],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    peak_mib = int(done.stdout.split()[-1]) / 1024
    assert peak_mib < 256, f"peak RSS {peak_mib:.0f} MiB"
