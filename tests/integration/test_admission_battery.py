"""A battery of malformed Evaluations against the emulated apiserver and the real operator
(issue 7 item 6): each is rejected at `kubectl apply` with a clear message, or, when only code
can tell, shown as a non-terminal condition within one reconcile; none ever runs or passes.

Admission is the CRD's schema and CEL rules as the emulator enforces them (the same pruning,
defaulting, OpenAPI and CEL evaluation as an apiserver); the operator's checks are
eval_api.checks. Grow this battery when a real cluster lets something through.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.operator_cluster import (
    GROUP,
    NS,
    PLURAL,
    VERSION,
    Cluster,
    condition,
    manifest,
    running_cluster,
)

pytestmark = pytest.mark.integration

JUDGE = {"name": "judge", "baseURL": "http://judge.example:8000/v1"}
PRICING = {"inputPerMillionUSD": "1", "outputPerMillionUSD": "2"}


def set_path(spec: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value


def scorers(*items: dict[str, Any]) -> dict[str, Any]:
    return {"task.scorers": list(items), "thresholds": []}


# name: (changes to the base spec as {"dotted.path": value}, a text the 422 message contains)
REJECTED_AT_ADMISSION: dict[str, tuple[dict[str, Any], str]] = {
    "two dataset sources": ({"dataset.builtin": "arithmetic"}, "exactly one of builtin"),
    "no dataset source": ({"dataset.inline": None}, "exactly one of builtin"),
    "url without sha256": (
        {"dataset.inline": None, "dataset.url": "https://e.example/d.jsonl"},
        "url requires sha256",
    ),
    "sha256 without url": ({"dataset.sha256": "a" * 64}, "sha256 is only meaningful with url"),
    "sha256 not hex": (
        {
            "dataset.inline": None,
            "dataset.url": "https://e.example/d.jsonl",
            "dataset.sha256": "xyz",
        },
        "spec.dataset.sha256",
    ),
    "unknown builtin": ({"dataset.inline": None, "dataset.builtin": "nope"}, "Unsupported value"),
    "url not http": (
        {"dataset.inline": None, "dataset.url": "ftp://e/d", "dataset.sha256": "a" * 64},
        "spec.dataset.url",
    ),
    "empty inline dataset": ({"dataset.inline": []}, "spec.dataset.inline"),
    "inline dataset too long": (
        {"dataset.inline": [{"question": "q", "answer": "a"}] * 1001},
        "spec.dataset.inline",
    ),
    "zero shards": ({"execution.shards": 0}, "spec.execution.shards"),
    "too many shards": ({"execution.shards": 1001}, "spec.execution.shards"),
    "parallelism above shards": (
        {"execution.shards": 2, "execution.parallelism": 3},
        "parallelism cannot exceed shards",
    ),
    "zero parallelism": ({"execution.parallelism": 0}, "spec.execution.parallelism"),
    "too many retries": ({"execution.backoffLimitPerIndex": 21}, "backoffLimitPerIndex"),
    "zero deadline": ({"execution.activeDeadlineSeconds": 0}, "activeDeadlineSeconds"),
    "zero concurrency": ({"model.maxConcurrency": 0}, "spec.model.maxConcurrency"),
    "huge concurrency": ({"model.maxConcurrency": 2000}, "spec.model.maxConcurrency"),
    "zero timeout": ({"model.timeoutSeconds": 0}, "spec.model.timeoutSeconds"),
    "temperature 99": ({"model.parameters": {"temperature": "99"}}, "temperature must be between"),
    "temperature as a float": (
        {"model.parameters": {"temperature": 0.5}},
        "must be of type string",
    ),
    "temperature not a number": ({"model.parameters": {"temperature": "hot"}}, "temperature"),
    "topP 2": ({"model.parameters": {"topP": "2"}}, "topP must be between 0 and 1"),
    "zero maxTokens": ({"model.parameters": {"maxTokens": 0}}, "maxTokens"),
    "nine stop sequences": (
        {"model.parameters": {"stop": ["x"] * 9}},
        "spec.model.parameters.stop",
    ),
    "unknown provider": ({"model.provider": "gemini"}, "Unsupported value"),
    "baseURL not http": ({"model.baseURL": "ftp://models"}, "spec.model.baseURL"),
    "empty model name": ({"model.name": ""}, "spec.model.name"),
    "empty key Secret name": (
        {"model.apiKeySecretRef": {"name": "", "key": "k"}},
        "spec.model.apiKeySecretRef.name",
    ),
    "CA bundle from two sources": (
        {
            "model.caBundle": {
                "configMapRef": {"name": "ca", "key": "ca.crt"},
                "secretRef": {"name": "ca", "key": "ca.crt"},
            }
        },
        "exactly one of configMapRef or secretRef",
    ),
    "CA bundle from nowhere": ({"model.caBundle": {}}, "exactly one of configMapRef or secretRef"),
    "bad pricing": (
        {"model.pricing": {"inputPerMillionUSD": "free", "outputPerMillionUSD": "1"}},
        "inputPerMillionUSD",
    ),
    "empty prompt template": ({"task.promptTemplate": ""}, "spec.task.promptTemplate"),
    "empty system prompt": ({"task.systemPrompt": ""}, "spec.task.systemPrompt"),
    "too many few-shot examples": (
        {"task.fewShot": [{"input": "1", "target": "1"}] * 33},
        "spec.task.fewShot",
    ),
    "no scorers": (scorers(), "spec.task.scorers"),
    "seventeen scorers": (
        scorers(*[{"type": "exact_match", "name": f"s{i}"} for i in range(17)]),
        "spec.task.scorers",
    ),
    "duplicate scorer names": (
        scorers({"type": "exact_match"}, {"type": "contains", "name": "exact_match"}),
        "scorer names (name, or type when unnamed) must be unique",
    ),
    "unknown scorer type": (scorers({"type": "bleu"}), "Unsupported value"),
    "regex without pattern": (scorers({"type": "regex"}), "a regex scorer requires pattern"),
    "pattern on another scorer": (
        scorers({"type": "exact_match", "pattern": "x"}),
        "pattern is only used by the regex scorer",
    ),
    "tolerance on another scorer": (
        scorers({"type": "contains", "tolerance": "1"}),
        "tolerance is only used by the numeric scorer",
    ),
    "tolerance not a number": (scorers({"type": "numeric", "tolerance": "close"}), "tolerance"),
    "llm_judge without judge": (
        scorers({"type": "llm_judge", "rubric": "{{ output }}"}),
        "an llm_judge scorer requires judge and rubric",
    ),
    "judge on another scorer": (
        scorers({"type": "exact_match", "judge": JUDGE}),
        "judge and rubric are only used by the llm_judge scorer",
    ),
    "empty rubric": (
        scorers({"type": "llm_judge", "judge": JUDGE, "rubric": ""}),
        "spec.task.scorers[0].rubric",
    ),
    "unknown normalisation": (
        scorers({"type": "exact_match", "normalize": ["stemming"]}),
        "Unsupported value",
    ),
    "bad scorer name": (scorers({"type": "exact_match", "name": "Exact-Match"}), "name"),
    "threshold syntax": ({"thresholds": ["exact_match => 0.8"]}, "spec.thresholds[0]"),
    "negative threshold": ({"thresholds": ["exact_match >= -1"]}, "spec.thresholds[0]"),
    "seventeen thresholds": ({"thresholds": ["exact_match >= 0.1"] * 17}, "spec.thresholds"),
    "budget without pricing": ({"budget": {"maxCostUSD": "5"}}, "requires model.pricing"),
    "budget without maxTokens": (
        {"budget": {"maxCostUSD": "5"}, "model.pricing": PRICING},
        "requires model.parameters.maxTokens",
    ),
    "budget with an unpriced judge": (
        {
            "budget": {"maxCostUSD": "5"},
            "model.pricing": PRICING,
            "model.parameters": {"maxTokens": 8},
            "task.scorers": [
                {"type": "exact_match"},
                {"type": "llm_judge", "judge": JUDGE, "rubric": "{{ output }}"},
            ],
        },
        "the pricing of every llm_judge scorer's judge",
    ),
    "budget with a judge without maxTokens": (
        {
            "budget": {"maxCostUSD": "5"},
            "model.pricing": PRICING,
            "model.parameters": {"maxTokens": 8},
            "task.scorers": [
                {"type": "exact_match"},
                {
                    "type": "llm_judge",
                    "judge": {**JUDGE, "pricing": PRICING},
                    "rubric": "{{ output }}",
                },
            ],
        },
        "parameters.maxTokens of every openai llm_judge scorer's judge",
    ),
    "budget in scientific notation": ({"budget": {"maxCostUSD": "1e3"}}, "maxCostUSD"),
    "zero maxRequests": ({"budget": {"maxRequests": 0}}, "maxRequests"),
    "cpu: lots": ({"execution.resources": {"requests": {"cpu": "lots"}}}, "cpu"),
    "memory: 1 GB": ({"execution.resources": {"limits": {"memory": "1 GB"}}}, "memory"),
    "negative cpu": ({"execution.resources": {"requests": {"cpu": -1}}}, "cpu"),
    "image reference with spaces": ({"execution.image": "my runner:1"}, "spec.execution.image"),
    "image reference upper case path": (
        {"execution.image": "registry.example/Eval/Runner:1"},
        "spec.execution.image",
    ),
    "toleration Exists with a value": (
        {"execution.tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]},
        "value must be empty when operator is Exists",
    ),
    "toleration without key": (
        {"execution.tolerations": [{"operator": "Equal", "value": "v"}]},
        "an empty key requires operator Exists",
    ),
    "nodeSelector value too long": (
        {"execution.nodeSelector": {"pool": "x" * 64}},
        "spec.execution.nodeSelector",
    ),
}

# name: (changes, the Ready reason, a text of its message): the schema cannot tell, the operator
# can, before any Job exists.
REPORTED_BY_THE_OPERATOR: dict[str, tuple[dict[str, Any], str, str]] = {
    "threshold naming no scorer": (
        {"thresholds": ["exact_matc >= 0.5"]},
        "InvalidSpec",
        "spec.thresholds[0]: 'exact_matc' names no scorer",
    ),
    "threshold out of range": (
        {"thresholds": ["exact_match >= 1.5"]},
        "InvalidSpec",
        "spec.thresholds[0]: exact_match takes values in [0, 1]",
    ),
    "regex that does not compile": (
        scorers({"type": "regex", "pattern": "(unclosed"}),
        "InvalidSpec",
        "spec.task.scorers[0].pattern: not a valid regular expression",
    ),
    "template syntax error": (
        {"task.promptTemplate": "{{ input "},
        "InvalidSpec",
        "spec.task.promptTemplate: line 1",
    ),
    "rubric with a misspelt variable": (
        scorers({"type": "llm_judge", "judge": JUDGE, "rubric": "Grade {{ ouptut }}"}),
        "InvalidSpec",
        "spec.task.scorers[0].rubric: UndefinedError: 'ouptut' is undefined",
    ),
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("battery")) as running:
        yield running


def malformed(cluster: Cluster, name: str, changes: dict[str, Any]) -> dict[str, Any]:
    body = manifest(name, cluster.model)
    for dotted, value in changes.items():
        set_path(body["spec"], dotted, copy.deepcopy(value))
    return body


def test_the_battery_is_big_enough() -> None:
    assert len(REJECTED_AT_ADMISSION) + len(REPORTED_BY_THE_OPERATOR) >= 49


@pytest.mark.parametrize("case", sorted(REJECTED_AT_ADMISSION))
def test_rejected_at_apply_with_a_clear_message(cluster: Cluster, case: str) -> None:
    changes, expected = REJECTED_AT_ADMISSION[case]
    name = f"bad-{abs(hash(case)) % 10**8}"
    response = cluster.apply(malformed(cluster, name, changes))
    assert response.status_code == 422, (case, response.text)
    body = response.json()
    assert body["reason"] == "Invalid"
    assert expected in body["message"], body["message"]
    assert cluster.evaluation(name) is None


def test_a_64_character_name_is_rejected(cluster: Cluster) -> None:
    response = cluster.apply(malformed(cluster, "x" * 64, {}))
    assert response.status_code == 422
    assert "metadata.name must be at most 63 characters" in response.json()["message"]


@pytest.mark.parametrize("case", sorted(REPORTED_BY_THE_OPERATOR))
def test_what_only_the_operator_can_see_is_a_condition(cluster: Cluster, case: str) -> None:
    changes, reason, text = REPORTED_BY_THE_OPERATOR[case]
    name = f"odd-{abs(hash(case)) % 10**8}"
    assert cluster.apply(malformed(cluster, name, changes)).status_code == 201
    ev = cluster.wait(
        name,
        lambda e: (
            bool((e.get("status") or {}).get("conditions"))
            and condition(e, "Ready")["reason"] == reason
        ),
        timeout=10,
    )
    ready = condition(ev, "Ready")
    assert text in ready["message"], ready
    assert ev["status"]["phase"] == "Failed" and "startTime" not in ev["status"]
    assert condition(ev, "Stalled")["status"] == "True"
    assert condition(ev, "Passed")["status"] == "False"
    assert not [job for job in cluster.job_posts() if job.startswith(f"{name}-")]
    url = f"{cluster.api.url}/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/{name}"
    assert httpx.delete(url, timeout=10).status_code == 200
