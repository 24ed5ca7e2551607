"""Prompt rendering: system prompt, few-shot turns, strict variables, the sandbox."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from eval_api.v1alpha1 import TaskSpec
from eval_runner.dataset import Sample
from eval_runner.errors import PermanentError
from eval_runner.prompt import PromptBuilder

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = Sample(
    id=4,
    input="What is 2 + 2?",
    target="4",
    record={"input": "What is 2 + 2?", "target": "4", "topic": "sums"},
)


def task(**fields: Any) -> TaskSpec:
    return TaskSpec.model_validate({"scorers": [{"type": "exact_match"}], **fields})


def test_default_template_is_the_input_alone() -> None:
    assert PromptBuilder(task()).build(SAMPLE) == [{"role": "user", "content": "What is 2 + 2?"}]


def test_system_prompt_few_shot_then_the_sample() -> None:
    builder = PromptBuilder(
        task(
            systemPrompt="Be brief.",
            promptTemplate="Q: {{ input }}",
            fewShot=[{"input": "1 + 1", "target": "2"}, {"input": "3 + 3", "target": "6"}],
        )
    )
    assert builder.build(SAMPLE) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q: 1 + 1"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "Q: 3 + 3"},
        {"role": "assistant", "content": "6"},
        {"role": "user", "content": "Q: What is 2 + 2?"},
    ]


def test_every_record_field_is_a_variable_and_nothing_is_escaped() -> None:
    builder = PromptBuilder(
        task(promptTemplate="[{{ topic }}] {{ input }} <b>&{{ target|length }}")
    )
    assert builder.build(SAMPLE)[-1]["content"] == "[sums] What is 2 + 2? <b>&1"


def test_an_undefined_variable_is_an_error() -> None:
    builder = PromptBuilder(task(promptTemplate="{{ inptu }}"))
    with pytest.raises(PermanentError) as caught:
        builder.build(SAMPLE)
    assert caught.value.reason == "TemplateError"
    assert "sample 4" in caught.value.message and "inptu" in caught.value.message


def test_a_few_shot_example_is_rendered_at_startup() -> None:
    # Examples carry only input and target: a template needing other fields fails at once.
    with pytest.raises(PermanentError) as caught:
        PromptBuilder(task(promptTemplate="{{ topic }}", fewShot=[{"input": "a", "target": "b"}]))
    assert "task.fewShot[0]" in caught.value.message


def test_a_syntax_error_fails_at_startup() -> None:
    with pytest.raises(PermanentError) as caught:
        PromptBuilder(task(promptTemplate="line one\n{{ input "))
    assert caught.value.reason == "TemplateError"
    assert "line 2" in caught.value.message


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ input.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{% set x = [] %}{{ x.append(1) }}",  # immutable sandbox: no mutation either
        # CVE-2025-27516 (Jinja2 < 3.1.6): str.format reached through the attr filter.
        "{{ '{0.__class__}'|attr('format')(1) }}",
        "{{ ('{0.__class__.__mro__}'|attr('format'))(input) }}",
        # CVE-2024-56326 (< 3.1.5): str.format kept in a variable and called later.
        "{% set f = '{0.__class__.__mro__}'.format %}{{ f(input) }}",
    ],
)
def test_the_sandbox_blocks_unsafe_access(template: str) -> None:
    builder = PromptBuilder(task(promptTemplate=template))
    with pytest.raises(PermanentError) as caught:
        builder.build(SAMPLE)
    assert caught.value.reason == "TemplateError"


def test_jinja2_is_pinned_past_its_sandbox_escapes() -> None:
    """3.1.0-3.1.5 let a template escape the sandbox (CVE-2024-56326, CVE-2025-27516)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed = [*project["dependencies"], *project["optional-dependencies"]["runner"]]
    requirements = [Requirement(text) for text in installed]
    (jinja2,) = [r for r in requirements if canonicalize_name(r.name) == "jinja2"]
    assert not any(jinja2.specifier.contains(v) for v in ("3.1.0", "3.1.4", "3.1.5"))
    assert jinja2.specifier.contains("3.1.6")
    assert Version(version("jinja2")) >= Version("3.1.6")
