"""A report Job's termination message (eval_api.cellreport.BatchReport, issue 17, 4.18): the
worst case of REPORT_BATCH_CELLS cells fits the 4096 bytes a termination message holds, and
what it carries of each cell is what the suite's status keeps."""

from __future__ import annotations

import json
from typing import Any

import pytest

from eval_api.cellreport import (
    BASELINE_NOT_FOUND,
    CACHED_ANSWERS,
    NO_BASELINE,
    REPORT_BATCH_CELLS,
    REPORT_ERROR_MESSAGE_LIMIT,
    BatchReport,
    CellReport,
)
from eval_api.matrix import regression_of
from eval_api.shard import TERMINATION_MESSAGE_LIMIT
from eval_api.v1alpha1 import CellComparison, EvalSuiteSpec, ScorerComparison
from eval_operator.matrix import _report_fields

# The longest text of any double (17 significant digits, a sign, a 3-digit exponent).
LONGEST_FLOAT = -1.2345678901234567e-300
BIG = 10**9 - 1  # a run of a billion samples


def worst_cell() -> CellReport:
    """Every name at its longest (a run or Job name: 63 characters; a scorer name: 63; a suite
    run id with a collision suffix), every number at its longest (any double; counts of a run
    of a billion samples), the longest reason and test, 16 scorers all regressed."""
    scorer = ScorerComparison(
        name="s" * 63,
        test="mcnemar-exact",  # the longest of eval_runner.compare's tests
        pairs=BIG,
        excluded=BIG,
        baseline_mean=LONGEST_FLOAT,
        candidate_mean=LONGEST_FLOAT,
        difference=LONGEST_FLOAT,
        ci95=[LONGEST_FLOAT, LONGEST_FLOAT],
        p_value=LONGEST_FLOAT,
        min_detectable_effect=LONGEST_FLOAT,
        regressed=True,
    )
    comparison = CellComparison(
        reason=BASELINE_NOT_FOUND,
        message="m" * 3000,
        baseline="20261201-010000-99",
        baseline_run="r" * 63,
        alpha="0.05",
        regressed=True,
        underpowered=False,
        cached_answers=BIG,
        paired_samples=BIG,
        scorers=[scorer.model_copy(update={"name": f"{k:02d}" + "s" * 61}) for k in range(16)],
    )
    return CellReport(
        state="done",
        latency_p50_ms=LONGEST_FLOAT,
        latency_p95_ms=LONGEST_FLOAT,
        comparison=comparison,
    )


def worst_error() -> CellReport:
    """A failed cell with a long message of characters JSON escapes (6 bytes each)."""
    return CellReport(state="error", reason="R" * 40, message='\u2603"\n' * 2000)


def test_the_worst_batch_fits_the_termination_message_and_one_more_cell_would_not() -> None:
    worst = max(
        (worst_cell(), worst_error()),
        key=lambda r: len(BatchReport.of([r]).to_message().encode()),
    )
    cells = BatchReport.of([worst] * REPORT_BATCH_CELLS).cells
    text = json.dumps({"cells": cells}, separators=(",", ":"))
    print(f"worst report of {REPORT_BATCH_CELLS} cells: {len(text.encode())} bytes")
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    more = json.dumps({"cells": cells + cells[:1]}, separators=(",", ":"))
    assert len(more.encode()) > TERMINATION_MESSAGE_LIMIT  # the batch is as large as fits
    # The message written is that whole text: no cell left out.
    assert BatchReport.of([worst] * REPORT_BATCH_CELLS).to_message() == text
    # Mixed with failed cells it fits too.
    mixed = BatchReport.of([worst_cell(), worst_error()] * (REPORT_BATCH_CELLS // 2))
    assert len(mixed.to_message().encode()) <= TERMINATION_MESSAGE_LIMIT
    # A batch failed as a whole, with a long message.
    failed = BatchReport.failed("StoreUnreachable", "x" * 100_000).to_message()
    assert len(failed.encode()) < 300


def test_a_failed_cells_message_is_cut_to_its_bound() -> None:
    (cell,) = BatchReport.of([worst_error()]).cells
    reason, message = cell["e"]
    assert len(json.dumps(message).encode()) <= REPORT_ERROR_MESSAGE_LIMIT
    assert message.endswith("…") and worst_error().message.startswith(message[:-1])


def test_should_a_batch_not_fit_its_last_cells_are_left_out_to_be_asked_again() -> None:
    batch = BatchReport.of([worst_cell()] * (REPORT_BATCH_CELLS + 3))
    parsed = BatchReport.model_validate_json(batch.to_message())
    assert len(parsed.cells) == REPORT_BATCH_CELLS
    runs = [f"run-{i}" for i in range(REPORT_BATCH_CELLS + 3)]
    assert list(parsed.reports(runs, "0.05")) == runs[:REPORT_BATCH_CELLS]


def status_fields(report: CellReport, spec: EvalSuiteSpec) -> dict[str, Any]:
    return _report_fields(report, None, regression_of(spec))


@pytest.mark.parametrize(
    "comparison",
    [
        None,
        CellComparison(reason=NO_BASELINE, message="no earlier succeeded run of this cell",
                       alpha="0.05"),
        CellComparison(reason=BASELINE_NOT_FOUND, baseline="20261201-010000",
                       message="suite run 20261201-010000 has no succeeded run of this cell",
                       alpha="0.05"),
    ],
)  # fmt: skip
def test_a_cell_without_a_comparison_reads_back_as_it_was(comparison: Any) -> None:
    spec = EvalSuiteSpec.model_validate({})
    report = CellReport(state="done", latency_p50_ms=12.5, latency_p95_ms=80.25,
                        comparison=comparison)  # fmt: skip
    (back,) = BatchReport.of([report]).reports(["r"], "0.05").values()
    assert status_fields(back, spec) == status_fields(report, spec)


def test_what_the_status_keeps_of_a_compared_cell_survives_the_batch() -> None:
    from eval_runner.cellreport import with_cached_answers

    spec = EvalSuiteSpec.model_validate(
        {
            "models": [{"name": "m", "model": {"name": "m", "baseURL": "http://m/v1"}}],
            "tasks": [
                {
                    "name": "t",
                    "dataset": {"builtin": "arithmetic"},
                    "task": {"scorers": [{"type": "exact_match"}]},
                }
            ],
            "baseline": "previous",
            "regression": {"maxDrop": "0.05", "alpha": "0.01"},
        }
    )
    scorers = [
        ScorerComparison(name=f"s{k}", test="mcnemar-exact", pairs=100, excluded=1,
                         baseline_mean=0.9, candidate_mean=0.1 * k, difference=0.1 * k - 0.9,
                         ci95=[-0.93, 0.1 / 3], p_value=1 / 3 ** (k + 20),
                         min_detectable_effect=0.07, regressed=k != 1)
        for k in range(4)
    ]  # fmt: skip
    comparison = CellComparison(
        reason="Compared", baseline="20261201-010000", baseline_run="grid-large-sums-abc123",
        alpha="0.01", regressed=True, underpowered=True, scorers=scorers,
    )  # fmt: skip
    rows = [{"input_hash": str(i), "cache_hit": True, "response": "a"} for i in range(10)]
    for compared in (comparison, with_cached_answers(comparison, rows, rows)):
        report = CellReport(state="done", latency_p50_ms=3.25, latency_p95_ms=None,
                            comparison=compared)  # fmt: skip
        text = BatchReport.of([report]).to_message()
        (back,) = BatchReport.model_validate_json(text).reports(["r"], "0.01").values()
        assert status_fields(back, spec) == status_fields(report, spec)
        fields = status_fields(back, spec)
        assert fields["comparison"]["regressedScorers"] == 3
        assert fields["comparison"]["scorers"][0]["pValue"] == 1 / 3**20  # to the last bit
    assert status_fields(back, spec)["comparison"]["reason"] == CACHED_ANSWERS


def test_a_failed_cell_and_a_failed_batch_read_back_as_report_failures() -> None:
    spec = EvalSuiteSpec.model_validate({})
    gone = CellReport(state="error", reason="RunNotStored", message="run r1 is not in the store")
    reports = BatchReport.of([gone, CellReport(state="done")]).reports(["r1", "r2"], "0.05")
    assert status_fields(reports["r1"], spec)["comparison"] == {
        "reason": "ReportFailed",
        "message": "RunNotStored: run r1 is not in the store",
    }
    assert reports["r2"].state == "done"
    failed = BatchReport.failed("InvalidStoreSecret", "no store").reports(["a", "b"], "0.05")
    assert {r.reason for r in failed.values()} == {"InvalidStoreSecret"} and len(failed) == 2
    # An empty or unreadable termination message: every cell's report is missing.
    empty = BatchReport.model_validate_json("{}").reports(["a"], "0.05")
    assert empty["a"].reason == "ReportMissing"
    odd = BatchReport(cells=[{"c": [1]}]).reports(["a"], "0.05")
    assert odd["a"].reason == "ReportUnreadable"
