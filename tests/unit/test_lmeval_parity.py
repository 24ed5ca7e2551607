"""eval_runner.lmeval against lm-eval itself: tests/parity/golden.jsonl is lm-eval's per-sample
output (`make parity`: lm-eval in its own venv, local-completions and local-chat-completions
against the deterministic completions server, the tasks and rows in tests/parity). For every
sample of every task and API, our engine builds the same requests character for character (the
few-shot contexts and draws, the chat turns, the continuations) and, from lm-eval's own
responses, the same filtered answers and metrics."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from eval_api.lmeval.config import TaskSpec, load_task
from eval_runner.lmeval import LM_EVAL_VERSION
from eval_runner.lmeval.prompts import Prompts, fewshot_examples
from eval_runner.lmeval.scoring import (
    apply_filters,
    choice_scores,
    exact_match,
    generated_reference,
    gold_index,
)

PARITY = Path(__file__).resolve().parents[1] / "parity"
HEADER, *GOLDEN = [json.loads(line) for line in (PARITY / "golden.jsonl").read_text().splitlines()]
TASKS = sorted({row["task"] for row in GOLDEN})
PASSES = sorted({(row["api"], row["task"]) for row in GOLDEN})


def rows(task: str, split: str) -> list[dict[str, Any]]:
    path = PARITY / "data" / f"{task.removeprefix('parity_')}_{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def requests_of(
    task: TaskSpec, docs: list[dict[str, Any]], api: str = "Completions"
) -> list[list[list[Any]]]:
    """Each doc's requests as lm-eval logs them: [context (a chat API's: the messages),
    continuation or generation kwargs]."""
    pool = rows(task.task, task.fewshot_split) if task.fewshot_split else []
    prompts = Prompts(task, list(docs[0]))
    multiple_input = prompts.is_multiple_input(docs[0])
    found = []
    for doc, picked in zip(docs, fewshot_examples(task, docs, pool), strict=True):
        examples = [pool[i] for i in picked]
        context = prompts.context(doc, examples, multiple_input)
        if task.output_type == "generate_until":
            kwargs = yaml.safe_load((PARITY / "tasks" / f"{task.task}.yaml").read_text())[
                "generation_kwargs"
            ]
            if api == "ChatCompletions":
                context = prompts.chat(doc, examples)
            found.append([[context, kwargs]])
        elif multiple_input:
            continuation = task.target_delimiter + prompts.target(doc)
            found.append([[c, continuation] for c in context])
        else:
            found.append([[context, task.target_delimiter + c] for c in prompts.choices(doc)])
    return found


def test_the_golden_file_is_lm_evals_of_the_version_we_follow() -> None:
    assert HEADER["lm_eval"] == LM_EVAL_VERSION
    assert TASKS == ["parity_arith", "parity_letters", "parity_mc", "parity_mmlu", "parity_wino"]
    # The generate_until tasks are asked through the chat API too, with a chat template.
    chat = sorted(task for api, task in PASSES if api == "ChatCompletions")
    assert chat == ["parity_arith", "parity_letters"]


@pytest.mark.parametrize(("api", "name"), PASSES)
def test_the_same_requests_answers_and_scores_as_lm_eval(api: str, name: str) -> None:
    task = load_task((PARITY / "tasks" / f"{name}.yaml").read_text(), f"{name}.yaml")
    docs = rows(name, task.eval_split)
    expected = [row for row in GOLDEN if row["task"] == name and row["api"] == api]
    built = requests_of(task, docs, api)
    prompts = Prompts(task, list(docs[0]))
    by_filter: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in expected:
        by_filter[row["filter"]].append(row)
        doc = docs[row["doc_id"]]
        logged = row["arguments"]
        ours = json.loads(json.dumps(built[row["doc_id"]]))
        assert ours == logged, (name, row["doc_id"])
        if task.output_type == "generate_until":
            (pipeline,) = [p for p in task.filters if p.name == row["filter"]]
            (response,) = row["resps"][0]
            answer = apply_filters(pipeline, response)
            assert [answer] == row["filtered_resps"]
            reference = generated_reference(prompts.target(doc), None)
            (metric,) = task.metrics
            assert exact_match(answer, reference, metric.options) == row["metrics"]["exact_match"]
        else:
            loglikelihoods = [float(r[0][0]) for r in row["resps"]]
            if prompts.is_multiple_input(doc):
                choices, gold = prompts.choices(doc), prompts.text(doc)
            else:
                choices = prompts.choices(doc)
                gold = gold_index(prompts.target(doc), choices)
            assert choice_scores(task.metrics, loglikelihoods, choices, gold) == row["metrics"]
    # Every doc is in the file once per filter: nothing was left out on either side.
    for found in by_filter.values():
        assert sorted(r["doc_id"] for r in found) == list(range(len(docs)))
