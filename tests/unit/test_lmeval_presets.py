"""The presets against lm-eval's own task files at LM_EVAL_VERSION (tests/parity/presets.json,
written by `make parity` from lm-eval's installed tasks): every field the same, except where a
difference is the point and is stated here — a Python function written as the template it
amounts to (held to the function's own output on probe docs), and MMLU's 57 subject files read
as one (the subject's name from its column)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from eval_api.lmeval import LM_EVAL_VERSION
from eval_api.lmeval.config import load_task
from eval_api.lmeval.presets import (
    MMLU_CATEGORIES,
    PRESETS,
    preset_dataset,
    preset_result_names,
    preset_text,
)
from eval_api.matrix import cell_problems, cells_of
from eval_api.v1alpha1.evalsuite import EvalSuite
from eval_api.v1alpha1.task import PresetTask
from eval_runner.lmeval.prompts import Prompts

PARITY = Path(__file__).resolve().parents[1] / "parity"
LM_EVAL = json.loads((PARITY / "presets.json").read_text())
# Fields of ours that differ from lm-eval's file on purpose, by preset.
WRITTEN_AS_TEMPLATES = {
    "hellaswag": {"process_docs", "doc_to_text", "doc_to_choice"},
    "winogrande": {"doc_to_text", "doc_to_target", "doc_to_choice"},
    # One task over the "all" configuration: the subject from its column.
    "mmlu": {"dataset_name", "description", "task", "task_alias", "tag"},
    "mmlu_generative": {"dataset_name", "description", "task", "task_alias", "tag"},
}


def ours(name: str) -> dict[str, Any]:
    generative = name.endswith("_generative")
    return yaml.safe_load(preset_text(name.removesuffix("_generative"), generative))


def test_the_reference_is_lm_evals_version() -> None:
    assert LM_EVAL["lm_eval"] == LM_EVAL_VERSION


@pytest.mark.parametrize("name", sorted(LM_EVAL["tasks"]))
def test_each_preset_is_lm_evals_task_field_by_field(name: str) -> None:
    theirs, mine = LM_EVAL["tasks"][name], ours(name)
    skipped = WRITTEN_AS_TEMPLATES.get(name, set())
    for field in sorted((set(theirs) | set(mine)) - skipped):
        assert mine.get(field) == theirs.get(field), (name, field)


def test_mmlus_description_names_the_subject_as_each_subject_file_does() -> None:
    theirs = LM_EVAL["tasks"]["mmlu"]
    task = load_task(preset_text("mmlu"), "mmlu")
    doc = {"subject": "abstract_algebra", "question": "q", "choices": list("wxyz"), "answer": 1}
    prompts = Prompts(task, list(doc))
    assert prompts.context(doc, [], False).startswith(theirs["description"])
    assert theirs["dataset_name"] == "abstract_algebra"
    assert sum(len(s) for s in MMLU_CATEGORIES.values()) == 57


def test_hellaswags_templates_give_what_its_process_docs_gives() -> None:
    task = load_task(preset_text("hellaswag"), "hellaswag")
    for probe in LM_EVAL["probes"]["hellaswag"]:
        doc, processed = probe["doc"], probe["processed"]
        prompts = Prompts(task, list(doc))
        assert prompts.text(doc) == processed["query"]
        assert prompts.choices(doc) == processed["choices"]
        assert prompts.target(doc) == processed["gold"]


def test_winograndes_templates_give_what_its_functions_give() -> None:
    task = load_task(preset_text("winogrande"), "winogrande")
    for probe in LM_EVAL["probes"]["winogrande"]:
        doc = probe["doc"]
        prompts = Prompts(task, list(doc))
        assert prompts.text(doc) == probe["text"]
        assert prompts.choices(doc) == probe["choice"]
        assert prompts.target(doc) == probe["target"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_reads_a_pinned_commit_and_names_its_results(name: str) -> None:
    spec = PresetTask(name=name)
    hub = preset_dataset(spec).huggingface
    assert hub is not None and len(hub.revision) == 40
    int(hub.revision, 16)
    names = preset_result_names(spec)
    assert names and len(set(names)) == len(names)
    if name in ("hellaswag", "arc_easy", "arc_challenge"):
        assert names == ["acc", "acc_norm"]
    if name != "gsm8k":
        assert preset_result_names(PresetTask(name=name, generative=True))[0] == (
            "exact_match_get_response"
        )


def test_a_suite_matrix_of_presets_is_three_lines() -> None:
    suite = EvalSuite.model_validate(
        yaml.safe_load(
            """
apiVersion: evals.io/v1alpha1
kind: EvalSuite
metadata: {name: nightly}
spec:
  store: {}
  models:
  - {name: a, model: {name: a, baseURL: "http://a:8000/v1", api: Completions}}
  - {name: b, model: {name: b, baseURL: "http://b:8000/v1", api: Completions}}
  tasks:
  - {name: mmlu, task: {preset: {name: mmlu, numFewshot: 5}}, thresholds: ["acc >= 0.3"]}
  - {name: gsm8k, task: {preset: {name: gsm8k}}}
"""
        )
    )
    cells = cells_of("nightly", suite.spec)
    assert [c.id for c in cells] == ["a/mmlu", "a/gsm8k", "b/mmlu", "b/gsm8k"]
    assert "dataset" not in cells[0].spec
    assert cell_problems(cells) == []
    wrong = suite.spec.model_copy(deep=True)
    assert wrong.tasks is not None
    wrong.tasks[0].thresholds = ["exact_match >= 0.3"]
    (problem, _) = cell_problems(cells_of("nightly", wrong))
    assert "'exact_match' names no result of the task" in problem and "acc_stem" in problem
