"""eval_api.sequential against confseq, the paper's own implementation (tests/parity/confseq.json,
`make reference-cs`), and its one-evaluation threshold test against its interval."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from eval_api.sequential import confidence_sequence, excludes, side_of

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "parity" / "confseq.json").read_text())


def test_the_golden_file_is_confseqs() -> None:
    assert GOLDEN["confseq"] == "0.0.11"
    assert len(GOLDEN["cases"]) > 500


@pytest.mark.parametrize("trials", sorted({c["trials"] for c in GOLDEN["cases"]}))
def test_the_intervals_are_confseqs_to_1e_9(trials: int) -> None:
    cases = [c for c in GOLDEN["cases"] if c["trials"] == trials]
    for case in cases:
        lower, upper = confidence_sequence(
            case["successes"], trials, case["alpha"], case["t_opt"], case["alpha_opt"]
        )
        assert lower == pytest.approx(case["lower"], abs=1e-9), case
        assert upper == pytest.approx(case["upper"], abs=1e-9), case


def test_a_threshold_is_left_out_exactly_when_the_interval_leaves_it_out() -> None:
    rng = random.Random(3)
    for _ in range(400):
        trials = rng.choice([1, 3, 30, 200, 1000, 5000])
        successes = round(rng.random() * trials, rng.choice([0, 2]))
        value = rng.choice([0.0, 0.5, 0.8, 0.9, 1.0, rng.random()])
        lower, upper = confidence_sequence(successes, trials, 0.05, 500)
        # Away from the bounds themselves (the search's last digits).
        if min(abs(value - lower), abs(value - upper)) < 1e-9:
            continue
        outside = value < lower or value > upper
        assert excludes(successes, trials, value, 0.05, 500) == outside, (successes, trials)
        expected = "above" if value < lower else "below" if value > upper else "undecided"
        assert side_of(successes, trials, value, 0.05, 500) == expected


def test_no_scores_decide_nothing_and_one_wrong_answer_rules_out_perfection() -> None:
    assert confidence_sequence(0, 0, 0.05, 100) == (0.0, 1.0)
    assert side_of(0, 0, 0.8, 0.05, 100) == "undecided"
    assert side_of(9, 10, 1.0, 0.05, 100) == "below"
    assert side_of(10, 10, 1.0, 0.05, 100) == "undecided"
    assert side_of(1, 10, 0.0, 0.05, 100) == "above"
