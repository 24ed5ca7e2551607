"""The evals.io/v1alpha1 API as typed models: the one source of truth.

The CRDs in crds/ are generated from these classes (see crdgen.py), the operator
and the runner parse manifests with them, and the field descriptions become what
`kubectl explain` prints. Decimals (temperature, prices, budgets, tolerances) are
strings checked by a pattern and parsed as Decimal, as the API conventions ask.
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from eval_api import cel

GROUP = "evals.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Datasets shipped inside the runner package (runner/eval_runner/datasets/);
# a unit test keeps this list and the files in step.
BUILTIN_DATASETS = ("arithmetic", "capitals", "sentiment")

DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
# A decimal in [0, 1], e.g. "0.05".
FRACTION_PATTERN = r"^(0(\.[0-9]+)?|1(\.0+)?)$"
SIGNED_DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SCORER_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
# "<scorer> <op> <number>", e.g. "exact_match >= 0.8".
THRESHOLD_PATTERN = r"^[a-z][a-z0-9_]* *(>=|<=|>|<|==) *[0-9]+(\.[0-9]+)?$"
THRESHOLD_RE = re.compile(
    r"^(?P<scorer>[a-z][a-z0-9_]*) *(?P<op>>=|<=|>|<|==) *(?P<value>[0-9]+(\.[0-9]+)?)$"
)

# Every scorer's per-sample values lie in this range, so every mean and threshold does too.
SCORE_RANGE = (Decimal(0), Decimal(1))

# dataset.maxBytes: its default, and the largest value accepted (a runner pod's memory holds the
# whole file while it is parsed).
DEFAULT_DATASET_MAX_BYTES = 256 * 1024 * 1024
MAX_DATASET_BYTES_LIMIT = 16 * 1024 * 1024 * 1024

# Annotation whose new value asks the operator to run a finished Evaluation again.
RERUN_ANNOTATION = f"{GROUP}/rerun"


def cel_rule(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One x-kubernetes-validations entry; the CRD generator copies these verbatim."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def exactly_one_of(*fields: str) -> str:
    return " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields) + " == 1"


def _rules(extra: Any) -> list[dict[str, str]]:
    return (
        list((extra or {}).get("x-kubernetes-validations") or []) if isinstance(extra, dict) else []
    )


class ApiModel(BaseModel):
    """Base: camelCase on the wire, unknown fields rejected (a typo is an error, not a no-op).

    Its validator evaluates the model's CEL rules (and those of its fields) in Python, the same
    texts the CRD gives the apiserver: a manifest read outside a cluster is held to exactly
    the rules `kubectl apply` enforces. Each rule is written once. An object the apiserver
    already admitted is validated with context=cel.ADMITTED: its rules are not evaluated twice.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )

    @model_validator(mode="after")
    def _cel_rules(self, info: ValidationInfo) -> Any:
        if info.context and info.context.get("admitted"):
            return self
        cls = type(self)
        model_rules = _rules(cls.model_config.get("json_schema_extra"))
        field_rules = [
            (name, rule)
            for name, info in cls.model_fields.items()
            for rule in _rules(info.json_schema_extra)
        ]
        if not model_rules and not field_rules:
            return self
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        failed = [
            rule
            for rule in model_rules
            if not cel.is_transition_rule(rule["rule"]) and not cel.holds(rule["rule"], data)
        ]
        for name, rule in field_rules:
            alias = cls.model_fields[name].alias or name
            if cel.is_transition_rule(rule["rule"]):
                continue
            if alias in data and not cel.holds(rule["rule"], data[alias]):
                failed.append(rule)
        if failed:
            raise ValueError("; ".join(_describe(rule) for rule in failed))
        return self


def _describe(rule: dict[str, str]) -> str:
    where = rule.get("fieldPath", "").lstrip(".")
    return f"{where}: {rule['message']}" if where else rule["message"]


class SecretKeySelector(ApiModel):
    """A key of a Secret in the Evaluation's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")
    key: str = Field(min_length=1, max_length=253, description="Key inside the Secret's data.")


class ConfigMapKeySelector(ApiModel):
    """A key of a ConfigMap in the Evaluation's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the ConfigMap.")
    key: str = Field(min_length=1, max_length=253, description="Key inside the ConfigMap's data.")


class CABundleSource(ApiModel):
    """A PEM bundle of CA certificates to trust for the model endpoint."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    exactly_one_of("configMapRef", "secretRef"),
                    "exactly one of configMapRef or secretRef must be set",
                )
            ]
        }
    )

    config_map_ref: ConfigMapKeySelector | None = Field(
        default=None, description="ConfigMap key holding the PEM bundle."
    )
    secret_ref: SecretKeySelector | None = Field(
        default=None, description="Secret key holding the PEM bundle."
    )


class ModelParameters(ApiModel):
    """Sampling parameters sent with every request."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.temperature) || double(self.temperature) <= 2.0",
                    "temperature must be between 0 and 2",
                    ".temperature",
                ),
                cel_rule(
                    "!has(self.topP) || double(self.topP) <= 1.0",
                    "topP must be between 0 and 1",
                    ".topP",
                ),
            ]
        }
    )

    temperature: str | None = Field(
        default=None,
        pattern=DECIMAL_PATTERN,
        max_length=32,
        description='Sampling temperature as a decimal string from "0" to "2", e.g. "0.7".',
    )
    max_tokens: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Maximum number of tokens to generate."
    )
    top_p: str | None = Field(
        default=None,
        pattern=DECIMAL_PATTERN,
        max_length=32,
        description='Nucleus sampling mass as a decimal string from "0" to "1", e.g. "0.9".',
    )
    stop: list[Annotated[str, Field(max_length=256)]] | None = Field(
        default=None,
        max_length=8,
        description="Stop sequences (at most 8, each at most 256 characters).",
    )
    seed: int | None = Field(
        default=None, description="Seed for providers that support reproducible sampling."
    )


class Pricing(ApiModel):
    """Prices in US dollars per million tokens, used to compute status.usage.costUSD."""

    input_per_million_usd: str = Field(
        alias="inputPerMillionUSD",
        pattern=DECIMAL_PATTERN,
        max_length=32,
        description='USD per million input (prompt) tokens, e.g. "0.15".',
    )
    output_per_million_usd: str = Field(
        alias="outputPerMillionUSD",
        pattern=DECIMAL_PATTERN,
        max_length=32,
        description='USD per million output (completion) tokens, e.g. "0.60".',
    )

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        million = Decimal(1_000_000)
        return (
            Decimal(self.input_per_million_usd) * input_tokens
            + Decimal(self.output_per_million_usd) * output_tokens
        ) / million


class EndpointSpec(ApiModel):
    """A model endpoint and how to call it (shared by the model under evaluation and judges)."""

    provider: Literal["openai", "anthropic"] = Field(
        default="openai",
        description=(
            "API flavour: openai is any OpenAI-compatible chat-completions endpoint "
            "(OpenAI, vLLM, Ollama, TGI, LiteLLM); anthropic is the Anthropic Messages API."
        ),
    )
    name: str = Field(min_length=1, max_length=256, description="Model name sent in each request.")
    base_url: str | None = Field(
        default=None,
        alias="baseURL",
        max_length=2048,
        pattern=r"^https?://",
        description=(
            "Endpoint base URL, e.g. http://vllm.models:8000/v1. Defaults to the provider's "
            "public API."
        ),
    )
    api_key_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description=(
            "Secret key holding the API key. It is mounted into runner pods as an environment "
            "variable and never copied anywhere else. Omit for endpoints without auth."
        ),
    )
    parameters: ModelParameters = Field(
        default_factory=ModelParameters, description="Sampling parameters."
    )
    max_concurrency: int = Field(
        default=8, ge=1, le=1024, description="Upper bound of concurrent requests per shard."
    )
    requests_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Request rate limit per shard (a token bucket holding one second's worth).",
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=100_000_000,
        description=(
            "Token rate limit per shard: a request is charged its estimated prompt tokens plus "
            "maxTokens up front and corrected to the reported usage afterwards."
        ),
    )
    timeout_seconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        description=(
            "Timeout of one request; a timed-out request is retried like a 5xx, and costs its "
            "worst case (the provider may have processed it): see status.usage.timedOut."
        ),
    )
    unreachable_after_seconds: int = Field(
        default=120,
        ge=1,
        le=86400,
        description=(
            "How long the endpoint may refuse connections (or not resolve, or fail its TLS "
            "handshake) with no answer in between before the shard stops with reason "
            "EndpointUnreachable. Samples waiting for the endpoint's circuit breaker use none "
            "of their retries meanwhile. One never answered (a wrong baseURL) gets 10 s at most."
        ),
    )
    pricing: Pricing | None = Field(
        default=None, description="Token prices, to report cost and enforce budget.maxCostUSD."
    )


class ModelSpec(EndpointSpec):
    """The model under evaluation and how to reach it."""

    ca_bundle: CABundleSource | None = Field(
        default=None,
        description=(
            "CA bundle for endpoints behind a private CA (trusted for llm_judge endpoints too)."
        ),
    )


class JudgeSpec(EndpointSpec):
    """The model that grades answers for an llm_judge scorer. Its requests go through the same
    concurrency limit, rate limits, retries and budget as the model's, and are counted apart in
    status.usage.judge. Its key is mounted from its own apiKeySecretRef."""


class DatasetSpec(ApiModel):
    """Where the samples come from: exactly one of builtin, configMapRef, inline or url."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    exactly_one_of("builtin", "configMapRef", "inline", "url"),
                    "exactly one of builtin, configMapRef, inline or url must be set",
                ),
                cel_rule(
                    "!has(self.url) || has(self.sha256)",
                    "url requires sha256, so a changed file is detected",
                    ".sha256",
                ),
                cel_rule(
                    "!has(self.sha256) || has(self.url)",
                    "sha256 is only meaningful with url",
                    ".sha256",
                ),
                cel_rule(
                    "!has(self.maxBytes) || has(self.url) || has(self.configMapRef)",
                    "maxBytes applies to url and configMapRef datasets only",
                    ".maxBytes",
                ),
            ]
        }
    )

    builtin: Literal[BUILTIN_DATASETS] | None = Field(  # type: ignore[valid-type]
        default=None, description="A small dataset shipped in the runner image."
    )
    config_map_ref: ConfigMapKeySelector | None = Field(
        default=None, description="A ConfigMap key holding the dataset file."
    )
    inline: list[dict[str, Any]] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Records given in the manifest (at most 1000; use a ConfigMap or url beyond).",
    )
    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://",
        description="HTTP(S) URL of the dataset file; requires sha256.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[a-f0-9]{64}$",
        description=(
            "Hex SHA-256 of the file at url, checked before the file is parsed; a mismatch "
            "fails the run (DatasetChecksumMismatch)."
        ),
    )
    max_bytes: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DATASET_BYTES_LIMIT,
        description=(
            "Size limit in bytes of the file at url or of the configMapRef file (default "
            "268435456, 256 MiB). A download stops as soon as it passes the limit, and the run "
            "fails with reason DatasetTooLarge. A url is fetched once per pod (into /tmp), "
            "following at most 5 redirects."
        ),
    )
    format: Literal["jsonl", "json", "csv"] | None = Field(
        default=None,
        description=(
            "File format of configMapRef or url; inferred from the key or URL suffix when omitted."
        ),
    )
    input_field: str = Field(
        default="input", min_length=1, description="Record field holding the model input."
    )
    target_field: str = Field(
        default="target", min_length=1, description="Record field holding the expected answer."
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Use only the first N records (after shuffling).",
    )
    shuffle_seed: int | None = Field(
        default=None, description="Shuffle the records with this seed before limit and sharding."
    )

    @property
    def effective_max_bytes(self) -> int:
        return DEFAULT_DATASET_MAX_BYTES if self.max_bytes is None else self.max_bytes

    def source(self) -> str:
        """Where the samples come from, in a few words (status.datasetSource)."""
        if self.builtin is not None:
            return f"builtin {self.builtin}"
        if self.config_map_ref is not None:
            return f"configMap {self.config_map_ref.name}/{self.config_map_ref.key}"
        if self.inline is not None:
            return f"inline, {len(self.inline)} records"
        url = self.url or ""
        return f"url {url if len(url) <= 80 else url[:77] + '...'}"


class FewShotExample(ApiModel):
    """A worked example shown to the model before each sample."""

    input: str = Field(description="The example's input, rendered through promptTemplate.")
    target: str = Field(description="The answer the assistant gives in the example.")


ScorerType = Literal[
    "exact_match", "contains", "regex", "numeric", "token_f1", "json_valid", "llm_judge"
]
Normalization = Literal[
    "lowercase", "strip", "collapse_whitespace", "strip_punctuation", "remove_articles"
]


class ScorerSpec(ApiModel):
    """One scorer: its result appears in status.results under its name."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "self.type != 'regex' || has(self.pattern)",
                    "a regex scorer requires pattern",
                    ".pattern",
                ),
                cel_rule(
                    "self.type == 'regex' || !has(self.pattern)",
                    "pattern is only used by the regex scorer",
                    ".pattern",
                ),
                cel_rule(
                    "self.type == 'numeric' || !has(self.tolerance)",
                    "tolerance is only used by the numeric scorer",
                    ".tolerance",
                ),
                cel_rule(
                    "self.type != 'llm_judge' || (has(self.judge) && has(self.rubric))",
                    "an llm_judge scorer requires judge and rubric",
                    ".judge",
                ),
                cel_rule(
                    "self.type == 'llm_judge' || (!has(self.judge) && !has(self.rubric))",
                    "judge and rubric are only used by the llm_judge scorer",
                    ".judge",
                ),
            ]
        }
    )

    type: ScorerType = Field(
        description=(
            "exact_match: normalised output equals target; contains: output contains target; "
            "regex: pattern extracts the answer (group 1, else the whole match) and it is "
            "compared to target, or, with no target, a match scores 1; numeric: the last number "
            "in the output is within tolerance of target; token_f1: token-level F1 against target; "
            "json_valid: output parses as JSON; llm_judge: the judge model grades the output "
            "with rubric."
        )
    )
    name: str | None = Field(
        default=None,
        pattern=SCORER_NAME_PATTERN,
        max_length=63,
        description="Name in results and thresholds; defaults to type. Must be unique.",
    )
    normalize: list[Normalization] = Field(
        default_factory=lambda: ["strip"],
        max_length=5,
        description="Normalisations applied to output and target before comparing.",
    )
    pattern: str | None = Field(
        default=None, max_length=1024, description="Regular expression (Python syntax) for regex."
    )
    tolerance: str | None = Field(
        default=None,
        pattern=DECIMAL_PATTERN,
        max_length=32,
        description='Absolute tolerance for numeric, e.g. "0.01" (default "0").',
    )
    judge: JudgeSpec | None = Field(
        default=None, description="llm_judge only: the model that grades the answers."
    )
    rubric: str | None = Field(
        default=None,
        min_length=1,
        max_length=65536,
        description=(
            "llm_judge only: sandboxed Jinja2 template of the judge's prompt, with variables "
            "input, target and output. The reply becomes a score in [0, 1] by the first rule "
            'that matches: "score: x" or "score = x" (x a number, or a fraction "x/y"); else a '
            "PASS or FAIL word (1 or 0); else a reply that is only a number or fraction. A "
            "value outside [0, 1] or a reply matching no rule is unparsable: the sample counts "
            "as errored (class judge_unparsable), never as 0."
        ),
    )

    @property
    def effective_name(self) -> str:
        return self.name or self.type


UNIQUE_SCORER_NAMES = (
    "self.all(a, self.exists_one(b, (has(b.name) ? b.name : b.type) == "
    "(has(a.name) ? a.name : a.type)))"
)


class TaskSpec(ApiModel):
    """How each sample becomes a prompt, and how answers are scored."""

    prompt_template: str = Field(
        default="{{ input }}",
        min_length=1,
        max_length=65536,
        description=(
            "Sandboxed Jinja2 template of the user message. Variables: input, target and every "
            "field of the record."
        ),
    )
    system_prompt: str | None = Field(
        default=None,
        min_length=1,
        max_length=65536,
        description="System message sent before the examples.",
    )
    few_shot: list[FewShotExample] = Field(
        default_factory=list,
        max_length=32,
        description="Examples sent as prior user/assistant turns (at most 32).",
    )
    group_field: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description=(
            "Record field naming the group a sample belongs to (e.g. the passage several "
            "questions share): samples of one group are not independent, so the standard "
            "errors and ci95 are clustered by it. Every record must have the field; the "
            "samples of a group are scored in one shard."
        ),
    )
    scorers: list[ScorerSpec] = Field(
        min_length=1,
        max_length=16,
        description="Scorers applied to every answer; the first is the main score.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    UNIQUE_SCORER_NAMES, "scorer names (name, or type when unnamed) must be unique"
                )
            ]
        },
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


# A Kubernetes resource.Quantity (the apiserver's syntax: 500m, 1.5Gi, 2e3, 128974848), never
# negative (the apiserver rejects negative resources).
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = (
    Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]
)
# An OCI image reference (distribution's grammar): [registry[:port]/]path[:tag][@digest].
IMAGE_PATTERN = (
    r"^(([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*"
    r"(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(@[a-zA-Z][a-zA-Z0-9]*([-_+.][a-zA-Z][a-zA-Z0-9]*)*"
    r":[0-9a-fA-F]{32,})?$"
)


class ResourceRequirements(ApiModel):
    """CPU and memory for each runner pod, as in core/v1."""

    requests: dict[str, Quantity] | None = Field(
        default=None,
        max_length=16,
        description='Requested resources, e.g. {cpu: "500m", memory: 256Mi} (quantities).',
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, max_length=16, description="Resource limits (quantities)."
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


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the object.")


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
                    "self.model.provider == 'anthropic' || (has(self.model.parameters) && "
                    "has(self.model.parameters.maxTokens))",
                    "budget.maxCostUSD requires model.parameters.maxTokens (the output bound of "
                    "a request's worst-case cost)",
                    ".budget.maxCostUSD",
                ),
                cel_rule(
                    "!has(self.budget) || !has(self.budget.maxCostUSD) || "
                    "self.task.scorers.all(s, !has(s.judge) || has(s.judge.pricing))",
                    "budget.maxCostUSD requires the pricing of every llm_judge scorer's judge",
                    ".budget.maxCostUSD",
                ),
                cel_rule(
                    "!has(self.budget) || !has(self.budget.maxCostUSD) || "
                    "self.task.scorers.all(s, !has(s.judge) || s.judge.provider == 'anthropic' "
                    "|| (has(s.judge.parameters) && has(s.judge.parameters.maxTokens)))",
                    "budget.maxCostUSD requires parameters.maxTokens of every openai llm_judge "
                    "scorer's judge (the output bound of a request's worst-case cost)",
                    ".budget.maxCostUSD",
                ),
            ]
        }
    )

    model: ModelSpec = Field(description="The model under evaluation.")
    dataset: DatasetSpec = Field(description="The samples.")
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


class Threshold(BaseModel):
    scorer: str
    op: Literal[">=", "<=", ">", "<", "=="]
    value: Decimal

    def holds(self, score: float) -> bool:
        observed = Decimal(str(score))
        return {
            ">=": observed >= self.value,
            "<=": observed <= self.value,
            ">": observed > self.value,
            "<": observed < self.value,
            "==": observed == self.value,
        }[self.op]


def parse_threshold(text: str) -> Threshold:
    match = THRESHOLD_RE.match(text)
    if not match:
        raise ValueError(f"threshold {text!r} is not '<scorer> <op> <number>'")
    return Threshold(scorer=match["scorer"], op=match["op"], value=Decimal(match["value"]))


# --- status ---------------------------------------------------------------------------------


class Condition(ApiModel):
    """A condition in the shape of the Kubernetes API conventions (metav1.Condition)."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(description="Condition type, e.g. Ready, Progressing, Succeeded, Passed.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the condition was set for."
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
    n: int = Field(description="Number of scored samples.")


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


class ObjectMeta(BaseModel):
    """The parts of metadata the operator and runner read."""

    model_config = ConfigDict(extra="allow")

    name: str = "evaluation"
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


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


# --- EvalSuite ------------------------------------------------------------------------------
#
# An EvalSuite brings up the evaluation stack (the per-sample store, the response cache) that
# Evaluations with spec.suiteRef run inside. The matrix (models, tasks, baseline, schedule) and
# the platform parts (tls, monitoring, dashboard, networkPolicy) are later fields of this spec.

# An object field whose absence means its defaults: a `default` on the object makes the
# apiserver fill in the nested defaults too, so what is stored (and what GitOps tools diff) is
# what the models read. The apiserver checks the object's CEL rules on the default as written
# (nested defaults not applied), so a default names the fields its rules read.
DEFAULTED_OBJECT = {"default": {}}
DEFAULT_MANAGED = {"default": {"mode": "Managed"}}

# A cron schedule of five fields (minute hour day-of-month month day-of-week) or a macro such
# as @daily; the operator parses it with croniter and reports what it cannot (InvalidSpec).
CRON_PATTERN = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"


def time_zone_rule() -> dict[str, str]:
    """A time zone as a CronJob's validation takes it: a name of the tz database (CEL reads a
    timestamp in it, which fails for any other name), not "Local" (the apiserver's own zone)
    nor an offset such as +01:00. The operator checks it again with zoneinfo, its own database,
    for the objects admitted before this rule."""
    return cel_rule(
        "!has(self.timeZone) || (self.timeZone.lowerAscii() != 'local' && "
        "!self.timeZone.contains(':') && "
        "timestamp('2000-01-01T00:00:00Z').getFullYear(self.timeZone) > 0)",
        "timeZone must be an IANA time zone such as Europe/Paris",
        ".timeZone",
    )


# postgresql.conf settings the operator owns (where the server listens, its files, TLS):
# spec.store.managed.parameters may not set them.
RESERVED_POSTGRES_PARAMETERS = (
    "listen_addresses",
    "port",
    "data_directory",
    "config_file",
    "hba_file",
    "ident_file",
    "unix_socket_directories",
    "external_pid_file",
    "ssl",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "archive_command",
    "restore_command",
)


# The store and the cache say which they are by `mode`, and take the settings of that mode only.
MODE_MEMBER_RULES = [
    cel_rule(
        "self.mode != 'External' || has(self.external)",
        "mode External needs external.secretRef",
        ".external",
    ),
    cel_rule(
        "self.mode == 'External' || !has(self.external)",
        "external is only for mode External",
        ".external",
    ),
    cel_rule(
        "self.mode == 'Managed' || !has(self.managed)",
        "managed is only for mode Managed",
        ".managed",
    ),
]


def volume_rules(what: str) -> list[dict[str, str]]:
    """What a PersistentVolumeClaim allows, said at `kubectl apply` of the suite: a size above
    zero that may grow (where the StorageClass allows expansion) but never shrink, and a
    StorageClass fixed once the volume exists."""
    return [
        cel_rule(
            # has(): the object's own default ({}) is validated before its fields' defaults.
            "!has(self.size) || quantity(self.size).isGreaterThan(quantity('0'))",
            f"the {what} volume's size must be more than 0",
            ".size",
        ),
        cel_rule(
            "!has(self.size) || !has(oldSelf.size) || "
            "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
            f"the {what} volume may grow but never shrink (a PersistentVolumeClaim cannot): "
            "keep size at least what it was",
            ".size",
        ),
        cel_rule(
            "has(self.storageClassName) == has(oldSelf.storageClassName) && "
            "(!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
            f"the {what} volume's storageClassName cannot change once it exists (a "
            "PersistentVolumeClaim's class is fixed)",
            ".storageClassName",
        ),
    ]


class StoreBackupSpec(ApiModel):
    """Scheduled dumps of the managed store: a CronJob runs `pg_dump -Fc` to a backup volume of
    its own and keeps the newest `retention` dumps."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [*volume_rules("backup"), time_zone_rule()]}
    )

    enabled: bool = Field(default=True, description="Take scheduled dumps (default true).")
    schedule: str = Field(
        default="0 3 * * *",
        max_length=128,
        pattern=CRON_PATTERN,
        description='Cron schedule of the dumps, five fields or a macro (default "0 3 * * *").',
    )
    time_zone: str | None = Field(
        default=None,
        max_length=64,
        description='IANA time zone of the schedule, e.g. "Europe/Paris" (default: UTC).',
    )
    retention: int = Field(
        default=7, ge=1, le=1000, description="Dumps kept; older ones are deleted (default 7)."
    )
    size: Quantity = Field(
        default="10Gi", description='Size of the backup volume (default "10Gi").'
    )
    storage_class_name: str | None = Field(
        default=None,
        max_length=253,
        description="StorageClass of the backup volume (default: the cluster's default class).",
    )


class ManagedStoreSpec(ApiModel):
    """A single-instance PostgreSQL StatefulSet run by the operator for this suite."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                *volume_rules("data"),
                cel_rule(
                    "!has(self.parameters) || self.parameters.all(k, !(k in ["
                    + ", ".join(f"'{name}'" for name in RESERVED_POSTGRES_PARAMETERS)
                    + "]))",
                    "parameters may not set "
                    + ", ".join(RESERVED_POSTGRES_PARAMETERS)
                    + " (the operator owns them)",
                    ".parameters",
                ),
                cel_rule(
                    "!has(self.parameters) || self.parameters.all(k, "
                    "k.matches('^[a-z][a-z0-9_.]*$'))",
                    "parameter names are lower-case postgresql.conf names, e.g. work_mem",
                    ".parameters",
                ),
                cel_rule(
                    # A value is written quoted on a line of postgresql.conf: a quote is
                    # doubled and a backslash escaped, but a line break would end the line
                    # (PostgreSQL refuses the file; what follows would be a setting of its own).
                    "!has(self.parameters) || self.parameters.all(k, "
                    "!self.parameters[k].matches('[\\\\x00-\\\\x1f\\\\x7f]'))",
                    "parameter values may not hold a line break or another control character",
                    ".parameters",
                ),
            ]
        }
    )

    image: str | None = Field(
        default=None,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description=(
            "PostgreSQL image (default: the operator's pinned official postgres image). It "
            "must be the official image or follow its conventions (docker-entrypoint.sh, "
            "POSTGRES_* variables, the postgres user with UID 999)."
        ),
    )
    size: Quantity = Field(default="10Gi", description='Size of the data volume (default "10Gi").')
    storage_class_name: str | None = Field(
        default=None,
        max_length=253,
        description="StorageClass of the data volume (default: the cluster's default class).",
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description=(
            "PostgreSQL's CPU and memory (default requests 250m/512Mi, limit 1Gi); "
            "shared_buffers and effective_cache_size follow the memory limit."
        ),
    )
    parameters: dict[str, Annotated[str, Field(max_length=256)]] | None = Field(
        default=None,
        max_length=64,
        description=(
            "postgresql.conf settings over the operator's tuned ones, e.g. {work_mem: 16MB}."
        ),
    )
    retain_on_delete: bool = Field(
        default=True,
        description=(
            "Keep the data volume and the credentials Secret when the suite is deleted "
            "(default true): a suite created again under the same name reattaches them. "
            "False deletes them with the suite."
        ),
    )
    backup: StoreBackupSpec = Field(
        default_factory=StoreBackupSpec,
        description="Scheduled dumps (on by default).",
        json_schema_extra=DEFAULTED_OBJECT,
    )


POSTGRES_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class ExternalStoreSpec(ApiModel):
    """A PostgreSQL database the suite does not run (CloudNativePG, RDS, Cloud SQL, ...)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!(self.sslmode in ['verify-ca', 'verify-full']) || has(self.caBundle)",
                    "sslmode verify-ca and verify-full need caBundle (the CA that signed the "
                    "server's certificate)",
                    ".caBundle",
                ),
            ]
        }
    )

    secret_ref: LocalObjectReference = Field(
        description=(
            "Secret in the shape of a CloudNativePG app Secret: key uri "
            "(postgresql://user:password@host:port/dbname), or keys host, port, dbname, "
            "username and password (port defaults to 5432). A CloudNativePG Cluster's "
            "<cluster>-app Secret works as it is."
        )
    )
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        default="require",
        description=(
            "libpq sslmode of every connection (default require: encrypted, server not "
            "verified; verify-full checks the certificate and the host name against "
            "caBundle)."
        ),
    )
    ca_bundle: CABundleSource | None = Field(
        default=None, description="CA bundle for sslmode verify-ca / verify-full."
    )


class StoreSpec(ApiModel):
    """Where per-sample results go: PostgreSQL, managed by the suite or external."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": MODE_MEMBER_RULES})

    mode: Literal["Managed", "External"] = Field(
        default="Managed",
        description="Managed (default): a PostgreSQL StatefulSet; External: store.external.",
    )
    managed: ManagedStoreSpec | None = Field(
        default=None, description="The managed PostgreSQL (defaults when omitted)."
    )
    external: ExternalStoreSpec | None = Field(default=None, description="The external database.")


class ManagedCacheSpec(ApiModel):
    """A Redis Deployment run by the operator: no persistence, least-recently-used eviction."""

    image: str | None = Field(
        default=None,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description="Redis image (default: the operator's pinned official redis image).",
    )
    max_memory: Quantity = Field(
        default="256Mi",
        description=(
            'Redis maxmemory (default "256Mi"): past it the least recently used answers are '
            "evicted (allkeys-lru). The container's memory limit is set above it."
        ),
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Redis's CPU and memory (default: from maxMemory)."
    )


class ExternalCacheSpec(ApiModel):
    """A Redis the suite does not run."""

    secret_ref: SecretKeySelector = Field(
        description=(
            "Secret key holding the URL, redis://[user:password@]host:port/db or rediss:// for TLS."
        )
    )


class CacheSpec(ApiModel):
    """The response cache: identical requests are answered from Redis, not the model."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": MODE_MEMBER_RULES})

    mode: Literal["Managed", "External", "Disabled"] = Field(
        default="Managed",
        description="Managed (default): a Redis Deployment; External: cache.external; Disabled.",
    )
    ttl_seconds: int = Field(
        default=604800,
        ge=60,
        le=31_536_000,
        description="How long a cached answer is kept, in seconds (default 604800, 7 days).",
    )
    managed: ManagedCacheSpec | None = Field(
        default=None, description="The managed Redis (defaults when omitted)."
    )
    external: ExternalCacheSpec | None = Field(default=None, description="The external Redis.")


# --- the matrix: models x tasks ---------------------------------------------------------------

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


def _unique_names(what: str) -> dict[str, str]:
    return cel_rule(
        "self.all(a, self.exists_one(b, b.name == a.name))", f"{what} names must be unique"
    )


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
    """One task of the matrix: a dataset, how it is prompted and scored, and its thresholds."""

    name: str = Field(
        min_length=1,
        max_length=MATRIX_NAME_MAX,
        pattern=DNS_LABEL_PATTERN,
        description="Name of the task in the matrix: a DNS label, part of its cells' names.",
    )
    dataset: DatasetSpec = Field(description="The samples, as an Evaluation's spec.dataset.")
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
    """When a cell counts as regressed against its baseline."""

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


# An IPv4 or IPv6 CIDR such as 10.0.0.0/8 (checked in full by the ipaddress module).
CIDR_PATTERN = r"^[0-9a-fA-F:.]+/[0-9]{1,3}$"


def _checked_cidrs(value: list[str] | None) -> list[str] | None:
    for cidr in value or []:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"{cidr!r} is not a CIDR such as 10.0.0.0/8") from None
    return value


class LabelSelectorRequirement(ApiModel):
    """A label selector requirement, as in meta/v1."""

    key: str = Field(min_length=1, max_length=317, description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] | None = Field(
        default=None,
        max_length=64,
        description="The values for In and NotIn (empty for Exists and DoesNotExist).",
    )


class LabelSelector(ApiModel):
    """Labels to match, as in meta/v1 (both parts must match; empty matches everything)."""

    match_labels: dict[str, str] | None = Field(default=None, max_length=32)
    match_expressions: list[LabelSelectorRequirement] | None = Field(default=None, max_length=32)


class NetworkPeer(ApiModel):
    """Pods selected by namespace labels, pod labels, or both (a NetworkPolicy peer)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "has(self.namespaceSelector) || has(self.podSelector)",
                    "a peer needs namespaceSelector, podSelector or both",
                )
            ]
        }
    )

    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose pods may connect (all pods in them)."
    )
    pod_selector: LabelSelector | None = Field(
        default=None,
        description=(
            "Pods that may connect: in the suite's namespace, or in the namespaces of "
            "namespaceSelector when both are set."
        ),
    )


class IPBlock(ApiModel):
    """Addresses, as a NetworkPolicy's ipBlock: a CIDR, less the CIDRs in except."""

    cidr: str = Field(
        pattern=CIDR_PATTERN, max_length=64, description="The addresses, e.g. 10.20.0.0/16."
    )
    except_: list[Annotated[str, Field(pattern=CIDR_PATTERN, max_length=64)]] | None = Field(
        default=None,
        alias="except",
        max_length=32,
        description="CIDRs within cidr that are left out.",
    )

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        _checked_cidrs([value])
        return value

    @field_validator("except_")
    @classmethod
    def _excepts(cls, value: list[str] | None) -> list[str] | None:
        return _checked_cidrs(value)


class EgressPeer(ApiModel):
    """Where the suite's pods may connect: an address block (ipBlock), or pods chosen by
    namespace labels, pod labels or both (a NetworkPolicy egress peer)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "has(self.ipBlock) != (has(self.namespaceSelector) || has(self.podSelector))",
                    "a peer is an ipBlock, or namespaceSelector and/or podSelector",
                )
            ]
        }
    )

    ip_block: IPBlock | None = Field(
        default=None, description="Addresses (outside the cluster, or a database's range)."
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose pods may be reached (all pods in them)."
    )
    pod_selector: LabelSelector | None = Field(
        default=None,
        description=(
            "Pods that may be reached: in the suite's namespace, or in the namespaces of "
            "namespaceSelector when both are set."
        ),
    )


class ExternalEgress(ApiModel):
    """Egress from the suite's clients of an external store or cache to where it runs."""

    to: list[EgressPeer] | None = Field(
        default=None,
        max_length=16,
        description="Where it is (default: any address).",
    )
    ports: list[Annotated[int, Field(ge=1, le=65535)]] | None = Field(
        default=None,
        max_length=8,
        description="Its TCP ports (default: 5432 for the store, 6379 for the cache).",
    )


DEFAULT_DASHBOARD_FROM = [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
]
DEFAULT_PROMETHEUS_FROM = [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
]


class SuiteNetworkPolicySpec(ApiModel):
    """NetworkPolicies the operator makes for the suite's pods: everything denied but what the
    stack needs (who may talk to whom is in the README)."""

    enabled: bool = Field(
        default=True,
        description=(
            "Make the suite's NetworkPolicies (default true): default deny for every pod of "
            "the suite, then the store only from the runners, the migration, cell report and "
            "backup Jobs; the cache only from the runners and the migration; the runners "
            "reach the store, the cache, DNS and the model endpoints, and accept the "
            "operator on their progress port. They take effect where the network plugin "
            "enforces NetworkPolicy."
        ),
    )
    model_egress_cidrs: list[Annotated[str, Field(pattern=CIDR_PATTERN, max_length=64)]] | None = (
        Field(
            default=None,
            alias="modelEgressCIDRs",
            max_length=32,
            description=(
                "Where the runners may send model (and judge) requests, as CIDRs (default: "
                "any address)."
            ),
        )
    )
    model_egress_ports: list[Annotated[int, Field(ge=1, le=65535)]] | None = Field(
        default=None,
        max_length=32,
        description=(
            "Ports of the model endpoints the runners may reach (default: 443, 80 and the "
            "port of every model's and judge's baseURL)."
        ),
    )

    dashboard_from: list[NetworkPeer] | None = Field(
        default=None,
        max_length=16,
        description=(
            "Who may open the dashboard (its port only): default the pods of the ingress "
            "controller's namespace, kubernetes.io/metadata.name ingress-nginx. kubectl "
            "port-forward reaches it whatever this says."
        ),
    )

    prometheus_from: list[NetworkPeer] | None = Field(
        default=None,
        max_length=16,
        description=(
            "With spec.monitoring: who may scrape the suite's metrics ports (dashboard, "
            "runners, store and cache exporters); default the pods of the namespace "
            "kubernetes.io/metadata.name monitoring (kube-prometheus-stack's usual one)."
        ),
    )

    store_egress: ExternalEgress | None = Field(
        default=None,
        description=(
            "With store.mode External: where the store's clients (runners, migration, cell "
            "reports, comparisons, dashboard) may reach it. Default: port 5432 at any "
            "address; name the database's addresses (ipBlock) or pods (selectors) and port "
            "to narrow it. Unused with a managed store."
        ),
    )
    cache_egress: ExternalEgress | None = Field(
        default=None,
        description=(
            "With cache.mode External: where the cache's clients (runners, migration, "
            "dashboard) may reach it. Default: port 6379 at any address. Unused otherwise."
        ),
    )

    @field_validator("model_egress_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str] | None) -> list[str] | None:
        return _checked_cidrs(value)


class DashboardRateLimit(ApiModel):
    """Per-client token buckets: a client (its address) may send `burst` requests at once,
    then `requestsPerSecond`; beyond that it gets 429 with Retry-After."""

    requests_per_second: int = Field(
        default=20, ge=1, le=100_000, description="Sustained requests a second per client."
    )
    burst: int = Field(default=40, ge=1, le=1_000_000, description="Requests at once per client.")


class DashboardSpec(ApiModel):
    """The results dashboard: a Deployment serving the store's runs as a JSON API and HTML
    pages, scaled by a HorizontalPodAutoscaler (autoscaling/v2)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # has(): the rule also holds the field's default ({}) before its own defaults.
                cel_rule(
                    "!has(self.minReplicas) || !has(self.maxReplicas) || "
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas cannot exceed maxReplicas",
                    ".minReplicas",
                ),
            ]
        }
    )

    enabled: bool = Field(default=True, description="Run the dashboard (default true).")
    min_replicas: int = Field(
        default=1,
        ge=1,
        le=50,
        description="Fewest replicas (the autoscaler's minReplicas); above 1, a "
        "PodDisruptionBudget keeps all but one up through node drains.",
    )
    max_replicas: int = Field(
        default=3, ge=1, le=100, description="Most replicas (the autoscaler's maxReplicas)."
    )
    target_cpu_utilization_percentage: int = Field(
        default=70,
        ge=1,
        le=100,
        alias="targetCPUUtilizationPercentage",
        description="Average CPU use, as a share of the request, the autoscaler aims at.",
    )
    target_memory_utilization_percentage: int = Field(
        default=80,
        ge=1,
        le=100,
        description="Average memory use, as a share of the request, the autoscaler aims at.",
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description=(
            "CPU and memory of each replica (default requests cpu 100m, memory 256Mi; limit "
            "memory 512Mi). The autoscaler measures use against the requests: a missing "
            "cpu or memory request takes the default."
        ),
    )
    rate_limit: DashboardRateLimit = Field(
        default_factory=DashboardRateLimit,
        description="Per-client rate limiting.",
        json_schema_extra=DEFAULTED_OBJECT,
    )
    trusted_proxies: (
        list[
            Annotated[
                str,
                Field(pattern=CIDR_PATTERN, max_length=64, json_schema_extra={"format": "cidr"}),
            ]
        ]
        | None
    ) = Field(
        default=None,
        max_length=32,
        description=(
            "The proxies in front of the dashboard, as CIDRs (e.g. the ingress controller's "
            "pod network, 10.244.0.0/16). A request from one of them is the client's of the "
            "right-most X-Forwarded-For address that is not itself a trusted proxy; any other "
            "peer's X-Forwarded-For is ignored (a client can write what it likes there). "
            "Default none: the client is the peer, so behind an ingress every user shares the "
            "ingress's rate limit."
        ),
    )
    store_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description=(
            "With an external store: a Secret with read-only credentials, in the shape of "
            "store.external.secretRef (uri, or host, port, dbname, username, password). The "
            "dashboard never gets the store's own; with a managed store the operator makes a "
            "read-only role and its Secret."
        ),
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str] | None) -> list[str] | None:
        return _checked_cidrs(value)


GO_DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"  # as cert-manager's durations


class IssuerReference(ApiModel):
    """A cert-manager issuer of the suite's certificates."""

    name: str = Field(
        min_length=1, max_length=253, description="The Issuer's or ClusterIssuer's name."
    )
    kind: Literal["Issuer", "ClusterIssuer"] = Field(
        default="Issuer", description="Issuer (in the suite's namespace) or ClusterIssuer."
    )
    group: str = Field(
        default="cert-manager.io",
        max_length=253,
        description="The issuer's API group (cert-manager.io, or an external issuer's).",
    )


class TLSSpec(ApiModel):
    """TLS inside the stack with cert-manager certificates: PostgreSQL (ssl on, clients
    verify-full), Redis (its TLS port, clients rediss://) and the dashboard (HTTPS)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    # has(): the object's own default ({}) is validated before its fields'.
                    "!has(self.duration) || !has(self.renewBefore) || "
                    "duration(self.renewBefore) < duration(self.duration)",
                    "renewBefore must be shorter than duration (cert-manager refuses such a "
                    "Certificate)",
                    ".renewBefore",
                )
            ]
        }
    )

    enabled: bool = Field(
        default=False,
        description=(
            "Serve the store, the cache and the dashboard over TLS (default false). Without "
            "cert-manager in the cluster TLSReady is False, reason CertManagerNotInstalled, "
            "and the stack runs without TLS; installing it is noticed without a restart."
        ),
    )
    issuer_ref: IssuerReference | None = Field(
        default=None,
        description=(
            "The issuer of the certificates (it must put the CA in each certificate's Secret, "
            "key ca.crt, as CA and self-signed issuers do). Default: a self-signed bootstrap "
            "Issuer, a CA Certificate <suite>-ca and a CA Issuer, in the suite's namespace."
        ),
    )
    duration: str = Field(
        default="2160h",
        pattern=GO_DURATION_PATTERN,
        min_length=2,
        max_length=32,
        description="Lifetime of each certificate (default 2160h, 90 days).",
    )
    renew_before: str = Field(
        default="720h",
        pattern=GO_DURATION_PATTERN,
        min_length=2,
        max_length=32,
        description="Renewed this long before it expires (default 720h, 30 days).",
    )


DURATION_PATTERN = r"^[0-9]+(ms|s|m|h)$"  # a Prometheus duration, as ServiceMonitors take


class GrafanaDashboardSpec(ApiModel):
    """A Grafana dashboard of the suite, as a ConfigMap for Grafana's dashboard sidecar."""

    enabled: bool = Field(default=True, description="Make the ConfigMap (default true).")
    labels: dict[str, str] | None = Field(
        default=None,
        max_length=16,
        description=(
            'Labels the sidecar looks for (default grafana_dashboard: "1", '
            "kube-prometheus-stack's)."
        ),
    )


class MonitoringSpec(ApiModel):
    """Prometheus Operator objects for the suite: ServiceMonitors (dashboard, store and cache
    exporters), a PodMonitor (runners), a PrometheusRule with the suite's alerts, and a
    Grafana dashboard."""

    enabled: bool = Field(
        default=False,
        description=(
            "Make them (default false). Without the Prometheus Operator's CRDs in the cluster "
            "MonitoringReady is False, reason PrometheusOperatorNotInstalled, and the rest of "
            "the suite runs; installing them later is noticed without a restart."
        ),
    )
    labels: dict[str, str] | None = Field(
        default=None,
        max_length=16,
        description=(
            "Labels of the ServiceMonitors, PodMonitor and PrometheusRule, for the Prometheus "
            "selectors (kube-prometheus-stack: release: <its release name>)."
        ),
    )
    interval: str = Field(
        default="30s",
        pattern=DURATION_PATTERN,
        max_length=16,
        description="Scrape interval (a Prometheus duration, default 30s).",
    )
    exporters: bool = Field(
        default=True,
        description=(
            "Run postgres_exporter and redis_exporter as sidecars of the managed store and "
            "cache (pinned images; default true)."
        ),
    )
    cost_alert_usd_per_hour: str = Field(
        default="10",
        alias="costAlertUSDPerHour",
        pattern=DECIMAL_PATTERN,
        max_length=32,
        description=(
            "The EvalSuiteHighCost alert fires when the suite's runners spend more than this many "
            'dollars an hour (a decimal string, default "10").'
        ),
    )
    grafana_dashboard: GrafanaDashboardSpec = Field(
        default_factory=GrafanaDashboardSpec,
        description="The Grafana dashboard ConfigMap.",
        json_schema_extra=DEFAULTED_OBJECT,
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
            "baseline is set)."
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


class StoreStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    mode: str | None = Field(default=None, description="Managed or External.")
    endpoint: str | None = Field(
        default=None, description="host:port/dbname of the store (never a password)."
    )
    secret_name: str | None = Field(
        default=None,
        description="Secret the runner pods read the store's credentials from (by reference).",
    )
    schema_version: int | None = Field(
        default=None, description="The last schema migration applied."
    )


class DashboardStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    url: str | None = Field(default=None, description="The dashboard's in-cluster URL.")
    replicas: int | None = Field(default=None, description="Available replicas.")


class CacheStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    mode: str | None = Field(default=None, description="Managed, External or Disabled.")
    endpoint: str | None = Field(default=None, description="host:port of the cache.")
    secret_name: str | None = Field(
        default=None, description="Secret the runner pods read the cache URL from."
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
