"""Statistics of a scorer's results: Wilson intervals for 0/1 scores, t intervals for the rest,
cluster-robust standard errors with groups, and sums that add up over shards exactly."""

from __future__ import annotations

import math
import random
from statistics import mean, stdev

import pytest

from eval_api.shard import ScoreSums
from eval_api.stats import score_result, t_quantile_975, wilson

# scipy.stats.t.ppf(0.975, df) (scipy 1.17), the reference the pure-Python quantile must match.
T_975 = {
    1: 12.706204736174694,
    2: 4.302652729749462,
    3: 3.1824463052837078,
    4: 2.7764451051977934,
    5: 2.5705818356363146,
    7: 2.364624251592784,
    9: 2.262157162798205,
    10: 2.228138851986274,
    19: 2.0930240544083087,
    20: 2.085963447265864,
    29: 2.045229642132703,
    30: 2.0422724563012378,
    39: 2.022690920036761,
    60: 2.0002978220142604,
    100: 1.9839715185235518,
    120: 1.9799304050824402,
    1000: 1.9623390808264083,
    10000: 1.960201239890626,
    100000: 1.9599877075346095,
}


def sums(values: list[float], groups: list[str] | None = None) -> ScoreSums:
    result = ScoreSums()
    running: dict[str, list[float]] = {}
    for index, value in enumerate(values):
        group = None if groups is None else running.setdefault(groups[index], [0, 0.0])
        result.add(value, group)
    return result


@pytest.mark.parametrize(("df", "expected"), T_975.items())
def test_t_quantile_matches_scipy(df: int, expected: float) -> None:
    assert t_quantile_975(df) == pytest.approx(expected, rel=1e-9)


def test_40_of_40_is_not_certainty() -> None:
    result = score_result("exact_match", sums([1.0] * 40))
    assert result.value == 1.0 and result.stderr == 0.0
    assert result.ci95 == [0.912378, 1.0]  # Wilson; a normal interval gives [1, 1]


@pytest.mark.parametrize(("successes", "n"), [(0, 10), (1, 1), (17, 20), (3, 1000), (50, 100)])
def test_wilson_for_0_1_scores(successes: int, n: int) -> None:
    result = score_result("s", sums([1.0] * successes + [0.0] * (n - successes)))
    p, z = successes / n, 1.959963984540054
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert result.ci95 == [round(max(0, center - half), 6), round(min(1, center + half), 6)]
    assert result.n == n and result.value == round(p, 6)


def test_continuous_scores_take_a_t_interval() -> None:
    values = [0.2, 0.5, 0.9, 0.4, 0.65, 0.3]
    result = score_result("token_f1", sums(values))
    m, se = mean(values), stdev(values) / math.sqrt(len(values))
    half = T_975[5] * se
    assert result.stderr == round(se, 6)
    assert result.ci95 == [round(m - half, 6), round(m + half, 6)]


def test_too_few_samples_say_so() -> None:
    assert score_result("s", ScoreSums()).model_dump() == {
        "name": "s",
        "value": None,
        "stderr": None,
        "ci95": None,
        "n": 0,
    }
    one = score_result("s", sums([0.5]))  # continuous, one sample: no spread to speak of
    assert (one.value, one.stderr, one.ci95) == (0.5, None, [0.0, 1.0])
    assert score_result("s", sums([1.0])).ci95 == [round(wilson(1.0, 1)[0], 6), 1.0]


def clustered_stderr(values: list[float], groups: list[str]) -> float:
    """CR1, from the samples themselves."""
    n, m = len(values), mean(values)
    residuals: dict[str, float] = {}
    for value, group in zip(values, groups, strict=True):
        residuals[group] = residuals.get(group, 0.0) + value - m
    g = len(residuals)
    return math.sqrt(g / (g - 1) * sum(r * r for r in residuals.values())) / n


def test_clustered_standard_error_and_t_interval() -> None:
    rng = random.Random(4)
    groups = [f"passage-{i // 5}" for i in range(60)]  # 12 passages of 5 questions
    values = [round(rng.random(), 3) for _ in groups]
    result = score_result("token_f1", sums(values, groups))
    se = clustered_stderr(values, groups)
    assert result.stderr == round(se, 6)
    half = t_quantile_975(11) * se  # G - 1 degrees of freedom
    m = mean(values)
    assert result.ci95 == [round(max(0, m - half), 6), round(min(1, m + half), 6)]


def test_clustered_0_1_scores_widen_wilson_by_the_design_effect() -> None:
    # Questions on one passage succeed or fail together: 8 passages, 5 questions each.
    outcomes = [1, 1, 0, 1, 1, 1, 0, 1]
    values = [float(o) for o in outcomes for _ in range(5)]
    groups = [f"p{i}" for i in range(8) for _ in range(5)]
    clustered = score_result("exact_match", sums(values, groups))
    independent = score_result("exact_match", sums(values))
    assert clustered.value == independent.value == 0.75
    assert clustered.stderr == round(clustered_stderr(values, groups), 6)
    assert clustered.stderr > independent.stderr  # type: ignore[operator]
    assert clustered.ci95[0] < independent.ci95[0] and clustered.ci95[1] > independent.ci95[1]
    # Korn and Graubard: Wilson at n* = p(1-p)/se^2, scaled by (t_{n-1}/t_{G-1})^2.
    se = clustered_stderr(values, groups)
    effective = 0.75 * 0.25 / se**2 * (t_quantile_975(39) / t_quantile_975(7)) ** 2
    assert clustered.ci95 == [round(x, 6) for x in wilson(0.75, effective)]


def test_shards_holding_whole_groups_add_up_to_one_pod() -> None:
    rng = random.Random(9)
    groups = [f"g{rng.randrange(15)}" for _ in range(90)]
    values = [float(rng.random() < 0.7) for _ in groups]
    whole = sums(values, groups)
    # Two shards, each holding whole groups (as shard_samples deals them).
    first = [i for i, g in enumerate(groups) if int(g[1:]) % 2 == 0]
    second = [i for i, g in enumerate(groups) if int(g[1:]) % 2 == 1]
    parts = [sums([values[i] for i in part], [groups[i] for i in part]) for part in (first, second)]
    merged = parts[0].merged(parts[1])
    assert (merged.n, merged.groups, merged.group_nsq) == (whole.n, whole.groups, whole.group_nsq)
    assert merged.group_sumsq == pytest.approx(whole.group_sumsq)
    assert merged.group_cross == pytest.approx(whole.group_cross)
    assert score_result("s", merged) == score_result("s", whole)
