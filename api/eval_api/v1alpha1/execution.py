"""spec.execution and spec.budget: how a run is spread over pods (shards, retries, deadline,
resources, placement, image, the errored-sample bound, response-cache reuse, early stopping)
and the spend limits that stop it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from eval_api.v1alpha1.common import (
    DECIMAL_PATTERN,
    FRACTION_PATTERN,
    IMAGE_PATTERN,
    ApiModel,
    ResourceRequirements,
    cel_rule,
)


class Toleration(ApiModel):
    """A pod toleration, as in core/v1."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.operator) || self.operator != 'Exists' || !has(self.value) "
                    "|| self.value == ''",
                    "value must be empty when operator is Exists",
                    ".value",
                ),
                cel_rule(
                    "has(self.key) || (has(self.operator) && self.operator == 'Exists')",
                    "an empty key requires operator Exists (it matches every taint)",
                    ".operator",
                ),
            ]
        }
    )

    key: str | None = Field(default=None, description="Taint key; empty matches all keys.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (default Equal)."
    )
    value: str | None = Field(default=None, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


CACHE_WITHIN_RUN = "WithinRun"
CACHE_ACROSS_RUNS = "AcrossRuns"


class ResponseCacheUse(ApiModel):
    """Which answers of the response cache (an EvalSuite's) a run may use."""

    reuse: Literal["WithinRun", "AcrossRuns"] = Field(
        default=CACHE_WITHIN_RUN,
        description=(
            "WithinRun (default): an answer is reused only inside the run that asked the "
            "model (a retried or resumed shard, a prompt asked twice); every new run (an "
            "evals.io/rerun, a suite re-run, a scheduled run) asks the model again, so it "
            "measures the model as it is now. AcrossRuns: an answer any earlier run got from "
            "the same endpoint (whole base URL), model, parameters and messages is reused "
            "while it lives (the suite's cache.ttlSeconds): cheaper, but a model redeployed "
            "under the same URL and name is not asked again. usage.cacheHits counts the "
            "answers that came from the cache, and a suite's comparison whose answers are "
            "mostly the baseline's own says so (reason CachedAnswers) instead of reporting no "
            "regression."
        ),
    )


# A confidence in [0.5, 1), e.g. "0.95"; a width in (0, 1), e.g. "0.05"; at most 6 decimals
# (a confidence of 0.99999999999999999 would be 1 as a float: no interval is that sure).
CONFIDENCE_PATTERN = r"^0\.(5[0-9]{0,5}|[6-9][0-9]{0,5})$"
WIDTH_PATTERN = (
    r"^0\.([1-9][0-9]{0,5}|0[1-9][0-9]{0,4}|00[1-9][0-9]{0,3}|000[1-9][0-9]{0,2}"
    r"|0000[1-9][0-9]?|00000[1-9])$"
)
EARLY_STOP_VERDICT = "Verdict"
EARLY_STOP_PRECISION = "Precision"


class EarlyStopSpec(ApiModel):
    """Stop the run once its answer is known, paying only for the samples it needs.

    Samples are asked in a seeded random order over the whole dataset, and the operator
    evaluates an anytime-valid confidence sequence of each scorer's mean (Howard et al. 2021's
    beta-binomial mixture) on the shards' live sums: unlike an ordinary interval watched as
    samples arrive, it covers the mean at every sample size at once with probability
    `confidence`, so stopping the first time it clears a threshold keeps that guarantee."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "self.when != 'Precision' || has(self.ciWidth)",
                    "when Precision requires ciWidth",
                    ".ciWidth",
                ),
                cel_rule(
                    "self.when == 'Precision' || !has(self.ciWidth)",
                    "ciWidth is used only with when Precision",
                    ".ciWidth",
                ),
            ]
        }
    )

    when: Literal["Verdict", "Precision"] = Field(
        description=(
            "Verdict: stop once every threshold is decided, its scorer's confidence sequence "
            "wholly above or below it (the thresholds share 1 - confidence, so the whole "
            "verdict is right with probability confidence; an == threshold is never decided). "
            "Precision: stop once the first result's confidence sequence is at most ciWidth "
            "wide."
        )
    )
    ci_width: str | None = Field(
        default=None,
        alias="ciWidth",
        pattern=WIDTH_PATTERN,
        max_length=32,
        description=(
            'With when Precision: the interval width to reach, a decimal in (0, 1), e.g. "0.05".'
        ),
    )
    confidence: str = Field(
        default="0.95",
        pattern=CONFIDENCE_PATTERN,
        max_length=32,
        description=(
            "The probability, in [0.5, 1), that the early verdict (or interval) is right "
            '(default "0.95").'
        ),
    )
    min_samples: int = Field(
        default=30,
        ge=1,
        le=10_000_000,
        description=(
            "No stop before this many samples are scored (default 30): the guarantee holds "
            "without it; it guards against a model whose first answers are not like the rest "
            "(a cold endpoint)."
        ),
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description=(
            "Seed of the random order the samples are asked in (the guarantee needs one; "
            "each shard asks its own slice of it; task.groupField's groups stay whole)."
        ),
    )


class ExecutionSpec(ApiModel):
    """How the run is spread over pods."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.parallelism) || self.parallelism <= self.shards",
                    "parallelism cannot exceed shards",
                    ".parallelism",
                )
            ]
        }
    )

    shards: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Number of pods (Indexed Job completions); each scores a deterministic slice.",
    )
    parallelism: int | None = Field(
        default=None, ge=1, le=1000, description="Shards running at once (default: all)."
    )
    backoff_limit_per_index: int = Field(
        default=2, ge=0, le=20, description="Retries of one shard before it counts as failed."
    )
    active_deadline_seconds: int = Field(
        default=86400,
        ge=1,
        le=31_536_000,
        description=(
            "Wall-clock limit of the whole run in seconds (default one day): past it the Job "
            "stops its pods and the run fails with reason DeadlineExceeded, so a run stuck on "
            "a hung endpoint never holds its quota forever."
        ),
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Runner pod resources (operator default when omitted)."
    )
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] | None = Field(
        default=None, max_length=32, description="Node labels the runner pods must match."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=32, description="Tolerations of the runner pods."
    )
    image: str | None = Field(
        default=None,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description=(
            "Runner image override (operator default when omitted), e.g. "
            "registry.example/eval-runner:0.2.0 or with @sha256:<digest>."
        ),
    )
    max_errored_fraction: str = Field(
        default="0.05",
        pattern=FRACTION_PATTERN,
        max_length=32,
        description=(
            "Largest share of errored samples (never scored) a run may have, a decimal in "
            '[0, 1] (default "0.05"). Above it the run fails with reason TooManyErrors and is '
            "never Passed, whatever its scores: a score over the few samples that got through "
            "says little about the model. A run that scored no sample fails in any case."
        ),
    )
    early_stop: EarlyStopSpec | None = Field(
        default=None,
        alias="earlyStop",
        description=(
            "Stop the run once its verdict (or the first result's precision) is known: see "
            "status.stoppedEarly. Without it every sample is asked."
        ),
    )
    cache: ResponseCacheUse = Field(
        default_factory=ResponseCacheUse,
        description=(
            "The response cache (inside an EvalSuite, or `eval-runner run --cache`): "
            "answers are reused within a run only, unless reuse is AcrossRuns."
        ),
    )


class BudgetSpec(ApiModel):
    """Limits that stop the run cleanly when reached: no new request starts, requests in flight
    finish, the results so far are kept, and the run fails with reason BudgetExceeded.

    Sharded runs split each limit over the shards (maxRequests as whole numbers with the
    remainder going to the lowest shards, maxCostUSD as decimals rounded down), so the sum can
    never exceed it. Cost is known only after an answer, so before every request the runner
    reserves its worst case (every byte of the prompt as a token, plus 8 per message and 16,
    and the full maxTokens of output, at model.pricing) and starts it only if what was spent
    plus what is reserved stays within the shard's share."""

    max_cost_usd: str | None = Field(
        default=None,
        alias="maxCostUSD",
        pattern=DECIMAL_PATTERN,
        max_length=32,
        description=(
            'Maximum spend in USD, e.g. "5.00", over the model and its judges; requires '
            "model.pricing (and pricing for every judge), and model.parameters.maxTokens for "
            "provider openai (the output bound of the worst case)."
        ),
    )
    max_requests: int | None = Field(
        default=None,
        ge=1,
        description="Maximum number of HTTP requests, retries and judge requests included.",
    )
