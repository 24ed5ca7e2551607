"""lm-eval's prompts: a doc's text, target and choices, and the few-shot context around it.

Facts from lm-eval (api/task.py ConfigurableTask, api/samplers.py, utils.py):
- doc_to_text/doc_to_target/doc_to_choice name a column, or are Jinja templates rendered with
  StrictUndefined, trailing newlines kept and a `regex_replace` filter; a rendered text or
  target of digits only is an int when the task has choices; a rendered target "[...]" is a
  list; a rendered choice template is a Python list literal. Nothing is stripped.
- the context is the description, then each example as text + target_delimiter + answer +
  fewshot_delimiter (the answer choices[target] for an int target), then the doc's text.
- examples: the `default` sampler is one random.Random(1234) per task, drawing rnd.sample(pool,
  n) for each evaluated doc in order (n + 1, the evaluated doc then dropped, when the few-shot
  split is the test split); `first_n` takes the pool's first n in order.
- a task whose doc_to_text is an int (the index of its choices, winogrande) has one context per
  choice: the shared prefix followed by the choice, and the target is their continuation.

Templates run in Jinja's immutable sandbox: the task file comes from a ConfigMap.
"""

from __future__ import annotations

import ast
import functools
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from eval_api.lmeval.config import FEWSHOT_SEED, TaskSpec
from eval_runner.errors import PermanentError
from eval_runner.prompt import Message


def _regex_replace(text: str, pattern: str, replacement: str, count: int = 0) -> str:
    return re.sub(pattern, replacement, text, count=count)


_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
_ENV.filters["regex_replace"] = _regex_replace


@functools.lru_cache(maxsize=256)
def _compiled(template: str) -> Template:
    return _ENV.from_string(template)  # compiled once: 14,042 MMLU prompts took 63 s without


def render(template: str, doc: Mapping[str, Any]) -> str:
    try:
        return _compiled(template).render(**doc)
    except TemplateError as err:
        raise PermanentError("LmEvalInvalid", f"template {template[:60]!r}: {err}") from None


class Prompts:
    """One task's prompts over docs whose columns are `columns`."""

    def __init__(self, task: TaskSpec, columns: Sequence[str]) -> None:
        self.task = task
        self.columns = set(columns)
        self.has_choices = task.doc_to_choice is not None

    # --- a doc's parts ------------------------------------------------------------------------

    def text(self, doc: Mapping[str, Any], how: Any = None) -> Any:
        how = self.task.doc_to_text if how is None else how
        if isinstance(how, int):
            return how
        if isinstance(how, str):
            if how in self.columns:
                return doc[how]
            text = render(how, doc)
            return ast.literal_eval(text) if text.isdigit() and self.has_choices else text
        raise PermanentError("LmEvalInvalid", f"doc_to_text {how!r} is neither text nor a column")

    def target(self, doc: Mapping[str, Any], how: Any = None) -> Any:
        how = self.task.doc_to_target if how is None else how
        if isinstance(how, (int, list)):
            return how
        if isinstance(how, str):
            if how in self.columns:
                return doc[how]
            text = render(how, doc)
            if text.isdigit() and self.has_choices:
                return ast.literal_eval(text)
            if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
                try:
                    return ast.literal_eval(text)
                except (SyntaxError, ValueError):
                    return text
            return text
        raise PermanentError("LmEvalInvalid", f"doc_to_target {how!r} is not text, int or list")

    def choices(self, doc: Mapping[str, Any], how: Any = None) -> list[Any]:
        how = self.task.doc_to_choice if how is None else how
        if isinstance(how, str):
            if how in self.columns:
                return list(doc[how])
            text = render(how, doc)
            try:
                found = ast.literal_eval(text)
            except (SyntaxError, ValueError):
                raise PermanentError(
                    "LmEvalInvalid", f"doc_to_choice rendered {text[:80]!r}, not a list"
                ) from None
            return list(found)
        if isinstance(how, list):
            return how
        if isinstance(how, dict):
            return list(how.values())
        raise PermanentError("LmEvalInvalid", f"doc_to_choice {how!r} is not a list")

    def is_multiple_input(self, doc: Mapping[str, Any]) -> bool:
        """lm-eval decides from the first doc: an int text with choices (winogrande)."""
        return self.has_choices and isinstance(self.text(doc), int)

    # --- the context --------------------------------------------------------------------------

    def _example(self, doc: Mapping[str, Any], multiple_input: bool) -> tuple[str, str | None]:
        """A few-shot example's question and its answer's text (None when it has none)."""
        fewshot = self.task.fewshot
        question = self.text(doc, fewshot.doc_to_text)
        choices = self.choices(doc, fewshot.doc_to_choice) if fewshot.doc_to_choice else None
        answer = self.target(doc, fewshot.doc_to_target)
        if multiple_input:
            question, choices = choices[question], None
        if answer is None or answer == "":
            return _as_text(question), None
        if choices and isinstance(answer, int):
            answer = choices[answer]
        elif isinstance(answer, list):
            answer = answer[0]
        if not isinstance(answer, str):
            raise PermanentError(
                "LmEvalInvalid", f"a few-shot example's answer {answer!r} is not text"
            )
        return _as_text(question), answer

    def _description(self, doc: Mapping[str, Any]) -> str:
        description = self.task.description  # a column's value, or a template
        if description in self.columns:
            return str(doc[description])
        return render(description, doc) if description else ""

    def context(
        self, doc: Mapping[str, Any], examples: Sequence[Mapping[str, Any]], multiple_input: bool
    ) -> str | list[str]:
        """The prompt of `doc` after `examples`; for a multiple-input task, one per choice."""
        fewshot = self.task.fewshot
        prefix = self._description(doc)
        for example in examples:
            question, answer = self._example(example, multiple_input)
            prefix += question
            if answer is not None:
                prefix += fewshot.target_delimiter + answer + fewshot.fewshot_delimiter
        if multiple_input:
            return [prefix + choice for choice in self.choices(doc)]
        return prefix + _as_text(self.text(doc))

    def chat(self, doc: Mapping[str, Any], examples: Sequence[Mapping[str, Any]]) -> list[Message]:
        """`doc`'s prompt as chat messages, as lm-eval sends it with a chat template (few-shot
        as multi-turn, its default): the description as the system message, each example a
        user turn and its answer an assistant turn, then the doc's question."""
        messages: list[Message] = []
        description = self._description(doc)
        if description:
            messages.append({"role": "system", "content": description})
        for example in examples:
            question, answer = self._example(example, multiple_input=False)
            messages.append({"role": "user", "content": question})
            if answer is not None:
                messages.append({"role": "assistant", "content": answer})
        messages.append({"role": "user", "content": _as_text(self.text(doc))})
        return messages


def _as_text(value: Any) -> str:
    if not isinstance(value, str):
        raise PermanentError("LmEvalInvalid", f"doc_to_text gave {value!r}, not text")
    return value


def fewshot_examples(
    task: TaskSpec,
    eval_docs: Sequence[Mapping[str, Any] | None],
    pool: Sequence[Mapping[str, Any]],
    count: int | None = None,
) -> list[list[int]]:
    """For each of the first `count` eval docs (all by default), the indices in `pool` of its
    few-shot examples, drawn as lm-eval draws them: doc k's depend on every earlier doc's draws,
    so a shard replays the draws of the docs before its own. A doc given as None (another
    shard's) has its draws replayed and gets none: only whether the pool holds two copies of it
    could change the draws after it, and that needs its content."""
    n = task.num_fewshot
    count = len(eval_docs) if count is None else count
    if n == 0:
        return [[] for _ in range(count)]
    if len(pool) < n:
        raise PermanentError(
            "LmEvalInvalid",
            f"num_fewshot {n} asks for more examples than the {len(pool)} there are",
        )
    exclude = task.excludes_eval_doc
    found: list[list[int]] = []
    if task.fewshot.sampler == "first_n":
        for doc in eval_docs[:count]:
            if doc is None:
                found.append([])
                continue
            kept = [i for i in range(len(pool)) if not (exclude and pool[i] == doc)]
            found.append(kept[:n])
        return found
    rnd = random.Random(FEWSHOT_SEED)
    everything = range(len(pool))
    for doc in eval_docs[:count]:
        if not exclude:
            drawn = rnd.sample(everything, n)
            found.append(drawn if doc is not None else [])
            continue
        drawn = rnd.sample(everything, n + 1)
        if doc is None:
            found.append([])
            continue
        drawn = [i for i in drawn if pool[i] != doc][:n]
        if len(drawn) < n:  # the pool holds copies of the doc: draw again without any
            drawn = rnd.sample([i for i in everything if pool[i] != doc], n)
        found.append(drawn)
    return found
