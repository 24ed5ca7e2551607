"""The empirical-Bernstein sequence of the suite's regression gate (eval_api.sequential) against
confseq (tests/parity/confseq.json, `make reference-cs`), and its incomplete gamma function
against scipy's on inputs chosen to break it."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from scipy.special import gammainc

from eval_api.sequential import (
    bernstein_sequence,
    gamma_exponential_bound,
    log_gamma_p,
    variance_increment,
)

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "parity" / "confseq.json").read_text())


def test_the_boundaries_are_confseqs_to_1e_9() -> None:
    """Within 1e-9, or for the largest boundaries (v = 25,000: a boundary near 600) within
    confseq's own precision: its bisection stops at a relative 2^-39 and its mixture loses a few
    more digits there; both roots checked against mpmath at 50 digits put confseq's 1.3e-9 and
    ours 5.4e-12 from the exact one."""
    assert len(GOLDEN["bernstein"]) >= 150
    for case in GOLDEN["bernstein"]:
        ours = gamma_exponential_bound(
            case["v"], case["alpha"], case["v_opt"], case["c"], case["alpha_opt"]
        )
        assert ours == pytest.approx(case["bound"], abs=1e-9, rel=3e-12), case


def test_the_lower_bounds_of_paired_streams_are_confseqs_to_1e_9() -> None:
    """confseq's conjmix_empbern_lower_cs(alpha) is the lower side of a two-sided sequence at
    alpha: its boundary is at alpha / 2 (Howard et al.'s Theorem 4), which bernstein_sequence
    takes per side."""
    assert len(GOLDEN["streams"]) == 4
    for stream in GOLDEN["streams"]:
        side = stream["alpha"] / 2
        n, total, variance = 0, 0.0, 0.0
        for value, expected in zip(stream["values"], stream["lower"], strict=True):
            variance += variance_increment(n, total, value)
            n, total = n + 1, total + value
            lower, _ = bernstein_sequence(n, total, variance, side, stream["v_opt"])
            assert lower == pytest.approx(expected, abs=1e-9), (n, stream["alpha"])


def test_the_upper_bound_is_the_lower_bound_of_the_mirrored_values() -> None:
    rng = random.Random(5)
    values = [rng.choice([0.0, 0.5, 0.5, 0.5, 1.0]) for _ in range(200)]
    n = total = variance = 0
    mirrored_total = mirrored_variance = 0.0
    for value in values:
        variance += variance_increment(n, total, value)
        mirrored_variance += variance_increment(n, mirrored_total, 1 - value)
        n, total, mirrored_total = n + 1, total + value, mirrored_total + 1 - value
        _, upper = bernstein_sequence(n, total, variance, 0.05, 10)
        lower, _ = bernstein_sequence(n, mirrored_total, mirrored_variance, 0.05, 10)
        assert mirrored_variance == pytest.approx(variance)
        assert upper == pytest.approx(1 - lower, abs=1e-12)


def test_no_variance_still_has_a_bound_and_no_values_decide_nothing() -> None:
    # confseq cannot bound v = 0 (its search starts at v); the mixture itself can.
    assert 0 < gamma_exponential_bound(0.0, 0.05, 10) < gamma_exponential_bound(1e-6, 0.05, 10)
    assert bernstein_sequence(0, 0.0, 0.0, 0.05, 10) == (0.0, 1.0)
    lower, upper = bernstein_sequence(200, 100.0, 0.0, 0.05, 10)
    assert 0.45 < lower < 0.5 < upper < 0.55


@pytest.mark.parametrize(
    ("a", "x"),
    [
        (1e-8, 1e-8), (1e-3, 50.0), (0.5, 1e-12), (0.5, 0.5), (1.0, 700.0), (2.5, 3.4999),
        (3.0, 4.0), (3.0, 4.0000001), (14.999, 15.0), (15.0, 15.0), (15.0, 16.0), (40.0, 1.0),
        (100.0, 100.0), (100.0, 160.0), (1e4, 1e4 - 300), (1e4, 1e4 + 1), (25_000.0, 25_000.0),
        (25_000.0, 25_900.0), (1e6, 1e6), (1e6, 1e6 + 2000), (1e7, 1e7 + 1),
    ],
)  # fmt: skip
def test_the_incomplete_gamma_is_scipys(a: float, x: float) -> None:
    expected = gammainc(a, x)
    assert log_gamma_p(a, x) == pytest.approx(math.log(expected), abs=1e-12, rel=1e-12)


def test_the_incomplete_gamma_is_scipys_on_random_inputs() -> None:
    rng = random.Random(11)
    for _ in range(3000):
        a = 10 ** rng.uniform(-4, 6)
        x = a * 10 ** rng.uniform(-0.5, 0.5) if rng.random() < 0.7 else 10 ** rng.uniform(-4, 6)
        expected = gammainc(a, x)
        if expected < 1e-280:  # below what a double's logarithm is compared at
            continue
        assert log_gamma_p(a, x) == pytest.approx(math.log(expected), abs=1e-11, rel=1e-10), (a, x)


def test_the_incomplete_gamma_refuses_a_shape_of_zero() -> None:
    with pytest.raises(ValueError, match="a > 0"):
        log_gamma_p(0.0, 1.0)
    assert log_gamma_p(2.0, 0.0) == -math.inf
