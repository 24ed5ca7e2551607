"""spec.task: how each sample becomes a prompt and which scorers grade the answer; and
spec.thresholds, the pass criteria on the scores.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eval_api.v1alpha1.common import (
    DECIMAL_PATTERN,
    ApiModel,
    ConfigMapKeySelector,
    cel_rule,
    exactly_one_of,
)
from eval_api.v1alpha1.model import JudgeSpec

# The built-in benchmarks (task.preset): lm-evaluation-harness's tasks of these names, each at a
# pinned dataset revision (eval_api.lmeval.presets).
PRESET_NAMES = (
    "gsm8k",
    "mmlu",
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "truthfulqa_mc1",
    "winogrande",
)
# Multiple-choice presets, which have a generative variant for chat models.
MULTIPLE_CHOICE_PRESETS = tuple(p for p in PRESET_NAMES if p != "gsm8k")
MAX_NUM_FEWSHOT = 64

SCORER_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
# "<scorer> <op> <number>", e.g. "exact_match >= 0.8".
THRESHOLD_PATTERN = r"^[a-z][a-z0-9_]* *(>=|<=|>|<|==) *[0-9]+(\.[0-9]+)?$"
THRESHOLD_RE = re.compile(
    r"^(?P<scorer>[a-z][a-z0-9_]*) *(?P<op>>=|<=|>|<|==) *(?P<value>[0-9]+(\.[0-9]+)?)$"
)

# Every scorer's per-sample values lie in this range, so every mean and threshold does too.
SCORE_RANGE = (Decimal(0), Decimal(1))


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


class LmEvalTask(ApiModel):
    """A task file in lm-evaluation-harness's YAML format, kept in a ConfigMap key."""

    config_map_ref: ConfigMapKeySelector = Field(
        description=(
            "The ConfigMap key holding the task YAML (one task: dataset splits, doc_to_text, "
            "doc_to_target, doc_to_choice, few-shot, output_type, generation_kwargs, "
            "filter_list, metric_list). Read when the run starts and frozen with it; what "
            "cannot run here (a Python function, an include) is refused naming the field."
        )
    )
    num_fewshot: int | None = Field(
        default=None,
        ge=0,
        le=MAX_NUM_FEWSHOT,
        description="Few-shot examples per sample, in place of the file's num_fewshot.",
    )


class PresetTask(ApiModel):
    """A standard benchmark by name: lm-eval's task of that name at a pinned dataset revision."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.generative) || !self.generative || self.name in "
                    + str(list(MULTIPLE_CHOICE_PRESETS)),
                    "generative is the variant of a multiple-choice preset (gsm8k is "
                    "generative already)",
                    ".generative",
                )
            ]
        }
    )

    name: Literal[PRESET_NAMES] = Field(  # type: ignore[valid-type]
        description=(
            "gsm8k (5-shot, exact_match_strict_match and exact_match_flexible_extract), mmlu "
            "(57 subjects; acc over all of them as lm-eval's group computes it, size-weighted, "
            "and acc_stem, acc_humanities, acc_social_sciences, acc_other), arc_easy, "
            "arc_challenge, hellaswag (acc, acc_norm), truthfulqa_mc1, winogrande (acc). "
            "The multiple-choice ones score by log-likelihood: they need model.api "
            "Completions on an endpoint returning prompt log-probabilities (vLLM), or "
            "generative: true."
        )
    )
    num_fewshot: int | None = Field(
        default=None,
        ge=0,
        le=MAX_NUM_FEWSHOT,
        description="Few-shot examples per sample, in place of the task's default.",
    )
    generative: bool = Field(
        default=False,
        description=(
            "Multiple-choice presets: ask for the answer's letter and score exact_match on it "
            "(result exact_match_get_response), for chat models and endpoints without "
            "log-probabilities."
        ),
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Score only the first N samples of the evaluated split (a smoke run).",
    )


LM_EVAL_EXCLUDES = (
    "(!has(self.lmEval) && !has(self.preset)) || ((!has(self.promptTemplate) || "
    "self.promptTemplate == '{{ input }}') && !has(self.systemPrompt) && (!has(self.fewShot) "
    "|| size(self.fewShot) == 0) && !has(self.groupField))"
)


class TaskSpec(ApiModel):
    """How each sample becomes a prompt, and how answers are scored: with scorers, a task
    file of lm-evaluation-harness's format (lmEval), or a standard benchmark (preset)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    exactly_one_of("scorers", "lmEval", "preset"),
                    "exactly one of scorers, lmEval or preset must be set",
                ),
                cel_rule(
                    LM_EVAL_EXCLUDES,
                    "promptTemplate, systemPrompt, fewShot and groupField are not used with "
                    "lmEval or preset: the task file says how samples are prompted",
                ),
            ]
        }
    )

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
    scorers: list[ScorerSpec] | None = Field(
        default=None,
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

    lm_eval: LmEvalTask | None = Field(
        default=None,
        alias="lmEval",
        description=(
            "A task in lm-evaluation-harness's YAML format, run as lm-eval runs it: the same "
            "prompts, few-shot examples, requests, filters and metrics. Its results are named "
            "metric_filter (e.g. exact_match_strict_match; acc for multiple choice). The "
            "samples are spec.dataset (a huggingface dataset's split defaults to the task's "
            "test_split, else validation_split; few-shot examples come from the task's "
            "few-shot split of the same repository)."
        ),
    )
    preset: PresetTask | None = Field(
        default=None,
        description="A standard benchmark by name, with its own pinned dataset (omit dataset).",
    )

    @property
    def scorer_list(self) -> list[ScorerSpec]:
        """The scorers; none for an lm-eval task or a preset (its metrics score)."""
        return self.scorers or []


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
