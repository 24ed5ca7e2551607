"""Stage 2: a sample becomes chat messages (system prompt, few-shot turns, the sample's turn)."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from eval_api.v1alpha1.task import TaskSpec
from eval_runner.dataset import Sample
from eval_runner.errors import PermanentError


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class PromptBuilder:
    """Renders task.promptTemplate in a sandbox: the template comes from whoever may create an
    Evaluation, and runs in a pod that holds an API key."""

    def __init__(self, task: TaskSpec) -> None:
        # StrictUndefined: a misspelt variable is an error, not a silently empty prompt.
        # No autoescape: prompts are plain text, not HTML.
        environment = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        try:
            self._template = environment.from_string(task.prompt_template)
        except TemplateSyntaxError as err:
            raise PermanentError(
                "TemplateError", f"task.promptTemplate line {err.lineno}: {err.message}"
            ) from err
        prefix: list[Message] = []
        if task.system_prompt:
            prefix.append({"role": "system", "content": task.system_prompt})
        for index, example in enumerate(task.few_shot):
            variables = {"input": example.input, "target": example.target}
            prefix.append(
                {"role": "user", "content": self._render(variables, f"task.fewShot[{index}]")}
            )
            prefix.append({"role": "assistant", "content": example.target})
        self._prefix = prefix

    def build(self, sample: Sample) -> list[Message]:
        return [
            *self._prefix,
            {"role": "user", "content": self._render(sample.record, f"sample {sample.id}")},
        ]

    def _render(self, variables: dict[str, Any], where: str) -> str:
        try:
            return self._template.render(variables)
        except Exception as err:  # anything raised here comes from the user's template
            raise PermanentError(
                "TemplateError",
                f"task.promptTemplate failed for {where}: {type(err).__name__}: {err}",
            ) from err
