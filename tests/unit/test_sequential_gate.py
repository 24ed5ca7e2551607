"""Validity by simulation of the suite's regression gate (issue 20): at maxDrop — the candidate
exactly maxDrop worse than its baseline — a cell watched after every pair and stopped the first
time its gate is decided says Regressed (wrong: it is not worse by more than maxDrop) at most
alpha of the time with the empirical-Bernstein sequence, and far more often when it stops the
first time the ordinary one-sided test of the paired difference is significant. Seeded; both
rates are printed (pytest -s).

The 10,000 runs use eval_api.sequential.bernstein_side after every pair (one evaluation of the
mixture), skipped where a precomputed boundary already says undecided; the operator's
eval_api.earlystop.gate_state stops at the very same pair, shown on streams of their own below."""

from __future__ import annotations

import bisect
import math
import random
from statistics import NormalDist

from eval_api.earlystop import (
    NOT_REGRESSED,
    PAIRED_VARIANCE,
    REGRESSED,
    RegressionGate,
    evaluate,
    gate_state,
    tuned_for,
)
from eval_api.sequential import bernstein_side, gamma_exponential_bound
from eval_api.shard import BaselineSums, PairedSums, ScoreSums
from eval_api.v1alpha1.execution import EarlyStopSpec

RUNS = 10_000
PAIRS = 400
MAX_DROP = 0.02
ALPHA = 0.05
# At maxDrop: 6% of the pairs only the baseline got right, 4% only the candidate.
WORSE, BETTER = 0.06, 0.04
SPEC = EarlyStopSpec.model_validate({"when": "Verdict"})  # minSamples 30
T_OPT = tuned_for(SPEC, PAIRS)
V_OPT = T_OPT * PAIRED_VARIANCE
# (candidate - baseline + 1) / 2 below this is "worse by more than maxDrop"
BOUNDARY = (1 - MAX_DROP) / 2


def pairs(rng: random.Random, worse: float, better: float, count: int) -> list[tuple[int, int]]:
    """(candidate, baseline) 0/1 scores: `worse` of the pairs only the baseline got right,
    `better` only the candidate; the rest both (0.7) or neither."""
    found = []
    for _ in range(count):
        u = rng.random()
        both = 1 if rng.random() < 0.7 else 0
        found.append((0, 1) if u < worse else (1, 0) if u < worse + better else (both, both))
    return found


class Boundary:
    """u(V) on a grid: u is increasing in V, so u(grid below V) <= u(V) <= u(grid above V)
    settles most steps without evaluating the mixture."""

    def __init__(self, alpha: float, v_opt: float, top: float) -> None:
        self.grid = [0.0] + [1e-3 * 1.02**k for k in range(int(math.log(top / 1e-3, 1.02)) + 2)]
        self.u = [gamma_exponential_bound(v, alpha, v_opt) for v in self.grid]

    def shown_below(self, n: int, total: float, variance: float, value: float) -> bool:
        room = n * value - total
        if room <= 0:
            return False
        k = bisect.bisect_right(self.grid, variance)
        if room <= self.u[k - 1]:
            return False
        if k < len(self.grid) and room > self.u[k]:
            return True
        return bernstein_side(n, total, variance, value, ALPHA, V_OPT) == "below"


def first_regressed(stream: list[tuple[int, int]], boundary: Boundary) -> int | None:
    """The pair count at which the gate first says Regressed (one scorer: all of alpha)."""
    sums = PairedSums()
    for candidate, baseline in stream:
        sums.add(candidate, baseline)
        if sums.n >= SPEC.min_samples and boundary.shown_below(
            sums.n, sums.sum, sums.variance, BOUNDARY
        ):
            return sums.n
    return None


def first_significant(stream: list[tuple[int, int]]) -> int | None:
    """The pair count at which the one-sided z-test of 'the mean difference is at least
    -maxDrop' is first significant at alpha (the fixed-sample test, peeked at)."""
    z = NormalDist().inv_cdf(1 - ALPHA)
    total = squares = 0.0
    for n, (candidate, baseline) in enumerate(stream, start=1):
        difference = candidate - baseline
        total, squares = total + difference, squares + difference * difference
        if n >= SPEC.min_samples:
            mean = total / n
            sd = math.sqrt(max(squares / n - mean * mean, 0.0) * n / (n - 1))
            if sd > 0 and mean + z * sd / math.sqrt(n) < -MAX_DROP:
                return n
    return None


def test_at_max_drop_the_gate_is_wrong_at_most_alpha_and_peeking_is_not() -> None:
    rng = random.Random(23)
    boundary = Boundary(ALPHA, V_OPT, top=PAIRS / 4 + 1)
    sequential_wrong = naive_wrong = 0
    for _ in range(RUNS):
        stream = pairs(rng, WORSE, BETTER, PAIRS)
        sequential_wrong += first_regressed(stream, boundary) is not None
        naive_wrong += first_significant(stream) is not None
    sequential_rate, naive_rate = sequential_wrong / RUNS, naive_wrong / RUNS
    print(
        f"\nwrong Regressed at maxDrop {MAX_DROP} over {RUNS} runs of {PAIRS} pairs: sequential "
        f"{sequential_rate:.4f}, peeking at the paired z-test {naive_rate:.4f}"
    )
    assert sequential_rate <= ALPHA
    assert naive_rate > 3 * ALPHA


def test_a_clear_regression_is_decided_within_a_fraction_of_the_run() -> None:
    """What the variance-adaptive sequence buys: a candidate 10 points worse (15% of the pairs
    only the baseline got right, 5% only the candidate) is found Regressed in every run, in a
    small part of a 2,000-pair run."""
    rng = random.Random(24)
    size = 2000
    v_opt = tuned_for(SPEC, size) * PAIRED_VARIANCE
    stops = []
    for _ in range(200):
        sums = PairedSums()
        for candidate, baseline in pairs(rng, 0.15, 0.05, size):
            sums.add(candidate, baseline)
            if sums.n >= SPEC.min_samples and (
                bernstein_side(sums.n, sums.sum, sums.variance, BOUNDARY, ALPHA, v_opt) == "below"
            ):
                break
        assert sums.n < size
        stops.append(sums.n)
    median = sorted(stops)[len(stops) // 2]
    print(f"\na candidate 10 points worse: Regressed after a median of {median} of {size} pairs")
    assert median < size / 5


def gate_stop(stream: list[tuple[int, int]], max_drop: float, alpha: float) -> tuple[int, str]:
    """Where the operator's gate (eval_api.earlystop.gate_state, intervals by search) first
    decides on `stream`, and what."""
    gate = RegressionGate(max_drop, alpha)
    sums = BaselineSums(run="baseline-run")
    for candidate, baseline in stream:
        sums.paired.setdefault("acc", PairedSums()).add(candidate, baseline)
        state = gate_state(gate, sums, ["acc"], T_OPT, SPEC.min_samples)
        if state.decision is not None:
            return sums.paired["acc"].n, state.decision
    return len(stream), ""


def test_the_operators_gate_stops_at_the_same_pair() -> None:
    rng = random.Random(25)
    decided = 0
    for worse, better in ((0.2, 0.02), (0.02, 0.2), (0.06, 0.04), (0.12, 0.04), (0.0, 0.0)) * 3:
        stream = pairs(rng, worse, better, PAIRS)
        n, decision = gate_stop(stream, MAX_DROP, ALPHA)
        sums = PairedSums()
        expected_n, expected = len(stream), ""
        for candidate, baseline in stream:
            sums.add(candidate, baseline)
            side = bernstein_side(sums.n, sums.sum, sums.variance, BOUNDARY, ALPHA, V_OPT)
            if sums.n >= SPEC.min_samples and side != "undecided":
                expected_n, expected = sums.n, REGRESSED if side == "below" else NOT_REGRESSED
                break
        assert (n, decision) == (expected_n, expected), (worse, better)
        decided += decision != ""
    assert decided >= 9  # the clearly worse, clearly better and identical streams decide


def test_a_run_is_decided_only_once_its_gate_is() -> None:
    """VerdictKnown waits for the gate: thresholds decided early, the gate still open."""
    spec = EarlyStopSpec.model_validate({"when": "Verdict", "minSamples": 30})
    scores = ScoreSums(n=200, sum=196.0, sumsq=196.0, seq_n=200, seq_sum=196.0)
    gate = RegressionGate(0.02, 0.05)
    undecided = BaselineSums(run="r1", paired={"acc": PairedSums(n=200, sum=99.0, variance=2.0)})
    state = evaluate(spec, ["acc >= 0.8"], {"acc": scores}, 1000, gate=gate, baseline=undecided)
    assert all(side.holds for side in state.sides)
    assert state.decision is None and state.regression is not None
    assert state.regression.decision is None
    assert "regression: against baseline run r1" in state.message
    # Nothing heard from the shards about the baseline yet: not decided either.
    state = evaluate(spec, ["acc >= 0.8"], {"acc": scores}, 1000, gate=gate, baseline=None)
    assert state.decision is None and "waiting for the shards" in state.message
    # The cell has no baseline run yet: no gate, the thresholds decide.
    state = evaluate(
        spec, ["acc >= 0.8"], {"acc": scores}, 1000, gate=gate, baseline=BaselineSums()
    )
    assert state.decision == "VerdictKnown" and state.regression is None
    # Every pair identical: not worse by more than maxDrop, shown.
    same = BaselineSums(run="r1", paired={"acc": PairedSums(n=600, sum=300.0, variance=0.0)})
    state = evaluate(spec, ["acc >= 0.8"], {"acc": scores}, 1000, gate=gate, baseline=same)
    assert state.decision == "VerdictKnown"
    assert state.regression is not None and state.regression.decision == NOT_REGRESSED
    assert "not worse than baseline run r1 by more than maxDrop 0.02" in state.message
