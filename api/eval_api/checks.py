"""What only code can check in an Evaluation's spec, beyond its schema and CEL rules.

The operator runs these before any Job exists (a problem becomes the InvalidSpec condition,
with the field path, and is not terminal: fixing the spec starts the run), and `eval-runner run`
runs them before the first request, so a manifest fails the same way in both places.
"""

from __future__ import annotations

import re

from jinja2 import TemplateError

from eval_api.tasks import TaskFileError, TaskFileMissing, task_plan
from eval_api.templates import RUBRIC_VARIABLES, sandbox
from eval_api.v1alpha1.evaluation import EvaluationSpec
from eval_api.v1alpha1.task import SCORE_RANGE, parse_threshold


def spec_problems(spec: EvaluationSpec, task_file: str | None = None) -> list[str]:
    """Every problem as "spec.<path>: <what is wrong>"; empty when the spec can run.

    `task_file` is the text of task.lmEval's ConfigMap key; without it, the checks that need
    the file (its fields, the result names thresholds refer to) are left out."""
    problems: list[str] = []
    environment = sandbox()
    try:
        environment.from_string(spec.task.prompt_template)
    except TemplateError as err:
        problems.append(f"spec.task.promptTemplate: {_template_error(err)}")
    for index, scorer in enumerate(spec.task.scorer_list):
        where = f"spec.task.scorers[{index}]"
        if scorer.pattern is not None:
            try:
                re.compile(scorer.pattern)
            except re.error as err:
                problems.append(f"{where}.pattern: not a valid regular expression: {err}")
        if scorer.rubric is not None:
            try:
                environment.from_string(scorer.rubric).render(
                    {name: "" for name in RUBRIC_VARIABLES}
                )
            except TemplateError as err:
                problems.append(f"{where}.rubric: {_template_error(err)}")
    names = _lm_eval_problems(spec, task_file, problems)
    low, high = SCORE_RANGE
    for index, text in enumerate(spec.thresholds):
        threshold = parse_threshold(text)
        if names is not None and threshold.scorer not in names:
            known = ", ".join(names)
            named = "scorer of task.scorers" if spec.task.scorers else "result of the task"
            problems.append(
                f"spec.thresholds[{index}]: {threshold.scorer!r} names no {named} "
                f"(they are: {known})"
            )
        elif not low <= threshold.value <= high:
            problems.append(
                f"spec.thresholds[{index}]: {threshold.scorer} takes values in [{low}, {high}], "
                f"so {text!r} can never be judged meaningfully"
            )
    return problems


def _lm_eval_problems(
    spec: EvaluationSpec, task_file: str | None, problems: list[str]
) -> list[str] | None:
    """The task's result names (None when they are not known yet), adding what keeps an
    lm-eval task or a preset from running with this model and dataset to `problems`."""
    try:
        plan = task_plan(spec, task_file)
    except TaskFileMissing:
        return None
    except TaskFileError as err:
        problems.append(f"spec.task.lmEval: {err.reason}: {err.message}")
        return None
    task = plan.lm_task
    if task is None:
        return plan.names
    where = "spec.task.preset" if spec.task.preset is not None else "spec.task.lmEval"
    if task.output_type != "generate_until" and spec.model.api != "Completions":
        problems.append(
            f"{where}: LogprobsUnsupported: {task.task} is {task.output_type}, scored by "
            "log-likelihood, which needs model.api Completions on an endpoint returning prompt "
            "log-probabilities (vLLM); chat models run generate_until tasks (a preset's "
            "generative variant)"
        )
    needs_pool = task.num_fewshot > 0 and task.fewshot.samples is None
    if needs_pool and plan.dataset.huggingface is None:
        problems.append(
            f"spec.dataset: {task.task} draws {task.num_fewshot} few-shot examples from its "
            f"split {task.fewshot_split!r}, which only a huggingface dataset has (the others "
            "hold the evaluated split only): use dataset.huggingface, give "
            "fewshot_config.samples in the task file, or numFewshot 0"
        )
    return plan.names


def _template_error(err: TemplateError) -> str:
    line = getattr(err, "lineno", None)
    return f"line {line}: {err.message}" if line else f"{type(err).__name__}: {err.message}"
