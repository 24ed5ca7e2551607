"""An EvalSuite's matrix of models x tasks: spec.models and spec.tasks, what every cell gets
(spec.defaults), the regression rule and the schedule; and what the status reports of it: the
leaderboard, each cell's comparison with its baseline, the cell counts and the suite runs.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from eval_api.v1alpha1.common import (
    CRON_PATTERN,
    DNS_LABEL_PATTERN,
    FRACTION_PATTERN,
    GROUP,
    ApiModel,
    time_zone_rule,
)
from eval_api.v1alpha1.dataset import DatasetSpec
from eval_api.v1alpha1.evaluation import DATASET_RULE
from eval_api.v1alpha1.execution import BudgetSpec, ExecutionSpec
from eval_api.v1alpha1.model import ModelSpec
from eval_api.v1alpha1.task import THRESHOLD_PATTERN, TaskSpec

# A cell's Evaluation is named <suite>-<model>-<task>: these bounds keep the names short and the
# status (one leaderboard entry per cell) well within etcd's object size limit.
MAX_SUITE_MODELS = 50
MAX_SUITE_TASKS = 50
MAX_SUITE_CELLS = 400
# Cells running at once when maxParallelCells is unset: each is a Job of runner pods holding a
# store connection each, so "all 400" would ask the managed store (and the cluster) for more
# than a default suite is sized for.
DEFAULT_MAX_PARALLEL_CELLS = 20
MATRIX_NAME_MAX = 40
# spec.baseline: "previous", "accepted", or a suite run id as status.history names them.
BASELINE_PATTERN = r"^(previous|accepted|[0-9]{8}-[0-9]{6}(-[0-9]+)?)$"
# A decimal strictly between 0 and 1, e.g. "0.05".
OPEN_FRACTION_PATTERN = r"^0\.[0-9]*[1-9][0-9]*$"
# Annotation on an EvalSuite naming the suite run accepted as the baseline (spec.baseline
# "accepted"); `kubectl evals accept` sets it.
ACCEPT_RUN_ANNOTATION = f"{GROUP}/accept-run"


class SuiteModel(ApiModel):
    """One model of the matrix: a name for its cells, and the model as an Evaluation takes it."""

    name: str = Field(
        min_length=1,
        max_length=MATRIX_NAME_MAX,
        pattern=DNS_LABEL_PATTERN,
        description=(
            "Name of the model in the matrix: a DNS label, part of its cells' Evaluation names."
        ),
    )
    model: ModelSpec = Field(
        description="The model, exactly as an Evaluation's spec.model (secrets by reference)."
    )


class SuiteTask(ApiModel):
    """One task of the matrix: a dataset, how it is prompted and scored, and its thresholds.
    A standard benchmark is one line: `- {name: mmlu, task: {preset: {name: mmlu}}}`."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [DATASET_RULE]})

    name: str = Field(
        min_length=1,
        max_length=MATRIX_NAME_MAX,
        pattern=DNS_LABEL_PATTERN,
        description="Name of the task in the matrix: a DNS label, part of its cells' names.",
    )
    dataset: DatasetSpec | None = Field(
        default=None,
        description="The samples, as an Evaluation's spec.dataset (omitted with task.preset).",
    )
    task: TaskSpec = Field(description="Prompting and scoring, as an Evaluation's spec.task.")
    thresholds: list[Annotated[str, Field(pattern=THRESHOLD_PATTERN, max_length=128)]] = Field(
        default_factory=list,
        max_length=16,
        description="Pass criteria of every cell of this task, as an Evaluation's thresholds.",
    )


class CellDefaults(ApiModel):
    """What every cell's Evaluation gets besides its model and task."""

    execution: ExecutionSpec | None = Field(
        default=None, description="Sharding and pod settings of every cell."
    )
    budget: BudgetSpec | None = Field(
        default=None, description="Spend limits of every cell (each cell gets the whole budget)."
    )


class RegressionSpec(ApiModel):
    """When a cell counts as regressed against its baseline. With defaults.execution.earlyStop
    a cell's run is decided only once its regression is too (a sequential test of the pairs,
    status.stoppedEarly.regression); a cell of a task with groupField then asks every sample
    (its pairs are not independent) and the cell report decides at the end."""

    max_drop: str = Field(
        default="0",
        pattern=FRACTION_PATTERN,
        max_length=32,
        description=(
            'Largest drop of a mean score tolerated, a decimal in [0, 1] (default "0"): a cell '
            "regresses when a scorer's paired difference is below -maxDrop AND significant at "
            "alpha."
        ),
    )
    alpha: str = Field(
        default="0.05",
        pattern=OPEN_FRACTION_PATTERN,
        max_length=32,
        description='Significance level of the paired test, in (0, 1) (default "0.05").',
    )


class SuiteScheduleSpec(ApiModel):
    """Re-run the whole matrix on a cron schedule, as a CronJob would start Jobs."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [time_zone_rule()]})

    cron: str = Field(
        max_length=128,
        pattern=CRON_PATTERN,
        description='Five-field cron expression or a macro, e.g. "0 2 * * *" or "@daily".',
    )
    time_zone: str | None = Field(
        default=None,
        max_length=64,
        description='IANA time zone of the schedule, e.g. "Europe/Paris" (default UTC).',
    )
    concurrency_policy: Literal["Forbid", "Replace", "Allow"] = Field(
        default="Forbid",
        description=(
            "When a scheduled time comes while the last run is still going: Forbid (default) "
            "waits for it to finish, then runs once; Replace stops it (recorded as Replaced) and "
            "starts the new run; Allow starts the new run at once, each cell still running the "
            "old run finishing it first (the old run is recorded as Superseded)."
        ),
    )
    starting_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=31_536_000,
        description=(
            "A scheduled time missed by more than this (the operator was down) is skipped. "
            "Without it a missed time runs once when the operator is back, never once per "
            "missed time."
        ),
    )
    history_limit: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Finished runs kept in status.history (default 10); the store keeps all.",
    )


class ScorerComparison(ApiModel):
    """One scorer of a cell, candidate minus baseline, over the samples both runs scored."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="Scorer name.")
    test: str = Field(
        description=(
            "mcnemar-exact (0/1 scores; with a maxDrop above 0 also Tango's score test), "
            "t-test (other scores), or none (no pairs)."
        )
    )
    pairs: int = Field(description="Samples scored in both runs (matched by their record).")
    excluded: int = Field(description="Samples scored in only one of the runs: left out.")
    baseline_mean: float | None = Field(default=None, description="Baseline mean over the pairs.")
    candidate_mean: float | None = Field(
        default=None, description="This run's mean over the pairs."
    )
    difference: float | None = Field(
        default=None, description="Mean paired difference, candidate minus baseline."
    )
    ci95: list[float] | None = Field(
        default=None,
        description="95% paired bootstrap interval of the difference (10,000 resamples, seeded).",
    )
    p_value: float | None = Field(
        default=None,
        description="One-sided p-value of the test of 'the mean difference is at least -maxDrop'.",
    )
    min_detectable_effect: float | None = Field(
        default=None,
        description=(
            "The smallest drop these pairs detect at alpha with 80% power: a 'no regression' "
            "verdict says nothing about drops smaller than this."
        ),
    )
    regressed: bool = Field(
        default=False, description="Worse by more than maxDrop, and significant at alpha."
    )


class CellComparison(ApiModel):
    """A cell's run compared with its baseline run."""

    model_config = ConfigDict(extra="ignore")

    reason: str = Field(
        description=(
            "Compared; CachedAnswers (compared, but most of this run's answers came from "
            "the response cache and are the baseline's own: execution.cache.reuse "
            "AcrossRuns, so the comparison does not measure the model as it is now); "
            "NoBaseline (no earlier succeeded run, or no run accepted); BaselineNotFound (the "
            "named suite run has no succeeded run of this cell); IsBaseline (this run is the "
            "baseline); ReportFailed."
        )
    )
    message: str = Field(default="", description="Details.")
    baseline: str | None = Field(default=None, description="Suite run id of the baseline.")
    baseline_run: str | None = Field(default=None, description="The baseline run (its Job name).")
    alpha: str | None = Field(default=None, description="The alpha the test was run at.")
    regressed: bool = Field(default=False, description="Some scorer regressed.")
    decided_early: bool | None = Field(
        default=None,
        description=(
            "The run stopped early (execution.earlyStop) once its regression gate was decided: "
            "regressed is the gate's decision, an anytime-valid sequential test (the message "
            "says each scorer's interval); the scorers' p-values are over the samples asked "
            "and do not hold after stopping early."
        ),
    )
    underpowered: bool = Field(
        default=False,
        description=(
            "The main scorer's minimum detectable effect is larger than twice maxDrop: a drop "
            "of twice maxDrop would likely go unnoticed (never set at maxDrop 0)."
        ),
    )
    cached_answers: int | None = Field(
        default=None,
        description=(
            "Samples scored in both runs whose answer in this run came from the response "
            "cache and is the baseline's answer, word for word."
        ),
    )
    paired_samples: int | None = Field(
        default=None, description="Samples scored in both runs (matched by their record)."
    )
    scorers: list[ScorerComparison] = Field(
        default_factory=list,
        description=(
            "Per scorer (a cell report's); in the suite's status the main scorer's alone, the "
            "others counted in regressedScorers (the dashboard's comparison page shows them "
            "all): a suite's status stays within etcd's object size limit whatever the matrix."
        ),
    )
    regressed_scorers: int | None = Field(
        default=None, description="How many scorers regressed, main or not (suite status)."
    )


class LeaderboardEntry(ApiModel):
    """One cell: a model's result on the task."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="The model's name in the matrix.")
    evaluation: str = Field(description="The cell's Evaluation.")
    phase: str | None = Field(default=None, description="The Evaluation's phase.")
    run: str | None = Field(default=None, description="The cell's current run (its Job name).")
    score: float | None = Field(default=None, description="Mean of the task's first scorer.")
    ci95: list[float] | None = Field(default=None, description="Its 95% confidence interval.")
    n: int | None = Field(default=None, description="Samples scored.")
    cost_usd: str | None = Field(
        default=None, alias="costUSD", description="Cost in USD, model and judges."
    )
    cache_hits: int | None = Field(
        default=None,
        description=(
            "Answers of the run that came from the response cache, not the model "
            "(the Evaluation's usage.cacheHits)."
        ),
    )
    latency_p50_ms: float | None = Field(
        default=None,
        alias="latencyP50Ms",
        description="Median answer latency (ms), from the store.",
    )
    latency_p95_ms: float | None = Field(
        default=None, alias="latencyP95Ms", description="95th percentile answer latency (ms)."
    )
    passed: bool | None = Field(default=None, description="Whether the thresholds held.")
    comparison: CellComparison | None = Field(
        default=None, description="The paired comparison with the baseline."
    )
    report_job: str | None = Field(
        default=None,
        description=(
            "The cell report Job the latency and comparison come from: one Job reports up to "
            "8 cells of a suite run, named by the run, the baseline, the regression rule and "
            "its cells' runs; deleted once reported."
        ),
    )


class TaskLeaderboard(ApiModel):
    model_config = ConfigDict(extra="ignore")

    task: str = Field(description="The task's name in the matrix.")
    best: str | None = Field(
        default=None,
        description="The model with the highest score among the succeeded cells (first wins ties).",
    )
    entries: list[LeaderboardEntry] = Field(
        default_factory=list, description="Every model on this task, in spec order."
    )


class MatrixCounts(ApiModel):
    model_config = ConfigDict(extra="ignore")

    models: int = Field(default=0, description="Models in the matrix.")
    tasks: int = Field(default=0, description="Tasks in the matrix.")
    cells: int = Field(default=0, description="Cells (child Evaluations).")
    waiting: int = Field(default=0, description="Cells held back by maxParallelCells.")
    pending: int = Field(default=0, description="Cells not started yet.")
    running: int = Field(default=0, description="Cells running.")
    succeeded: int = Field(default=0, description="Cells whose current run succeeded.")
    failed: int = Field(default=0, description="Cells whose current run failed.")
    done: str = Field(default="0/0", description='Finished cells of the current run, "x/y".')
    regressed: int = Field(default=0, description="Cells regressed against the baseline.")


class SuiteRun(ApiModel):
    """One run of the whole matrix."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(description="The suite run id, also each cell's evals.io/rerun token.")
    trigger: str = Field(description="Created, Rerun, Schedule or SpecChange.")
    start_time: str = Field(description="When it started.")
    scheduled_for: str | None = Field(default=None, description="The schedule time it answers.")
    completion_time: str | None = Field(default=None, description="When its last cell finished.")
    outcome: str | None = Field(
        default=None,
        description="Succeeded (every cell), Failed (some cell failed), Replaced or Superseded.",
    )
    passed: bool | None = Field(
        default=None, description="Every cell succeeded, met its thresholds and did not regress."
    )
    cells: int = Field(default=0, description="Cells in the run.")
    succeeded: int = Field(default=0, description="Cells that succeeded.")
    failed: int = Field(default=0, description="Cells that failed.")
    regressed: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Regressed cells (the first 10; matrix.regressed counts them all).",
    )
    not_passed: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Cells that failed or missed a threshold (the first 10).",
    )
    regressed_count: int | None = Field(default=None, description="Regressed cells, all of them.")
    not_passed_count: int | None = Field(
        default=None, description="Cells that failed or missed a threshold, all of them."
    )
