"""llm_judge: a second model grades the answer with a rubric.

The rubric is a sandboxed Jinja2 template with `input`, `target` and `output`; it becomes the
judge's only user message. The reply is turned into a score in [0, 1] by `parse_verdict`. A
reply that yields no score makes the sample errored (judge_unparsable), never a 0: a judge's
bad day is not the model's wrong answer.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from eval_api.v1alpha1.task import ScorerSpec
from eval_runner.client import ModelClient
from eval_runner.errors import PermanentError
from eval_runner.prompt import Message
from eval_runner.scorers.registry import JudgeScorer, ScoreUnavailable, register_judge

_NUMBER = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)"
_FRACTION = rf"(?P<value>{_NUMBER})(?:\s*/\s*(?P<scale>{_NUMBER}))?"
_SCORE = re.compile(rf"\bscore\s*[:=]\s*\**\s*{_FRACTION}", re.IGNORECASE)
_PASS_FAIL = re.compile(r"\b(PASS|FAIL)\b", re.IGNORECASE)
_ONLY_NUMBER = re.compile(rf"^\s*{_FRACTION}\s*\.?\s*$")


def parse_verdict(reply: str) -> float | None:
    """The score in a judge's reply, by the first rule that matches:

    1. "score: x" or "score = x" anywhere (case-insensitive), x a number or a fraction "x/y";
    2. else the first PASS or FAIL word (case-insensitive): 1 or 0;
    3. else a reply that is only a number or a fraction.

    None when no rule matches or the value is outside [0, 1].
    """
    match = _SCORE.search(reply)
    if match is None:
        verdict = _PASS_FAIL.search(reply)
        if verdict is not None:
            return float(verdict[1].upper() == "PASS")
        match = _ONLY_NUMBER.match(reply)
        if match is None:
            return None
    try:
        value = Decimal(match["value"])
        if match["scale"] is not None:
            value /= Decimal(match["scale"])
    except (InvalidOperation, ZeroDivisionError):
        return None
    return float(value) if 0 <= value <= 1 else None


class LlmJudge:
    def __init__(self, spec: ScorerSpec, judge: ModelClient) -> None:
        assert spec.rubric is not None  # the API requires rubric for llm_judge
        environment = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        try:
            self._template = environment.from_string(spec.rubric)
        except TemplateSyntaxError as err:
            raise PermanentError(
                "TemplateError",
                f"rubric of scorer {spec.effective_name} line {err.lineno}: {err.message}",
            ) from err
        self._name = spec.effective_name
        self._judge = judge
        # A misspelt variable fails the shard now, before the first request is paid for.
        self.render("", "", "")

    def render(self, input: str, output: str, target: str) -> list[Message]:
        try:
            content = self._template.render(input=input, output=output, target=target)
        except Exception as err:  # anything raised here comes from the user's template
            raise PermanentError(
                "TemplateError",
                f"rubric of scorer {self._name} failed: {type(err).__name__}: {err}",
            ) from err
        return [{"role": "user", "content": content}]

    async def score(self, input: str, output: str, target: str) -> float:
        completion = await self._judge.complete(self.render(input, output, target))
        value = parse_verdict(completion.text)
        if value is None:
            raise ScoreUnavailable(
                "judge_unparsable", f"no score in the judge's reply {completion.text[:80]!r}"
            )
        return value


@register_judge("llm_judge")
def build(spec: ScorerSpec, judge: ModelClient) -> JudgeScorer:
    return LlmJudge(spec, judge)
