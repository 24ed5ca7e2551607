"""The contract between `eval-runner cell-report` and the operator: one matrix cell's report.

When a cell of an EvalSuite's matrix has succeeded, the operator runs a small Job that reads the
cell's per-sample rows from the store (the operator itself never holds the store's password):
it records the run as succeeded in the store, measures the answers' latency percentiles, finds
the baseline run, and compares the two sample by sample. The report is its termination message.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eval_api.shard import TERMINATION_MESSAGE_LIMIT
from eval_api.v1alpha1 import CellComparison

# The baseline selector the operator passes (`--baseline`): none, previous, or suite-run:<id>.
BASELINE_NONE = "none"
BASELINE_PREVIOUS = "previous"
BASELINE_SUITE_RUN_PREFIX = "suite-run:"

# CellComparison.reason values.
COMPARED = "Compared"
# Compared, but most of the candidate's answers came from the response cache and are the
# baseline's own (execution.cache.reuse AcrossRuns): the comparison does not measure the model
# as it is now.
CACHED_ANSWERS = "CachedAnswers"
NO_BASELINE = "NoBaseline"
BASELINE_NOT_FOUND = "BaselineNotFound"
IS_BASELINE = "IsBaseline"
REPORT_FAILED = "ReportFailed"


class CellReport(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    state: Literal["done", "error"]
    reason: str | None = Field(default=None, description="CamelCase reason when state is error.")
    message: str | None = None
    latency_p50_ms: float | None = Field(default=None, alias="latencyP50Ms")
    latency_p95_ms: float | None = Field(default=None, alias="latencyP95Ms")
    comparison: CellComparison | None = None

    def to_message(self) -> str:
        """Compact JSON within the termination message limit: with very many scorers the last
        ones are left out (the main scorer, first, always stays) and the message says so."""
        text = self.model_dump_json(by_alias=True, exclude_none=True)
        report = self
        while len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            comparison = report.comparison
            if comparison is None or len(comparison.scorers) <= 1:
                report = report.model_copy(update={"message": (report.message or "")[:512]})
                return report.model_dump_json(by_alias=True, exclude_none=True)
            kept = comparison.scorers[:-1]
            comparison = comparison.model_copy(
                update={
                    "scorers": kept,
                    "message": f"only the first {len(kept)} scorers fit the report",
                }
            )
            report = report.model_copy(update={"comparison": comparison})
            text = report.model_dump_json(by_alias=True, exclude_none=True)
        return text


def comparison_columns(comparison: CellComparison | None) -> tuple[str, str, str]:
    """The main scorer's difference and p-value, and the verdict (yes, no, or why there is
    none), as the leaderboards of `kubectl evals suite` and `eval-runner run suite.yaml` show
    them."""
    main = comparison.scorers[0] if comparison and comparison.scorers else None
    delta = "-" if main is None or main.difference is None else f"{main.difference:+.4f}"
    p_value = "-" if main is None or main.p_value is None else f"{main.p_value:.4g}"
    if comparison is None:
        verdict = "-"
    elif comparison.regressed:
        verdict = "yes"
    elif comparison.reason != COMPARED:
        verdict = comparison.reason  # why there is no "no": no baseline, cached answers, ...
    else:
        verdict = "no"
    return delta, p_value, verdict
