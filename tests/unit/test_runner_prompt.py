"""Prompt rendering: system prompt, few-shot turns, strict variables, the sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from eval_api.v1alpha1 import TaskSpec
from eval_runner.dataset import Sample
from eval_runner.errors import PermanentError
from eval_runner.prompt import PromptBuilder

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
    ],
)
def test_the_sandbox_blocks_unsafe_access(template: str) -> None:
    builder = PromptBuilder(task(promptTemplate=template))
    with pytest.raises(PermanentError) as caught:
        builder.build(SAMPLE)
    assert caught.value.reason == "TemplateError"
