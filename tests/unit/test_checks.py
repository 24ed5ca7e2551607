"""What only code can check in a spec: one function, for the operator and for local runs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from eval_api.checks import spec_problems
from eval_api.v1alpha1 import EvaluationSpec
from eval_runner.cli.manifest import InvalidInput, load_manifest
from tests.support.factories import BASE_SPEC

JUDGE = {"name": "judge", "baseURL": "http://judge:8000/v1"}


def spec_with(**changes) -> EvaluationSpec:
    spec = copy.deepcopy(BASE_SPEC)
    spec.update(changes)
    return EvaluationSpec.model_validate(spec)


PROBLEMS = {
    "threshold names no scorer": (
        spec_with(thresholds=["exact_matc >= 0.5"]),
        "spec.thresholds[0]: 'exact_matc' names no scorer of task.scorers (they are: "
        "exact_match, numeric)",
    ),
    "threshold outside the scores' range": (
        spec_with(thresholds=["exact_match >= 1.5"]),
        "spec.thresholds[0]: exact_match takes values in [0, 1]",
    ),
    "regex that does not compile": (
        spec_with(task={"scorers": [{"type": "regex", "pattern": "(unclosed"}]}, thresholds=[]),
        "spec.task.scorers[0].pattern: not a valid regular expression: missing ), unterminated",
    ),
    "template syntax error": (
        spec_with(task={"promptTemplate": "{{ input ", "scorers": [{"type": "exact_match"}]}),
        "spec.task.promptTemplate: line 1: unexpected end of template",
    ),
    "rubric with a misspelt variable": (
        spec_with(
            task={"scorers": [{"type": "llm_judge", "judge": JUDGE, "rubric": "{{ ouptut }}"}]},
            thresholds=[],
        ),
        "spec.task.scorers[0].rubric: UndefinedError: 'ouptut' is undefined",
    ),
    "sandbox escape in the rubric": (
        spec_with(
            task={
                "scorers": [
                    {
                        "type": "llm_judge",
                        "judge": JUDGE,
                        "rubric": "{{ output.__class__.__mro__[1].__subclasses__() }}",
                    }
                ]
            },
            thresholds=[],
        ),
        "spec.task.scorers[0].rubric: SecurityError",
    ),
}


@pytest.mark.parametrize("case", sorted(PROBLEMS))
def test_each_problem_is_named_with_its_field_path(case: str) -> None:
    spec, expected = PROBLEMS[case]
    problems = spec_problems(spec)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_good_spec_has_no_problems() -> None:
    assert spec_problems(EvaluationSpec.model_validate(BASE_SPEC)) == []


def test_local_runs_refuse_the_same_specs(tmp_path: Path) -> None:
    import yaml

    body = {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": "typo"},
        "spec": {**copy.deepcopy(BASE_SPEC), "thresholds": ["exact_matc >= 0.5"]},
    }
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(InvalidInput, match="'exact_matc' names no scorer"):
        load_manifest(path)
