"""Validity by simulation (issue 20): at the boundary — true accuracy exactly at the threshold —
a run watched after every sample and stopped the first time its verdict is known gives a wrong
verdict (any verdict: neither side is true) at most 1 - confidence of the time with the
confidence sequence, and far more often when it stops the first time the ordinary 95% Wilson
interval clears the threshold. Seeded; both rates are printed (pytest -s).

The 10,000 runs ask eval_api.sequential.side_of after every sample (one evaluation of the
mixture); the operator's eval_api.earlystop.evaluate (intervals by search) stops at the very
same sample, shown on streams of their own below."""

from __future__ import annotations

import random

from eval_api.earlystop import evaluate, tuned_for
from eval_api.sequential import grouped_excludes, grouped_sequence, side_of
from eval_api.shard import ScoreSums
from eval_api.stats import wilson
from eval_api.v1alpha1.execution import EarlyStopSpec

RUNS = 10_000
SAMPLES = 400
THRESHOLD = 0.8
SPEC = EarlyStopSpec.model_validate({"when": "Verdict"})  # confidence 0.95, minSamples 30
ALPHA = 0.05


def first_decision(stream: list[float]) -> int | None:
    """The sample count at which the sequence first decides the threshold, or None."""
    t_opt = tuned_for(SPEC, len(stream))
    total = 0.0
    for n, score in enumerate(stream, start=1):
        total += score
        if n >= SPEC.min_samples and side_of(total, n, THRESHOLD, ALPHA, t_opt) != "undecided":
            return n
    return None


def first_peek(stream: list[float]) -> int | None:
    """The sample count at which the 95% Wilson interval first clears the threshold."""
    total = 0.0
    for n, score in enumerate(stream, start=1):
        total += score
        if n >= SPEC.min_samples:
            lower, upper = wilson(total / n, n)
            if lower > THRESHOLD or upper < THRESHOLD:
                return n
    return None


def test_at_the_boundary_the_sequence_is_wrong_at_most_alpha_and_peeking_is_not() -> None:
    rng = random.Random(20)
    sequential_wrong = naive_wrong = 0
    for _ in range(RUNS):
        stream = [1.0 if rng.random() < THRESHOLD else 0.0 for _ in range(SAMPLES)]
        sequential_wrong += first_decision(stream) is not None
        naive_wrong += first_peek(stream) is not None
    sequential_rate, naive_rate = sequential_wrong / RUNS, naive_wrong / RUNS
    print(
        f"\nwrong verdicts at the boundary over {RUNS} runs of {SAMPLES}: confidence sequence "
        f"{sequential_rate:.4f}, peeking at the Wilson interval {naive_rate:.4f}"
    )
    assert sequential_wrong / RUNS <= ALPHA
    assert naive_wrong / RUNS > 3 * ALPHA


def test_the_operators_decision_stops_at_the_same_sample() -> None:
    rng = random.Random(7)
    decided = 0
    for p in (0.7, 0.75, 0.8, 0.85, 0.9, 0.95) * 4:
        stream = [1.0 if rng.random() < p else 0.0 for _ in range(SAMPLES)]
        sums, found = ScoreSums(), None
        for n, score in enumerate(stream, start=1):
            sums.add(score)
            state = evaluate(SPEC, [f"acc >= {THRESHOLD}"], {"acc": sums}, SAMPLES)
            if state.decision is not None:
                found = n
                assert state.passed == (sums.sum / n > THRESHOLD)
                break
        assert found == first_decision(stream), p
        decided += found is not None
    assert decided >= 8  # the far-from-threshold streams decide


GROUP_RUNS = 2000
GROUPS = 150


def test_with_groups_asked_whole_the_grouped_sequence_stays_valid() -> None:
    """task.groupField: groups of 1 to 5 samples whose accuracies differ a lot (each group's
    own, Beta-distributed around the threshold), asked whole in random order; the sequence
    counts finished groups (eval_api.sequential.grouped_excludes, checked after each one)."""
    rng = random.Random(21)
    max_group = 5
    t_opt = max(1.0, tuned_for(SPEC, GROUPS * 3) / max_group)
    wrong = 0
    for _ in range(GROUP_RUNS):
        closed_n, closed_sum = 0, 0.0
        for g in range(1, GROUPS + 1):
            size = rng.randint(1, max_group)
            accuracy = rng.betavariate(1.6, 0.4)  # mean 0.8, spread wide
            closed_sum += sum(rng.random() < accuracy for _ in range(size))
            closed_n += size
            if closed_n >= SPEC.min_samples and grouped_excludes(
                closed_sum, closed_n, g, max_group, THRESHOLD, ALPHA, t_opt
            ):
                wrong += 1
                break
    print(
        f"\nwrong verdicts at the boundary over {GROUP_RUNS} grouped runs: {wrong / GROUP_RUNS:.4f}"
    )
    assert wrong / GROUP_RUNS <= ALPHA


def test_a_grouped_threshold_is_left_out_exactly_when_its_interval_leaves_it_out() -> None:
    rng = random.Random(5)
    for _ in range(300):
        groups = rng.randint(1, 400)
        max_group = rng.randint(1, 6)
        closed_n = rng.randint(groups, groups * max_group)
        closed_sum = round(rng.random() * closed_n, 1)
        value = rng.choice([0.0, 0.5, 0.8, 1.0, rng.random()])
        lower, upper = grouped_sequence(closed_sum, closed_n, groups, max_group, 0.05, 30)
        if min(abs(value - lower), abs(value - upper)) < 1e-9:
            continue
        outside = value < lower or value > upper
        assert grouped_excludes(closed_sum, closed_n, groups, max_group, value, 0.05, 30) == (
            outside
        ), (closed_sum, closed_n, groups, max_group, value)


def test_asked_without_replacement_from_a_finite_dataset_it_stays_valid() -> None:
    """What a run does: a dataset of 400 samples of which exactly 320 are answered right (its
    mean is the threshold), asked in a random order without replacement. The sequence's proof
    is for draws whose conditional mean stays p; without replacement the remaining mean moves
    back toward p as samples are drawn (an early excess is made up later), and the rate here
    stays well under alpha."""
    rng = random.Random(22)
    dataset = [1.0] * 320 + [0.0] * 80
    wrong = 0
    for _ in range(RUNS // 2):
        stream = dataset[:]
        rng.shuffle(stream)
        wrong += first_decision(stream) is not None
    rate = wrong / (RUNS // 2)
    print(f"\nwrong verdicts without replacement, at the dataset's own mean: {rate:.4f}")
    assert rate <= ALPHA
