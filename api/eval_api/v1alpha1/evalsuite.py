"""The EvalSuite kind: its spec, its status and its printer columns.

An EvalSuite brings up the evaluation stack (the per-sample store, the response cache) that
Evaluations with spec.suiteRef run inside, and optionally runs a matrix in it. Each part of the
spec is in the module of its name: stack (store, cache), matrix (models, tasks, defaults,
baseline, regression, schedule), netpol, dashboard, tls and monitoring.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eval_api.v1alpha1.common import (
    API_VERSION,
    DEFAULT_MANAGED,
    DEFAULTED_OBJECT,
    RERUN_ANNOTATION,
    ApiModel,
    Condition,
    ObjectMeta,
    cel_rule,
)
from eval_api.v1alpha1.dashboard import DashboardSpec, DashboardStatus
from eval_api.v1alpha1.matrix import (
    ACCEPT_RUN_ANNOTATION,
    BASELINE_PATTERN,
    DEFAULT_MAX_PARALLEL_CELLS,
    MAX_SUITE_CELLS,
    MAX_SUITE_MODELS,
    MAX_SUITE_TASKS,
    CellDefaults,
    MatrixCounts,
    RegressionSpec,
    SuiteModel,
    SuiteRun,
    SuiteScheduleSpec,
    SuiteTask,
    TaskLeaderboard,
)
from eval_api.v1alpha1.monitoring import MonitoringSpec
from eval_api.v1alpha1.netpol import SuiteNetworkPolicySpec
from eval_api.v1alpha1.stack import CacheSpec, CacheStatus, StoreSpec, StoreStatus
from eval_api.v1alpha1.tls import TLSSpec


def _unique_names(what: str) -> dict[str, str]:
    return cel_rule(
        "self.all(a, self.exists_one(b, b.name == a.name))", f"{what} names must be unique"
    )


class EvalSuiteSpec(ApiModel):
    """The evaluation stack (a per-sample results store and a response cache) and, optionally,
    the matrix it runs: every model on every task as one child Evaluation per cell, compared
    with a baseline run, re-run on a schedule."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "has(self.models) == has(self.tasks)",
                    "models and tasks go together: the matrix needs at least one of each",
                    ".models",
                ),
                cel_rule(
                    "!has(self.models) || !has(self.tasks) || "
                    f"size(self.models) * size(self.tasks) <= {MAX_SUITE_CELLS}",
                    f"the matrix may have at most {MAX_SUITE_CELLS} cells (models x tasks)",
                    ".models",
                ),
                cel_rule(
                    "has(self.models) || !(has(self.baseline) || has(self.regression) || "
                    "has(self.schedule) || has(self.defaults) || has(self.maxParallelCells))",
                    "baseline, regression, schedule, defaults and maxParallelCells need a matrix "
                    "(models and tasks)",
                ),
                cel_rule(
                    "!has(self.regression) || has(self.baseline)",
                    "regression needs a baseline to compare with",
                    ".regression",
                ),
                cel_rule(
                    "!has(self.defaults) || !has(self.defaults.execution) || "
                    "!has(self.defaults.execution.earlyStop) || "
                    "self.defaults.execution.earlyStop.when != 'Verdict' || !has(self.tasks) || "
                    "self.tasks.all(t, has(t.thresholds) && size(t.thresholds) > 0)",
                    "defaults.execution.earlyStop when Verdict requires thresholds on every task "
                    "(the verdict each cell stops at)",
                    ".defaults.execution.earlyStop.when",
                ),
                cel_rule(
                    "!has(self.defaults) || !has(self.defaults.execution) || "
                    "!has(self.defaults.execution.earlyStop) || !has(self.baseline) || "
                    "(has(self.regression) && has(self.regression.maxDrop) && "
                    "!self.regression.maxDrop.matches('^0(\\\\.0+)?$'))",
                    "defaults.execution.earlyStop with a baseline requires regression.maxDrop "
                    "above 0: samples can show a cell no worse than its baseline within a margin, "
                    "never exactly as good, so at maxDrop 0 the regression gate could never rule "
                    "a regression out and every unchanged cell would ask every sample",
                    ".regression",
                ),
            ]
        }
    )

    store: StoreSpec = Field(
        default_factory=StoreSpec,
        description="Per-sample results (PostgreSQL).",
        json_schema_extra=DEFAULT_MANAGED,
    )
    cache: CacheSpec = Field(
        default_factory=CacheSpec,
        description="Response cache (Redis).",
        json_schema_extra=DEFAULT_MANAGED,
    )
    network_policy: SuiteNetworkPolicySpec = Field(
        default_factory=SuiteNetworkPolicySpec,
        description="The suite's NetworkPolicies (on by default).",
        json_schema_extra=DEFAULTED_OBJECT,
    )
    dashboard: DashboardSpec = Field(
        default_factory=DashboardSpec,
        description="The results dashboard (on by default).",
        json_schema_extra=DEFAULTED_OBJECT,
    )
    tls: TLSSpec = Field(
        default_factory=TLSSpec,
        description="TLS inside the stack, with cert-manager (off by default).",
        json_schema_extra=DEFAULTED_OBJECT,
    )
    monitoring: MonitoringSpec = Field(
        default_factory=MonitoringSpec,
        description="ServiceMonitors, PodMonitor, alerts and a Grafana dashboard (off by default).",
        json_schema_extra=DEFAULTED_OBJECT,
    )
    models: list[SuiteModel] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SUITE_MODELS,
        description="The models of the matrix; each runs every task.",
        json_schema_extra={"x-kubernetes-validations": [_unique_names("model")]},
    )
    tasks: list[SuiteTask] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SUITE_TASKS,
        description="The tasks of the matrix; each is run by every model.",
        json_schema_extra={"x-kubernetes-validations": [_unique_names("task")]},
    )
    defaults: CellDefaults | None = Field(
        default=None, description="Execution and budget settings of every cell."
    )
    max_parallel_cells: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SUITE_CELLS,
        description=(
            f"Cells running at once (default {DEFAULT_MAX_PARALLEL_CELLS}); the others wait "
            "suspended, in matrix order (models, then tasks), and the Progressing condition "
            "says how many wait. The managed store's max_connections is sized from it (times "
            "the runner pods of a cell)."
        ),
    )
    baseline: str | None = Field(
        default=None,
        max_length=64,
        pattern=BASELINE_PATTERN,
        description=(
            "What each cell's run is compared with, sample by sample: previous (the cell's "
            f"last succeeded run), accepted (the suite run named by the {ACCEPT_RUN_ANNOTATION} "
            "annotation, set by `kubectl evals accept`), or a suite run id from status.history, "
            'e.g. "20261130-020000". Without it no comparison is made.'
        ),
    )
    regression: RegressionSpec | None = Field(
        default=None,
        description=(
            'When a cell counts as regressed (default maxDrop "0", alpha "0.05" when a '
            "baseline is set). With defaults.execution.earlyStop (maxDrop above 0) a cell's run "
            "is decided only once its regression is too, by a sequential test of its pairs "
            "(status.stoppedEarly.regression of the cell); a cell of a task with groupField "
            "then asks every sample (its pairs are not independent) and its cell report "
            "decides at the end."
        ),
    )
    schedule: SuiteScheduleSpec | None = Field(
        default=None, description="Re-run the matrix on a cron schedule."
    )

    @property
    def has_matrix(self) -> bool:
        return bool(self.models and self.tasks)

    @property
    def parallel_cells(self) -> int:
        """Cells that may run at once: maxParallelCells, its default when unset."""
        return self.max_parallel_cells or DEFAULT_MAX_PARALLEL_CELLS


class EvalSuiteStatus(ApiModel):
    """What the operator observed of the suite's stack."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status reflects."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "StoreReady, CacheReady and Ready; Progressing while the stack comes up or the "
            "matrix runs, Stalled while it waits for a fix (a missing or wrong Secret, a failed "
            "migration, an invalid cell); with a matrix, Passed (every cell succeeded, met its "
            "thresholds and did not regress) and, with a baseline, Regressed."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    store: StoreStatus | None = Field(default=None, description="The store in use.")
    cache: CacheStatus | None = Field(default=None, description="The cache in use.")
    dashboard: DashboardStatus | None = Field(default=None, description="The dashboard.")
    matrix: MatrixCounts | None = Field(default=None, description="Cells per phase.")
    leaderboard: list[TaskLeaderboard] = Field(
        default_factory=list, description="Per task, every model's result and the best one."
    )
    current_run: SuiteRun | None = Field(default=None, description="The latest run of the matrix.")
    history: list[SuiteRun] = Field(
        default_factory=list,
        description="Finished runs, newest first (schedule.historyLimit of them, default 10).",
    )
    rerun_token: str | None = Field(
        default=None, description=f"Value of the {RERUN_ANNOTATION} annotation last acted on."
    )
    accepted_run: str | None = Field(
        default=None, description=f"The suite run the {ACCEPT_RUN_ANNOTATION} annotation names."
    )
    last_schedule_time: str | None = Field(
        default=None, description="The last schedule time a run was started for."
    )
    next_schedule_time: str | None = Field(default=None, description="The next schedule time.")


EVALSUITE_PRINTER_COLUMNS = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {
        "name": "Store",
        "type": "string",
        "priority": 1,
        "description": "Reason of StoreReady",
        "jsonPath": '.status.conditions[?(@.type=="StoreReady")].reason',
    },
    {
        "name": "Cache",
        "type": "string",
        "priority": 1,
        "description": "Reason of CacheReady",
        "jsonPath": '.status.conditions[?(@.type=="CacheReady")].reason',
    },
    {"name": "Models", "type": "integer", "jsonPath": ".status.matrix.models"},
    {"name": "Tasks", "type": "integer", "jsonPath": ".status.matrix.tasks"},
    {
        "name": "Done",
        "type": "string",
        "description": "Finished cells of the current run",
        "jsonPath": ".status.matrix.done",
    },
    {
        "name": "Best",
        "type": "string",
        "description": "Best model on the first task",
        "jsonPath": ".status.leaderboard[0].best",
    },
    {"name": "Regressed", "type": "integer", "jsonPath": ".status.matrix.regressed"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Passed",
        "type": "string",
        "priority": 1,
        "jsonPath": '.status.conditions[?(@.type=="Passed")].status',
    },
    {
        "name": "Endpoint",
        "type": "string",
        "priority": 1,
        "jsonPath": ".status.store.endpoint",
    },
    {
        "name": "Schema",
        "type": "integer",
        "priority": 1,
        "jsonPath": ".status.store.schemaVersion",
    },
]


class EvalSuite(BaseModel):
    """An EvalSuite brings up an evaluation stack — a PostgreSQL store for per-sample results
    and a Redis response cache — that Evaluations with spec.suiteRef run inside: their samples
    are stored as they finish, a retried shard resumes without asking the model again, and
    identical requests are answered from the cache."""

    model_config = ConfigDict(
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={
            "x-crd": {
                "plural": "evalsuites",
                "singular": "evalsuite",
                "shortNames": ["evs"],
                "categories": ["evals"],
                "printerColumns": EVALSUITE_PRINTER_COLUMNS,
            }
        },
    )

    api_version: Literal["evals.io/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["EvalSuite"] = "EvalSuite"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: EvalSuiteSpec = Field(
        default_factory=EvalSuiteSpec, description="The desired evaluation stack."
    )
    status: EvalSuiteStatus | None = Field(default=None, description="The observed state.")
