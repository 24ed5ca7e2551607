"""Thresholds: one verdict for the operator's Passed condition and for local runs."""

from __future__ import annotations

from eval_api.aggregate import aggregate
from eval_api.shard import ScoreSums, ShardSummary
from eval_api.verdict import judge_thresholds


def test_each_threshold_is_judged_and_a_scorer_without_samples_fails() -> None:
    summary = ShardSummary(scores={"exact_match": ScoreSums(n=4, sum=3, sumsq=3)})
    result = aggregate([summary], ["exact_match", "numeric"])
    verdict = judge_thresholds(
        ["exact_match >= 0.75", "exact_match > 0.75", "numeric >= 0"],
        {r.name: r.value for r in result.results},
    )
    assert [(c.text, c.holds) for c in verdict.checks] == [
        ("exact_match >= 0.75", True),
        ("exact_match > 0.75", False),
        ("numeric >= 0", False),
    ]
    assert (verdict.passed, verdict.reason) == (False, "ThresholdsNotMet")
    assert verdict.message == (
        "exact_match 0.75 >= 0.75: ok; exact_match 0.75 > 0.75: not met; numeric: no scored samples"
    )


def test_all_thresholds_met_and_no_thresholds() -> None:
    met = judge_thresholds(["exact_match >= 0.5"], {"exact_match": 0.5})
    assert (met.passed, met.reason, met.message) == (
        True,
        "ThresholdsMet",
        "exact_match 0.5 >= 0.5: ok",
    )
    none = judge_thresholds([], {"exact_match": 0.1})
    assert (none.passed, none.reason, none.message) == (True, "NoThresholds", "no thresholds set")
