"""task.lmEval on the emulator with the real operator: the task file is read from its ConfigMap
before the run starts; one that cannot run is a Warning with the field named (the run waits,
nothing is lost), and fixing the ConfigMap starts the run by itself. The run's results are the
task file's metrics, its thresholds judged on them, and the file the pods read is the one
frozen with the run. A preset runs from the operator's Hub mirror."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from eval_api.lmeval import LM_EVAL_VERSION
from eval_api.lmeval.presets import PRESETS
from tests.support.completions_server import CompletionsServer
from tests.support.hfhub import StandInHub, parquet
from tests.support.operator_cluster import NS, RECORDS, condition, manifest, running_cluster

pytestmark = pytest.mark.integration

# A generate_until task over the inline records: the stand-in chat model answers arithmetic.
TASK = {
    "task": "arithmetic",
    "output_type": "generate_until",
    "test_split": "test",
    "doc_to_text": "{{question}}",
    "doc_to_target": "{{answer}}",
    "generation_kwargs": {"until": ["\n\n"], "max_gen_toks": 32},
    "filter_list": [
        {"name": "last-number", "filter": [
            {"function": "regex", "regex_pattern": "(-?[0-9]+)", "group_select": -1},
            {"function": "take_first"},
        ]},
    ],
    "metric_list": [{"metric": "exact_match"}],
}  # fmt: skip


def task_config_map(task: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "lm-tasks", "namespace": NS},
        "data": {"arithmetic.yaml": yaml.safe_dump(task)},
    }


def test_a_task_file_is_checked_before_the_run_and_a_fix_starts_it(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        refused = {**TASK, "process_docs": "utils.process_docs"}
        assert cluster.apply(task_config_map(refused)).status_code == 201
        body = manifest(
            "lm-task",
            cluster.model,
            task={"lmEval": {"configMapRef": {"name": "lm-tasks", "key": "arithmetic.yaml"}}},
            thresholds=["exact_match_last_number >= 0.75"],
        )
        assert cluster.apply(body).status_code == 201
        waiting = cluster.wait(
            "lm-task",
            lambda e: "status" in e and condition(e, "Ready").get("reason") == "LmEvalUnsupported",
        )
        message = condition(waiting, "Ready")["message"]
        assert "process_docs" in message and "cannot run here" in message, message
        assert waiting["status"]["phase"] == "Pending"
        (warning,) = cluster.wait_event("lm-task", ("LmEvalUnsupported",))
        assert warning["type"] == "Warning" and "process_docs" in warning["message"]
        assert cluster.job_posts() == []

        # Fixed in the ConfigMap (the spec is unchanged): the operator looks again.
        cluster.api.patch(
            "", "v1", "configmaps", NS, "lm-tasks", {"data": task_config_map(TASK)["data"]}
        )
        done = cluster.wait_phase("lm-task", "Succeeded", timeout=180)
        results = {r["name"]: r for r in done["status"]["results"]}
        assert list(results) == ["exact_match_last_number"]
        assert done["status"]["taskSource"] == (
            "lm-eval task arithmetic, 0-shot, from ConfigMap lm-tasks key arithmetic.yaml"
        )
        assert results["exact_match_last_number"]["n"] == len(RECORDS)
        # The stand-in model answers every arithmetic question but those it is told to miss.
        assert condition(done, "Passed")["status"] == "True"

        # The pods read the file frozen with the run, beside its spec.
        (frozen,) = [
            c
            for c in cluster.api.list("", "v1", "configmaps", NS)
            if "evaluation.json" in (c.get("data") or {})
        ]
        assert yaml.safe_load(frozen["data"]["lmeval-task.yaml"]) == TASK


def test_a_threshold_naming_no_metric_of_the_file_is_refused(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        assert cluster.apply(task_config_map(TASK)).status_code == 201
        body = manifest(
            "lm-threshold",
            cluster.model,
            task={"lmEval": {"configMapRef": {"name": "lm-tasks", "key": "arithmetic.yaml"}}},
            thresholds=["exact_match >= 0.5"],
        )
        assert cluster.apply(body).status_code == 201
        waiting = cluster.wait(
            "lm-threshold",
            lambda e: "status" in e and condition(e, "Ready").get("reason") == "LmEvalInvalid",
        )
        message = condition(waiting, "Ready")["message"]
        assert "'exact_match' names no result of the task" in message, message
        assert "exact_match_last_number" in message
        cluster.wait_event("lm-threshold", ("LmEvalInvalid",))


def test_a_preset_runs_sharded_from_the_operators_hub_mirror(tmp_path: Path) -> None:
    """task.preset gsm8k with no dataset: the pods read openai/gsm8k at the preset's pinned
    commit from the mirror the operator is configured with (EVAL_OPERATOR_HF_ENDPOINT), five
    examples from train before each test question; status names lm-eval's task and version."""
    questions = [f"A shop sold {i} apples and then {3 * i + 1} more. How many?" for i in range(8)]
    test_rows = [
        {"question": q, "answer": f"...\n#### {4 * i + 1}"} for i, q in enumerate(questions)
    ]
    train_rows = [
        {"question": f"Train {i}: {i} plus {i}?", "answer": f"It is {2 * i}.\n#### {2 * i}"}
        for i in range(12)
    ]
    hub, server = StandInHub(), CompletionsServer()
    hub.repo("openai/gsm8k").commits[PRESETS["gsm8k"].revision] = {
        "main/test-00000-of-00001.parquet": parquet(test_rows),
        "main/train-00000-of-00001.parquet": parquet(train_rows),
    }
    with (
        hub.in_thread(),
        server.in_thread(),
        running_cluster(tmp_path, environment={"EVAL_OPERATOR_HF_ENDPOINT": hub.url}) as cluster,
    ):
        body = manifest(
            "gsm8k",
            cluster.model,
            task={"preset": {"name": "gsm8k", "limit": 6}},
            thresholds=["exact_match_strict_match >= 0.5"],
        )
        body["spec"]["model"] = {"name": "base", "baseURL": server.base_url, "api": "Completions"}
        del body["spec"]["dataset"]
        assert cluster.apply(body).status_code == 201
        done = cluster.wait_phase("gsm8k", "Succeeded", timeout=180)
        asked = [r for r in server.requests if "prompt" in r]
    status = done["status"]
    assert status["taskSource"] == f"lm-eval {LM_EVAL_VERSION} gsm8k version 3.0, 5-shot"
    assert status["datasetSource"].startswith(
        f"huggingface openai/gsm8k@{PRESETS['gsm8k'].revision} main test"
    )
    results = {r["name"]: r for r in status["results"]}
    assert list(results) == ["exact_match_strict_match", "exact_match_flexible_extract"]
    assert results["exact_match_strict_match"]["n"] == 6  # preset.limit, over both shards
    # The stand-in model sums the last question's numbers, off by one for about a quarter.
    assert 0.5 <= results["exact_match_strict_match"]["value"] <= 1
    assert condition(done, "Passed")["status"] == "True"
    assert len(asked) == 6
    for request in asked:
        prompt = request["prompt"]
        assert prompt.count("Question: Train ") == 5 and prompt.endswith("How many?\nAnswer:")
        assert request["stop"] == ["Question:", "</s>", "<|im_end|>"]
