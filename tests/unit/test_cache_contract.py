"""The cache's contract as the suite shows it: every cell says how many of its answers came from
the response cache, and a comparison whose answers are the baseline's own, from the cache, says
so instead of "no regression"."""

from __future__ import annotations

from typing import Any

from eval_api.cellreport import CACHED_ANSWERS, COMPARED, comparison_columns
from eval_api.v1alpha1 import EvaluationSpec
from eval_operator import matrix
from eval_runner.cellreport import with_cached_answers
from tests.unit.test_matrix import Matrix, compared, grid, schema_errors


def rows(answers: list[str], *, hits: int = 0) -> list[dict[str, Any]]:
    """Scored rows of a run: the first `hits` answers came from the cache."""
    return [
        {
            "sample_id": i,
            "input_hash": f"record-{i}",
            "scores": '{"exact_match": 1.0}',
            "response": answer,
            "cache_hit": i < hits,
        }
        for i, answer in enumerate(answers)
    ]


ANSWERS = [str(3 * i) for i in range(10)]


def test_a_comparison_of_the_baselines_own_cached_answers_says_so() -> None:
    base = rows(ANSWERS)
    reused = with_cached_answers(compared(False), base, rows(ANSWERS, hits=10))
    assert (reused.reason, reused.cached_answers, reused.paired_samples) == (CACHED_ANSWERS, 10, 10)
    assert reused.message.startswith(
        "10 of the 10 paired answers of this run came from the response cache and are "
        "baseline run nightly-m0-t0-abcdef's own"
    )
    assert comparison_columns(reused)[2] == CACHED_ANSWERS  # not "no"
    # A few hits (a retried shard's), or fresh answers that happen to be the same: compared.
    few = with_cached_answers(compared(False), base, rows(ANSWERS, hits=4))
    assert (few.reason, few.cached_answers, few.message) == (COMPARED, 4, "")
    fresh = with_cached_answers(compared(False), base, rows(ANSWERS))
    assert (fresh.reason, fresh.cached_answers) == (COMPARED, 0)
    # Cached, but not the baseline's answers (the model changed between the runs).
    changed = with_cached_answers(compared(False), base, rows(["x"] * 10, hits=10))
    assert (changed.reason, changed.cached_answers) == (COMPARED, 0)
    # A real regression among the fresh answers is still one.
    regressed = with_cached_answers(compared(True), base, rows(ANSWERS, hits=10))
    assert comparison_columns(regressed)[2] == "yes"


def test_each_cell_shows_its_cache_hits_and_cached_answers_give_no_verdict() -> None:
    assert (
        matrix.cell_view(
            {"metadata": {"name": "c"}, "status": {"usage": {"cacheHits": 7, "costUSD": "0"}}}
        )["cacheHits"]
        == 7
    )
    m = Matrix(grid(models=1, tasks=1, baseline="previous", regression={"maxDrop": "0.05"}))
    m.step()
    m.react("Succeeded")
    for cell in m.cells.values():
        cell["cacheHits"] = 100
    comparison = with_cached_answers(compared(False), rows(ANSWERS), rows(ANSWERS, hits=10))
    planned = m.report_all(comparison)
    entry = m.status["leaderboard"][0]["entries"][0]
    assert entry["cacheHits"] == 100
    assert entry["comparison"]["reason"] == CACHED_ANSWERS
    assert entry["comparison"]["cachedAnswers"] == entry["comparison"]["pairedSamples"] == 10
    conditions = {c[0]: c for c in planned.conditions}
    assert conditions["Regressed"][1:3] == ("Unknown", CACHED_ANSWERS)
    assert conditions["Regressed"][3].startswith(
        "not measured: most answers of m0/t0 came from the response cache"
    )
    # The apiserver keeps every field of it (the status schema knows them).
    assert schema_errors({**m.body, "status": m.status}) == []


def test_answers_are_reused_within_a_run_unless_the_spec_asks_for_more() -> None:
    spec = {
        "model": {"name": "m", "baseURL": "http://m/v1"},
        "dataset": {"builtin": "arithmetic"},
        "task": {"scorers": [{"type": "exact_match"}]},
    }
    assert EvaluationSpec.model_validate(spec).execution.cache.reuse == "WithinRun"
    spec["execution"] = {"cache": {"reuse": "AcrossRuns"}}
    assert EvaluationSpec.model_validate(spec).execution.cache.reuse == "AcrossRuns"
