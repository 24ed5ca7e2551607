"""task.preset end to end with `eval-runner run`: the preset's repository at its pinned commit
on a stand-in Hub (HF_ENDPOINT, as a mirror), MMLU's few-shot examples from each subject's
own dev rows and its category results, and a chat model running a multiple-choice preset's
generative variant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from eval_api.lmeval.presets import PRESETS
from tests.support.completions_server import CompletionsServer
from tests.support.hfhub import StandInHub, parquet
from tests.support.model_server import ModelServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def mmlu_rows(split: str) -> list[dict[str, Any]]:
    return [
        {
            "question": f"{subject} {split} question {i}?",
            "subject": subject,
            "choices": [f"{subject[:4]} {i} {c}" for c in "wxyz"],
            "answer": i % 4,
        }
        for subject in ("abstract_algebra", "philosophy")
        for i in range(3)
    ]


def run(manifest: dict[str, Any], tmp_path: Path, hub: StandInHub) -> tuple[dict, list[dict]]:
    path = tmp_path / "evaluation.yaml"
    path.write_text(yaml.safe_dump(manifest))
    samples = tmp_path / "samples.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "EVAL_"))}
    env["PYTHONPATH"] = os.pathsep.join(str(ROOT / p) for p in ("api", "runner", "operator"))
    done = subprocess.run(
        [sys.executable, "-m", "eval_runner", "run", str(path), "--no-progress",
         "--output", "json", "--samples", str(samples)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**env, "HF_ENDPOINT": hub.url, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-3000:]
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    return json.loads(done.stdout), lines


def evaluation(model: dict[str, Any], preset: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": "preset"},
        "spec": {"model": model, "task": {"preset": preset}},
    }


def test_mmlu_draws_each_subjects_own_examples_and_reports_its_categories(
    tmp_path: Path,
) -> None:
    hub, server = StandInHub(), CompletionsServer()
    hub.repo("cais/mmlu").commits[PRESETS["mmlu"].revision] = {
        "all/test-00000-of-00001.parquet": parquet(mmlu_rows("test")),
        "all/dev-00000-of-00001.parquet": parquet(mmlu_rows("dev")),
    }
    with hub.in_thread(), server.in_thread():
        model = {"name": "m", "baseURL": server.base_url, "api": "Completions"}
        report, lines = run(evaluation(model, {"name": "mmlu", "numFewshot": 2}), tmp_path, hub)
    results = {r["name"]: r for r in report["results"]}
    assert list(results) == [
        "acc",
        "acc_stem",
        "acc_other",
        "acc_social_sciences",
        "acc_humanities",
    ]
    assert results["acc"]["n"] == 6
    assert results["acc_stem"]["n"] == 3 and results["acc_humanities"]["n"] == 3
    assert results["acc_other"]["n"] == 0
    scored = [line["scores"]["acc"] for line in lines]
    assert results["acc"]["value"] == pytest.approx(sum(scored) / 6)
    by_id = {line["id"]: line for line in lines}
    philosophy = by_id[3]["prompt"][0]["content"]
    assert philosophy.startswith(
        "The following are multiple choice questions (with answers) about philosophy.\n\n"
        "philosophy dev question 0?\nA. phil 0 w\nB. phil 0 x\nC. phil 0 y\nD. phil 0 z\n"
        "Answer: A\n\nphilosophy dev question 1?\n"
    )
    assert philosophy.endswith("philosophy test question 0?\nA. phil 0 w\nB. phil 0 x\n"
                               "C. phil 0 y\nD. phil 0 z\nAnswer:")  # fmt: skip
    assert "algebra" not in philosophy
    details = by_id[3]["details"]
    assert [c["text"] for c in details["choices"]] == ["A", "B", "C", "D"]
    assert details["gold"] == 0 and details["answer"] in "ABCD"


def test_a_chat_model_runs_a_multiple_choice_presets_generative_variant(tmp_path: Path) -> None:
    rows = [
        {"id": f"q{i}", "question": f"What is {i} + {i}?",
         "choices": {"text": [str(2 * i), str(2 * i + 1), "7"], "label": ["A", "B", "C"]},
         "answerKey": "A"}
        for i in range(4)
    ]  # fmt: skip
    hub = StandInHub()
    hub.repo("allenai/ai2_arc").commits[PRESETS["arc_easy"].revision] = {
        "ARC-Easy/test-00000-of-00001.parquet": parquet(rows),
    }
    # The stand-in chat model answers with the letter of its computed sum's choice.
    answers = {
        f"Question: What is {i} + {i}?\nA. {2 * i}\nB. {2 * i + 1}\nC. 7\nAnswer:": "A\nbecause"
        for i in range(3)
    }
    with hub.in_thread(), ModelServer(answers=answers).in_thread() as chat:
        model = {"name": "chat", "baseURL": chat.base_url}
        preset = {"name": "arc_easy", "generative": True}
        report, lines = run(evaluation(model, preset), tmp_path, hub)
        sent = chat.requests
    (result,) = report["results"]
    assert result["name"] == "exact_match_get_response"
    assert result["n"] == 4 and result["value"] == pytest.approx(0.75)
    # Lines come in the order samples finish: read them by id.
    answers = {line["id"]: line["details"]["answers"]["get_response"] for line in lines}
    assert [answers[i] for i in range(3)] == ["A"] * 3
    body = sent[0].body
    assert body["stop"] == ["</s>", "\n"] and body["max_tokens"] == 256
    assert body["temperature"] == 0
