"""What only code can check in an Evaluation's spec, beyond its schema and CEL rules.

The operator runs these before any Job exists (a problem becomes the InvalidSpec condition,
with the field path, and is not terminal: fixing the spec starts the run), and `eval-runner run`
runs them before the first request, so a manifest fails the same way in both places.
"""

from __future__ import annotations

import re

from jinja2 import TemplateError

from eval_api.templates import RUBRIC_VARIABLES, sandbox
from eval_api.v1alpha1.evaluation import EvaluationSpec
from eval_api.v1alpha1.task import SCORE_RANGE, parse_threshold


def spec_problems(spec: EvaluationSpec) -> list[str]:
    """Every problem as "spec.<path>: <what is wrong>"; empty when the spec can run."""
    problems: list[str] = []
    environment = sandbox()
    try:
        environment.from_string(spec.task.prompt_template)
    except TemplateError as err:
        problems.append(f"spec.task.promptTemplate: {_template_error(err)}")
    names = {}
    for index, scorer in enumerate(spec.task.scorers):
        where = f"spec.task.scorers[{index}]"
        names[scorer.effective_name] = scorer
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
    low, high = SCORE_RANGE
    for index, text in enumerate(spec.thresholds):
        threshold = parse_threshold(text)
        if threshold.scorer not in names:
            known = ", ".join(sorted(names))
            problems.append(
                f"spec.thresholds[{index}]: {threshold.scorer!r} names no scorer of "
                f"task.scorers (they are: {known})"
            )
        elif not low <= threshold.value <= high:
            problems.append(
                f"spec.thresholds[{index}]: {threshold.scorer} takes values in [{low}, {high}], "
                f"so {text!r} can never be judged meaningfully"
            )
    return problems


def _template_error(err: TemplateError) -> str:
    line = getattr(err, "lineno", None)
    return f"line {line}: {err.message}" if line else f"{type(err).__name__}: {err.message}"
