"""What the dashboard's JSON API answers: typed models, the one source of its OpenAPI document
(eval_runner.dashboard.openapi) and of its responses. camelCase on the wire, as the CRDs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from eval_api.v1alpha1.matrix import ScorerComparison


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class ScorerSummary(Wire):
    name: str
    value: float | None = Field(description="Mean score; null when no sample was scored.")
    stderr: float | None = None
    ci95: list[float] | None = Field(
        default=None,
        description="95% interval: Wilson for 0/1 scores, Student's t otherwise (ungrouped).",
    )
    n: int = Field(description="Scored samples.")


class RunSummary(Wire):
    evaluation_uid: str
    run: str
    namespace: str
    evaluation: str = Field(description="The Evaluation's name.")
    suite: str | None = None
    cell: str | None = Field(default=None, description="<model>/<task> of a suite's cell.")
    suite_run: str | None = None
    model: str
    provider: str
    dataset: str
    started_at: datetime
    succeeded_at: datetime | None = Field(
        default=None, description="Set once the operator reported the run as succeeded."
    )
    last_sample_at: datetime | None = None
    samples: int = Field(description="Stored samples, scored or errored.")
    errored: int
    errors_by_class: dict[str, int] = Field(default_factory=dict)
    input_tokens: int
    output_tokens: int
    cost_usd: float = Field(alias="costUSD")
    cache_hits: int
    latency_p50_ms: float | None = Field(default=None, alias="latencyP50Ms")
    latency_p95_ms: float | None = Field(default=None, alias="latencyP95Ms")
    main_scorer: str | None = Field(default=None, description="The first of the run's scorers.")
    score: float | None = Field(default=None, description="The main scorer's mean.")
    ci95: list[float] | None = None
    scorers: list[ScorerSummary] = Field(default_factory=list)


class Suite(Wire):
    namespace: str
    suite: str
    cells: int = Field(description="Cells with a succeeded run.")
    runs: int
    last_run_at: datetime


class SuiteList(Wire):
    items: list[Suite]


class Evaluation(Wire):
    namespace: str
    name: str
    evaluation_uid: str
    suite: str | None = None
    cell: str | None = None
    model: str
    provider: str
    runs: int
    latest_run: str
    latest_started_at: datetime
    latest_succeeded_at: datetime | None = None


class EvaluationList(Wire):
    items: list[Evaluation]


class RunList(Wire):
    items: list[RunSummary]


class Sample(Wire):
    sample_id: int
    shard: int
    attempt: int
    input_hash: str
    prompt: list[dict[str, Any]] | None = Field(
        default=None, description="The chat messages sent (null for rows before schema 5)."
    )
    response: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    error_class: str | None = None
    error_message: str | None = None
    latency_ms: float | None = None
    cost_usd: float = Field(alias="costUSD")
    cache_hit: bool
    input_tokens: int
    output_tokens: int
    details: dict[str, Any] | None = Field(
        default=None,
        description=(
            "lm-eval tasks: each filter's answer and the reference (answers, reference), or "
            "every choice's log-likelihood with the chosen one and the gold (choices, answer, "
            "gold); null for scorer tasks."
        ),
    )


class SamplePage(Wire):
    items: list[Sample]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next page; null on the last page."
    )


class LeaderboardEntry(Wire):
    rank: int
    model: str
    cell: str
    evaluation: str
    evaluation_uid: str
    run: str
    suite_run: str | None = None
    score: float | None = None
    ci95: list[float] | None = None
    n: int
    errored: int
    cost_usd: float = Field(alias="costUSD")
    latency_p50_ms: float | None = Field(default=None, alias="latencyP50Ms")
    latency_p95_ms: float | None = Field(default=None, alias="latencyP95Ms")
    succeeded_at: datetime | None = None


class LeaderboardTask(Wire):
    task: str
    scorer: str | None = Field(default=None, description="The main scorer of the task's runs.")
    best: str | None = Field(default=None, description="The best model (highest score).")
    entries: list[LeaderboardEntry]


class Leaderboard(Wire):
    namespace: str
    suite: str
    tasks: list[LeaderboardTask]


class HistoryPoint(Wire):
    evaluation_uid: str
    run: str
    suite_run: str | None = None
    started_at: datetime
    score: float | None = None
    ci95: list[float] | None = None
    n: int


class CellHistory(Wire):
    cell: str
    model: str
    task: str
    points: list[HistoryPoint] = Field(description="Succeeded runs, oldest first.")


class History(Wire):
    namespace: str
    suite: str
    cells: list[CellHistory]


class RunRef(Wire):
    evaluation_uid: str
    run: str


class Changes(Wire):
    """The main scorer's outcome per paired sample: right means a score of at least 0.5 (for
    0/1 scores, exactly right)."""

    both_right: int
    both_wrong: int
    fixed: int = Field(description="Wrong in the baseline, right in the candidate.")
    broken: int = Field(description="Right in the baseline, wrong in the candidate.")
    unpaired: int = Field(description="Samples scored in one run only.")


class ChangedSample(Wire):
    input_hash: str
    occurrence: int
    baseline_sample_id: int
    candidate_sample_id: int
    baseline_score: float
    candidate_score: float
    prompt: list[dict[str, Any]] | None = None
    baseline_response: str | None = None
    candidate_response: str | None = None


class Comparison(Wire):
    baseline: RunRef
    candidate: RunRef
    scorer: str | None = Field(default=None, description="The main scorer (changes are its).")
    alpha: float
    max_drop: float
    regressed: bool
    scorers: list[ScorerComparison]
    changes: Changes
    changed: list[ChangedSample] = Field(description="Samples whose outcome flipped (first 50).")


class ComponentHealth(Wire):
    status: str = Field(description="ok, error or disabled.")
    required: bool = Field(description="Whether the dashboard is unready without it.")
    latency_ms: float | None = None
    message: str | None = None


class Readiness(Wire):
    status: str = Field(
        description="ok: every component answers; degraded: an optional one does not (200); "
        "error: a required one does not (503)."
    )
    components: dict[str, ComponentHealth]


class Problem(Wire):
    """An error: HTTP status, a CamelCase reason and a message (never a secret)."""

    status: int
    reason: str
    message: str
