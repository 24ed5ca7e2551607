"""An lm-eval task's samples in a shard: each one's requests built as lm-eval builds them, asked,
filtered and scored, with what explains the score kept for its row.

- generate_until: the context is sent as the prompt (model.api Completions, lm-eval's
  local-completions) or as chat messages (ChatCompletions, local-chat-completions with its chat
  template: few-shot examples as turns, the description as the system message), with the
  task's `until` as stop sequences (a chat request carries the first 4, as lm-eval sends) and
  max_gen_toks as the output bound, greedy; each filter pipeline gives an answer, and each
  metric of it a result (metric_key).
- multiple_choice: every choice's log-likelihood after the context (or, for a task with one
  context per choice, the shared continuation's after each); acc and acc_norm.

The few-shot examples of a shard's docs are drawn as lm-eval draws them for the whole split:
the draws of earlier docs (other shards') are replayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from eval_api.lmeval.config import TaskSpec, metric_key
from eval_api.lmeval.presets import Preset
from eval_api.v1alpha1.model import ModelParameters, ModelSpec
from eval_runner.client import Completion, Spend
from eval_runner.dataset import Sample
from eval_runner.errors import PermanentError
from eval_runner.lmeval.prompts import Prompts, fewshot_examples
from eval_runner.lmeval.scoring import (
    apply_filters,
    choice_scores,
    exact_match,
    generated_reference,
    gold_index,
)
from eval_runner.prompt import Message

# What an OpenAI-compatible chat endpoint takes as stop sequences (lm-eval sends until[:4]).
CHAT_STOP_SEQUENCES = 4


@dataclass(frozen=True)
class Item:
    """One doc's requests: one context (or one per choice) and what its answer is held to."""

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]  # per choice; a multiple-input task's one shared
    choices: tuple[str, ...] | None
    gold: int | list[int] | None
    reference: str | None  # generate_until: what the answer is compared with
    category: str | None  # a preset's category (MMLU's subject's), for its category results


def generation_model(model: ModelSpec, task: TaskSpec) -> ModelSpec:
    """The model as the task asks it: the task's generation_kwargs in place of parameters
    (the schema refuses both), greedy, the seed kept."""
    generation = task.generation
    if task.output_type != "generate_until":
        return model
    until = list(generation["until"])
    if model.api == "ChatCompletions":
        until = until[:CHAT_STOP_SEQUENCES]
    parameters = ModelParameters(
        temperature="0",
        max_tokens=int(generation["max_tokens"]),
        stop=until or None,
        seed=model.parameters.seed,
    )
    return model.model_copy(update={"parameters": parameters})


class LmEvalShard:
    """The lm-eval task of one shard: builds each sample's requests, asks, scores."""

    def __init__(self, task: TaskSpec, preset: Preset | None, model: ModelSpec) -> None:
        self.task = task
        self.preset = preset
        self.model = model

    # --- building ---------------------------------------------------------------------------

    def build(
        self, samples: list[Sample], pool: Sequence[Mapping[str, Any]]
    ) -> list[tuple[Sample, list[Message], Item]]:
        """Every sample's requests (`pool`: the few-shot split's docs). Each sample's id is
        its doc's position in the evaluated split: the draws are replayed up to the shard's
        last."""
        if not samples:
            return []
        task = self.task
        if task.fewshot.samples is not None and task.fewshot.split is None:
            pool = list(task.fewshot.samples)
        prompts = Prompts(task, list(samples[0].record))
        multiple_input = prompts.is_multiple_input(samples[0].record)
        draws = self._draws(samples, pool)
        built = []
        for sample in samples:
            doc = sample.record
            examples = [pool[i] for i in draws[sample.id]]
            context = prompts.context(doc, examples, multiple_input)
            item = self._item(prompts, doc, context, multiple_input)
            contexts = item.contexts
            shown = contexts[0] if len(contexts) == 1 else "\n\n---\n\n".join(contexts)
            # A row shows the context as text; a chat model is asked it in turns.
            messages: list[Message] = (
                prompts.chat(doc, examples)
                if self.model.api == "ChatCompletions" and task.output_type == "generate_until"
                else [{"role": "user", "content": shown}]
            )
            target = item.reference if item.reference is not None else _gold_text(item)
            built.append((replace(sample, input=shown, target=target), messages, item))
        return built

    def _draws(
        self, samples: list[Sample], pool: Sequence[Mapping[str, Any]]
    ) -> dict[int, list[int]]:
        task = self.task
        if task.num_fewshot == 0:
            return {s.id: [] for s in samples}
        by = self.preset.fewshot_by if self.preset is not None else None
        if by is not None:
            # Each group's own examples (MMLU: a subject's dev rows), first_n as lm-eval's
            # subject tasks take them; the pool's indices are kept.
            if task.fewshot.sampler != "first_n":
                raise PermanentError("LmEvalInvalid", f"fewshot_by {by} needs sampler first_n")
            groups: dict[Any, list[int]] = {}
            for index, doc in enumerate(pool):
                groups.setdefault(doc.get(by), []).append(index)
            found = {}
            for sample in samples:
                own = groups.get(sample.record.get(by), [])
                if len(own) < task.num_fewshot:
                    raise PermanentError(
                        "LmEvalInvalid",
                        f"num_fewshot {task.num_fewshot}: {by} {sample.record.get(by)!r} has "
                        f"{len(own)} few-shot examples",
                    )
                found[sample.id] = own[: task.num_fewshot]
            return found
        last = max(s.id for s in samples)
        docs: list[Mapping[str, Any] | None] = [None] * (last + 1)
        for sample in samples:
            docs[sample.id] = sample.record
        drawn = fewshot_examples(task, docs, pool)
        return {s.id: drawn[s.id] for s in samples}

    def _item(
        self, prompts: Prompts, doc: Mapping[str, Any], context: Any, multiple_input: bool
    ) -> Item:
        task = self.task
        category = None
        preset = self.preset
        if preset is not None and preset.category_column is not None:
            category = preset.category_of(str(doc.get(preset.category_column)))
        if task.output_type == "generate_until":
            choices = prompts.choices(doc) if prompts.has_choices else None
            reference = generated_reference(prompts.target(doc), choices)
            return Item((context,), (), None, None, reference, category)
        delimiter = task.target_delimiter
        if multiple_input:
            choices = [str(c) for c in prompts.choices(doc)]
            continuation = delimiter + str(prompts.target(doc))
            gold = prompts.text(doc)
            return Item(tuple(context), (continuation,), tuple(choices), gold, None, category)
        choices = [str(c) for c in prompts.choices(doc)]
        gold = gold_index(prompts.target(doc), choices)
        continuations = tuple(delimiter + c for c in choices)
        return Item((context,), continuations, tuple(choices), gold, None, category)

    # --- asking and scoring ------------------------------------------------------------------

    async def answer(
        self, client: Any, item: Item, messages: list[Message]
    ) -> tuple[Completion, dict[str, float], dict[str, Any]]:
        """The sample's completion (for a multiple-choice one: the chosen choice, with what
        its requests used), its scores and the details its row keeps. `client` is an
        HttpModelClient, or the response cache around one."""
        task = self.task
        if task.output_type == "generate_until":
            if self.model.api == "Completions":
                completion = await client.complete_prompt(
                    item.contexts[0],
                    stop=list(task.generation["until"]),
                    max_tokens=int(task.generation["max_tokens"]),
                )
            else:
                completion = await client.complete(messages)
            scores: dict[str, float] = {}
            answers: dict[str, str] = {}
            assert item.reference is not None
            for pipeline in task.filters:
                answer = apply_filters(pipeline, completion.text)
                answers[pipeline.name] = answer
                for metric in task.metrics:
                    name = metric_key(metric.name, pipeline.name)
                    scores[name] = exact_match(answer, item.reference, metric.options)
            self._categorised(scores, item)
            return completion, scores, {"answers": answers, "reference": item.reference}
        if len(item.contexts) > 1:
            asked = await asyncio.gather(
                *(client.loglikelihood(c, item.continuations[0]) for c in item.contexts)
            )
        else:
            asked = await client.loglikelihoods(item.contexts[0], list(item.continuations))
        loglikelihoods = [a.likelihood.loglikelihood for a in asked]
        assert item.choices is not None and item.gold is not None
        scores = choice_scores(task.metrics, loglikelihoods, list(item.choices), item.gold)
        self._categorised(scores, item)
        picked = max(range(len(loglikelihoods)), key=lambda i: (loglikelihoods[i], -i))
        spend = Spend()
        for a in asked:
            spend.requests += a.spend.requests
            spend.timed_out += a.spend.timed_out
            spend.cost += a.spend.cost
        completion = Completion(
            item.choices[picked],
            sum(a.input_tokens for a in asked),
            sum(a.output_tokens for a in asked),
            latency=max(a.latency for a in asked),
            spend=spend,
        )
        details = {
            "answer": item.choices[picked],
            "gold": item.gold,
            "choices": [
                {
                    "text": c,
                    "loglikelihood": a.likelihood.loglikelihood,
                    "greedy": a.likelihood.greedy,
                }
                for c, a in zip(item.choices, asked, strict=True)
            ],
        }
        return completion, scores, details

    def _categorised(self, scores: dict[str, float], item: Item) -> None:
        """A preset's category results: the first result, over the category's samples."""
        if item.category is not None and scores:
            first = next(iter(scores))
            scores[f"{first}_{item.category}"] = scores[first]


def _gold_text(item: Item) -> str:
    if item.choices is None or item.gold is None:
        return ""
    gold = item.gold[0] if isinstance(item.gold, list) else item.gold
    return item.choices[gold] if 0 <= gold < len(item.choices) else ""
