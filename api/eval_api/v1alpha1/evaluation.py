"""The Evaluation kind: its spec (one model on one dataset with scorers, made of the parts in
model, dataset, task and execution), its status (progress, per-scorer results, usage and cost,
conditions) and its printer columns.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from eval_api.v1alpha1.common import (
    API_VERSION,
    RERUN_ANNOTATION,
    ApiModel,
    Condition,
    LocalObjectReference,
    ObjectMeta,
    cel_rule,
)
from eval_api.v1alpha1.dataset import DatasetSpec
from eval_api.v1alpha1.execution import BudgetSpec, ExecutionSpec
from eval_api.v1alpha1.model import ModelSpec
from eval_api.v1alpha1.task import THRESHOLD_PATTERN, TaskSpec

# Written once for an Evaluation's spec and an EvalSuite task (spec.tasks[]), whose model is
# not known there: each rule only names dataset, task and model.
DATASET_RULE = cel_rule(
    "has(self.dataset) != has(self.task.preset)",
    "a task.preset brings its own dataset (omit spec.dataset); every other task needs one",
    ".dataset",
)
LM_EVAL_RULES = [
    DATASET_RULE,
    cel_rule(
        "(!has(self.task.lmEval) && !has(self.task.preset)) || !has(self.model.parameters) "
        "|| (!has(self.model.parameters.temperature) && !has(self.model.parameters.topP) && "
        "!has(self.model.parameters.maxTokens) && !has(self.model.parameters.stop))",
        "model.parameters temperature, topP, maxTokens and stop come from the task file's "
        "generation_kwargs with task.lmEval or task.preset (seed is still sent)",
        ".model.parameters",
    ),
    cel_rule(
        "!has(self.task.preset) || (has(self.task.preset.generative) && "
        "self.task.preset.generative) || self.task.preset.name == 'gsm8k' || "
        "(has(self.model.api) && self.model.api == 'Completions')",
        "a multiple-choice preset scores choices by log-likelihood, which needs model.api "
        "Completions (an endpoint returning prompt log-probabilities, e.g. vLLM); chat "
        "models run its generative variant (task.preset.generative: true)",
        ".task.preset",
    ),
]


class EvaluationSpec(ApiModel):
    """The desired evaluation: one model on one dataset with a set of scorers."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.budget) || !has(self.budget.maxCostUSD) || has(self.model.pricing)",
                    "budget.maxCostUSD requires model.pricing",
                    ".budget.maxCostUSD",
                ),
                cel_rule(
                    "!has(self.budget) || !has(self.budget.maxCostUSD) || "
                    "self.model.provider == 'anthropic' || has(self.task.lmEval) || "
                    "has(self.task.preset) || (has(self.model.parameters) && "
                    "has(self.model.parameters.maxTokens))",
                    "budget.maxCostUSD requires model.parameters.maxTokens (the output bound of "
                    "a request's worst-case cost; an lm-eval task's is its max_gen_toks)",
                    ".budget.maxCostUSD",
                ),
                cel_rule(
                    "!has(self.budget) || !has(self.budget.maxCostUSD) || "
                    "!has(self.task.scorers) || "
                    "self.task.scorers.all(s, !has(s.judge) || has(s.judge.pricing))",
                    "budget.maxCostUSD requires the pricing of every llm_judge scorer's judge",
                    ".budget.maxCostUSD",
                ),
                cel_rule(
                    "!has(self.budget) || !has(self.budget.maxCostUSD) || "
                    "!has(self.task.scorers) || "
                    "self.task.scorers.all(s, !has(s.judge) || s.judge.provider == 'anthropic' "
                    "|| (has(s.judge.parameters) && has(s.judge.parameters.maxTokens)))",
                    "budget.maxCostUSD requires parameters.maxTokens of every openai llm_judge "
                    "scorer's judge (the output bound of a request's worst-case cost)",
                    ".budget.maxCostUSD",
                ),
                cel_rule(
                    "!has(self.execution) || !has(self.execution.earlyStop) || "
                    "self.execution.earlyStop.when != 'Verdict' || "
                    "(has(self.thresholds) && size(self.thresholds) > 0)",
                    "execution.earlyStop when Verdict requires thresholds (the verdict to know)",
                    ".execution.earlyStop.when",
                ),
            ]
            + LM_EVAL_RULES
        }
    )

    model: ModelSpec = Field(description="The model under evaluation.")
    dataset: DatasetSpec | None = Field(
        default=None, description="The samples (omitted with task.preset, which brings its own)."
    )
    task: TaskSpec = Field(description="Prompting and scoring.")
    execution: ExecutionSpec = Field(
        default_factory=ExecutionSpec, description="Sharding and pod settings."
    )
    budget: BudgetSpec | None = Field(default=None, description="Spend limits.")
    thresholds: list[Annotated[str, Field(pattern=THRESHOLD_PATTERN, max_length=128)]] = Field(
        default_factory=list,
        max_length=16,
        description=(
            'Pass criteria such as "exact_match >= 0.8", one per scorer result; all must hold for '
            "condition Passed to be True. Each names a scorer of task.scorers, with a value in "
            "[0, 1] (checked by the operator before a run starts: reason InvalidSpec)."
        ),
    )
    suite_ref: LocalObjectReference | None = Field(
        default=None, description="Run inside this EvalSuite's stack (store and cache)."
    )
    suspend: bool = Field(
        default=False,
        description="Hold the run (the Job is created suspended); Kueue-friendly.",
    )
    cancel: bool = Field(
        default=False, description="Stop the run: its Job is deleted and the phase becomes Failed."
    )


class Progress(ApiModel):
    """How many samples are done."""

    model_config = ConfigDict(extra="ignore")

    total: int = Field(default=0, description="Samples in the run (0 until known).")
    completed: int = Field(default=0, description="Samples answered and scored.")
    failed: int = Field(
        default=0,
        description=(
            "Samples that errored, never scored: their request (or their judge's) still failed "
            "after its retries, or the judge's reply was unparsable. When more than 5% of the "
            "finished samples errored, the Ready and Progressing messages say how many and "
            "name the most frequent error classes."
        ),
    )
    summary: str = Field(
        default="",
        description=(
            'Display form: samples scored of the total, and the errored ones, e.g. "120/500" '
            'or "0/40, 40 errored".'
        ),
    )


NULLABLE = {"nullable": True}


class ScoreResult(ApiModel):
    """The aggregate of one scorer over all scored samples. A scorer appears even when no
    sample was scored (n 0, no value): errored samples are never silently left out."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="Scorer name.")
    value: float | None = Field(
        default=None,
        description="Mean score; null when no sample was scored.",
        json_schema_extra=NULLABLE,
    )
    stderr: float | None = Field(
        default=None,
        description=(
            "Standard error of the mean: sample standard deviation / sqrt(n); with "
            "task.groupField, cluster-robust over the groups. Null with fewer than 2 samples "
            "(or groups)."
        ),
        json_schema_extra=NULLABLE,
    )
    ci95: list[float] | None = Field(
        default=None,
        description=(
            "95% confidence interval [low, high] of the mean. Scores that are all 0 or 1: the "
            "Wilson score interval (40 of 40 gives [0.912, 1], never [1, 1]). Other scores: "
            "Student's t interval with n-1 degrees of freedom, clipped to [0, 1]. With "
            "task.groupField: the cluster-robust standard error with G-1 degrees of freedom "
            "(G groups), and for 0/1 scores the Wilson interval at the effective sample size "
            "(Korn and Graubard). [0, 1] when there are too few samples or groups to tell; "
            "null when no sample was scored."
        ),
        json_schema_extra=NULLABLE,
    )
    cs_interval: list[float] | None = Field(
        default=None,
        alias="csInterval",
        description=(
            "With execution.earlyStop: the anytime-valid confidence-sequence interval [low, "
            "high] of the mean at execution.earlyStop.confidence, valid at the sample count "
            "the run stopped at (unlike ci95, which is valid only at a size fixed in advance). "
            "With when Verdict, a threshold's scorer's is at its share of 1 - confidence."
        ),
    )
    n: int = Field(description="Number of scored samples.")

    @model_serializer(mode="wrap")
    def _without_absent_cs_interval(self, handler: Any) -> dict[str, Any]:
        # csInterval exists only with execution.earlyStop: a run without it shows what it
        # always showed (no null field).
        dumped = handler(self)
        for key in ("csInterval", "cs_interval"):
            if key in dumped and dumped[key] is None:
                del dumped[key]
        return dumped


class RegressionDecision(ApiModel):
    """What a suite cell's regression gate decided before the run's last sample."""

    model_config = ConfigDict(extra="ignore")

    decision: Literal["Regressed", "NotRegressed"] = Field(
        description=(
            "Regressed: some scorer is worse than the baseline by more than maxDrop; "
            "NotRegressed: no scorer is (each decided by an anytime-valid sequential test at "
            "the suite's regression.alpha shared among the scorers)."
        )
    )
    baseline_run: str = Field(description="The baseline run the samples were paired with.")
    pairs: int = Field(description="Samples paired when it was decided (the most of a scorer).")
    differences: dict[str, list[float]] = Field(
        default_factory=dict,
        description=(
            "Per scorer, the sequence's interval of the mean paired difference (candidate "
            "minus baseline) when it was decided."
        ),
    )
    message: str = Field(description="Each scorer's interval and side.")


class StoppedEarly(ApiModel):
    """A run execution.earlyStop ended before its last sample."""

    model_config = ConfigDict(extra="ignore")

    reason: Literal["VerdictKnown", "PrecisionReached"] = Field(
        description=(
            "VerdictKnown: every threshold decided; PrecisionReached: ciWidth reached. In a "
            "suite cell with a baseline run, either one only once its regression gate is "
            "decided too."
        )
    )
    samples: int = Field(
        description=(
            "Samples the run finished (scored or errored): those counted when it was decided "
            "and those in flight then, which finished and are counted too."
        )
    )
    of: int = Field(description="Samples the run would have asked without earlyStop.")
    saved_requests: int = Field(
        alias="savedRequests",
        description=(
            "Model requests not sent: the samples not asked times the requests per sample "
            "so far (an estimate)."
        ),
    )
    saved_usd: str | None = Field(
        default=None,
        alias="savedUSD",
        description=(
            "What those requests would have cost at the cost per sample so far (with "
            "model.pricing)."
        ),
    )
    message: str = Field(
        description="The decision: each threshold's interval and side when it was decided."
    )
    passed: bool | None = Field(
        default=None,
        description=(
            "With when Verdict: whether every threshold holds, as decided (what condition "
            "Passed says once the run has finished)."
        ),
    )
    regression: RegressionDecision | None = Field(
        default=None,
        description=(
            "A suite cell with a baseline run: its regression gate's decision (the run is "
            "decided only once the gate is too). The cell report then takes it instead of its "
            "fixed-sample tests, which do not hold after stopping early."
        ),
    )


class JudgeUsage(ApiModel):
    """What the llm_judge scorers' judges consumed."""

    model_config = ConfigDict(extra="ignore")

    requests: int = Field(default=0, description="Judge requests sent, retries included.")
    input_tokens: int = Field(default=0, description="Input tokens reported by the judge.")
    output_tokens: int = Field(default=0, description="Output tokens reported by the judge.")
    prompt_cache_tokens: int = Field(
        default=0, description="Input tokens the judge's provider read from its prompt cache."
    )
    timed_out: int = Field(
        default=0,
        description="Judge requests whose answer never came, each costed at its worst case.",
    )
    truncated: int = Field(default=0, description="Judge answers cut at maxTokens.")
    cost_usd: str = Field(
        default="0", alias="costUSD", description="Cost in USD from the judges' pricing."
    )


class Usage(ApiModel):
    """What the run consumed. Token counts are what the provider reported in its answers."""

    model_config = ConfigDict(extra="ignore")

    requests: int = Field(
        default=0, description="Requests sent to the model under evaluation, retries included."
    )
    input_tokens: int = Field(default=0, description="Input tokens reported by the provider.")
    output_tokens: int = Field(default=0, description="Output tokens reported by the provider.")
    prompt_cache_tokens: int = Field(
        default=0,
        description=(
            "Input tokens the provider reported as read from its own prompt cache (OpenAI "
            "prompt_tokens_details.cached_tokens, Anthropic cache_read_input_tokens); they are "
            "part of inputTokens."
        ),
    )
    cache_hits: int = Field(
        default=0,
        description=(
            "Answers served from the EvalSuite's response cache instead of the model (0 for a "
            "standalone Evaluation, which has no cache): answers of this run asked again (a "
            "retried shard, a repeated prompt), or with execution.cache.reuse AcrossRuns "
            "answers of earlier runs."
        ),
    )
    timed_out: int = Field(
        default=0,
        description=(
            "Requests sent whose answer never came (timed out, or abandoned when the shard "
            "stopped). The provider may have processed them, so each is in costUSD (and the "
            "budget) at its worst case; their tokens are unknown and not in the token counts."
        ),
    )
    truncated: int = Field(
        default=0,
        description=(
            "Answers cut at maxTokens (OpenAI finish_reason length, Anthropic stop_reason "
            "max_tokens): scored as they are, but above 5% of the answers the run says so."
        ),
    )
    cost_usd: str = Field(
        default="0",
        alias="costUSD",
        description=(
            "Cost in USD of the model's requests from model.pricing (decimal string): "
            "answered requests at their reported tokens, timed-out ones at their worst case; "
            "budgets apply to this plus judge.costUSD."
        ),
    )
    cache_saved_usd: str = Field(
        default="0",
        alias="cacheSavedUSD",
        description=(
            "What the answers served from the response cache (cacheHits) would have cost at "
            "model.pricing (decimal string). They were not sent, so they are not in costUSD "
            "nor charged to the budget."
        ),
    )
    judge: JudgeUsage | None = Field(
        default=None, description="llm_judge requests, counted apart from the model's."
    )


class EvaluationStatus(ApiModel):
    """What the operator observed; rebuilt from the Job and its pods."""

    model_config = ConfigDict(extra="ignore")

    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = Field(
        default=None, description="Pending, Running, Succeeded or Failed (for display)."
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status reflects."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing, Succeeded, Failed and Passed conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    progress: Progress | None = Field(default=None, description="Sample counts.")
    results: list[ScoreResult] = Field(
        default_factory=list,
        description="Per-scorer aggregates; the first is the main score.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    usage: Usage | None = Field(
        default=None, description="Requests, tokens, timeouts, truncated answers and cost."
    )
    start_time: str | None = Field(default=None, description="When the run's Job was created.")
    completion_time: str | None = Field(default=None, description="When the run finished.")
    job_name: str | None = Field(default=None, description="Name of the run's Indexed Job.")
    run_generation: int | None = Field(
        default=None, description="The .metadata.generation the current run was started from."
    )
    rerun_token: str | None = Field(
        default=None,
        description=f"Value of the {RERUN_ANNOTATION} annotation the current run answers.",
    )
    dataset_source: str | None = Field(
        default=None,
        description='Where the current run\'s samples come from, e.g. "builtin arithmetic" (for '
        "display: kubectl get -o wide).",
    )
    stopped_early: StoppedEarly | None = Field(
        default=None,
        alias="stoppedEarly",
        description="Set when execution.earlyStop stopped the run before its last sample.",
    )
    task_source: str | None = Field(
        default=None,
        description="For an lm-eval task (task.preset or task.lmEval): which task the current "
        'run is, with its version and few-shot count, e.g. "lm-eval 0.4.13 gsm8k version 3.0, '
        '5-shot".',
    )


EVALUATION_PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
    {
        "name": "Score",
        "type": "number",
        "format": "float",
        "description": "Mean of the first scorer",
        "jsonPath": ".status.results[0].value",
    },
    {
        "name": "Passed",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Passed")].status',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Reason",
        "type": "string",
        "priority": 1,
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    },
    {"name": "Dataset", "type": "string", "priority": 1, "jsonPath": ".status.datasetSource"},
    {"name": "Task", "type": "string", "priority": 1, "jsonPath": ".status.taskSource"},
    {
        "name": "Stopped",
        "type": "string",
        "priority": 1,
        "description": "Why execution.earlyStop stopped the run early",
        "jsonPath": ".status.stoppedEarly.reason",
    },
    {"name": "Job", "type": "string", "priority": 1, "jsonPath": ".status.jobName"},
    {"name": "Cost", "type": "string", "priority": 1, "jsonPath": ".status.usage.costUSD"},
]


class Evaluation(BaseModel):
    """An Evaluation runs one model on one dataset with scorers, as a sharded Indexed Job, and
    writes progress, scores with confidence intervals, usage, cost and pass/fail to its status."""

    model_config = ConfigDict(
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={
            "x-crd": {
                "plural": "evaluations",
                "singular": "evaluation",
                "shortNames": ["evl"],
                "categories": ["evals"],
                "printerColumns": EVALUATION_PRINTER_COLUMNS,
            }
        },
    )

    api_version: Literal["evals.io/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["Evaluation"] = "Evaluation"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: EvaluationSpec = Field(description="The desired evaluation.")
    status: EvaluationStatus | None = Field(default=None, description="The observed state.")
