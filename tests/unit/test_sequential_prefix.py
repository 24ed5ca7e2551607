"""What the confidence sequence counts in a shard (execution.earlyStop): the finished prefix of
the shard's asking order, never samples in the order they happened to finish."""

from __future__ import annotations

from eval_api.shard import ScoreSums, ShardSummary
from eval_runner.dataset import Sample
from eval_runner.pipeline import _Sequential


def samples(groups: list[str] | None = None, count: int = 6) -> list[Sample]:
    return [
        Sample(id=10 + i, input="", target="", record={}, group=groups[i] if groups else None)
        for i in range(count)
    ]


def test_a_sample_counts_once_every_one_asked_before_it_has_finished() -> None:
    summary = ShardSummary(scores={"acc": ScoreSums()})
    order = samples()
    sequential = _Sequential(summary, order, grouped=False)
    # Fast answers (here the right ones) finish first: none counts until the first is in.
    sequential.finished(order[1], {"acc": 1.0})
    sequential.finished(order[2], {"acc": 1.0})
    assert (summary.scores["acc"].seq_n, summary.scores["acc"].seq_sum) == (0, 0.0)
    sequential.finished(order[0], {"acc": 0.0})
    assert (summary.scores["acc"].seq_n, summary.scores["acc"].seq_sum) == (3, 2.0)
    # An errored sample lets the prefix through, with no score.
    sequential.finished(order[4], {"acc": 1.0})
    sequential.finished(order[3], None)
    assert (summary.scores["acc"].seq_n, summary.scores["acc"].seq_sum) == (4, 3.0)


def test_a_group_counts_whole_once_its_last_sample_is_in_the_prefix() -> None:
    summary = ShardSummary(scores={"acc": ScoreSums()})
    order = samples(["a", "a", "b", "b", "b", "c"])
    sequential = _Sequential(summary, order, grouped=True)
    sequential.finished(order[0], {"acc": 1.0})
    assert summary.scores["acc"].seq_groups == 0
    sequential.finished(order[2], {"acc": 0.0})  # b's first, before a is whole
    sequential.finished(order[1], {"acc": 1.0})
    sums = summary.scores["acc"]
    assert (sums.seq_groups, sums.seq_n, sums.seq_sum) == (1, 2, 2.0)
    sequential.finished(order[3], {"acc": 1.0})
    sequential.finished(order[5], {"acc": 1.0})
    assert sums.seq_groups == 1  # b is not whole yet
    sequential.finished(order[4], None)  # b's last errored: b joins with its two scores
    assert (sums.seq_groups, sums.seq_n, sums.seq_sum) == (3, 5, 4.0)


def test_the_sums_add_up_over_shards() -> None:
    one, two = ScoreSums(), ScoreSums()
    one.add_sequential(3, 2.0, 1)
    two.add_sequential(2, 1.0, 1)
    merged = one.merged(two)
    assert (merged.seq_n, merged.seq_sum, merged.seq_groups) == (5, 3.0, 2)
    assert ScoreSums().merged(ScoreSums()).seq_n is None  # none without earlyStop


def test_precision_decides_on_the_first_result_at_the_whole_confidence() -> None:
    from eval_api.earlystop import evaluate
    from eval_api.sequential import confidence_sequence
    from eval_api.v1alpha1.execution import EarlyStopSpec

    sums = ScoreSums()
    for i in range(400):
        sums.add(1.0 if i % 10 else 0.0)
    precision = EarlyStopSpec.model_validate({"when": "Precision", "ciWidth": "0.2"})
    verdict = EarlyStopSpec.model_validate({"when": "Verdict"})
    thresholds = ["acc >= 0.5", "acc <= 0.99"]
    both = confidence_sequence(sums.sum, sums.n, 0.05, 40)
    shared = confidence_sequence(sums.sum, sums.n, 0.025, 40)
    assert evaluate(precision, thresholds, {"acc": sums}, 400).intervals["acc"] == both
    assert evaluate(verdict, thresholds, {"acc": sums}, 400).intervals["acc"] == shared
