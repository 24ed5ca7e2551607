"""The Indexed Job and run config: valid Kubernetes objects, restricted, deterministic."""

import json

import kubernetes_validate
import pytest

from eval_api.exitcodes import EXIT_STORE_AWAY
from eval_api.v1alpha1 import EvaluationSpec
from eval_operator.builders.meta import run_name
from eval_operator.handlers.evaluation import missing_input
from eval_operator.settings import OperatorSettings
from tests.support.factories import BASE_SPEC, evaluation, make_job, make_run_config

K8S_VERSION = "1.30"
SETTINGS = OperatorSettings(runner_image="registry.example/eval-runner:1.2.3")


def strict_validate(obj):
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def full_spec():
    spec = json.loads(json.dumps(BASE_SPEC))
    spec["dataset"] = {"configMapRef": {"name": "qa", "key": "qa.jsonl"}}
    spec["model"]["caBundle"] = {"secretRef": {"name": "corp-ca", "key": "ca.pem"}}
    spec["execution"] = {
        "shards": 4,
        "parallelism": 2,
        "backoffLimitPerIndex": 3,
        "activeDeadlineSeconds": 3600,
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": 2147483648}},
        "nodeSelector": {"pool": "cpu"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "evals", "effect": "NoSchedule"}
        ],
        "image": "registry.example/custom-runner:9",
    }
    spec["suspend"] = True
    return spec


@pytest.mark.parametrize("spec", [BASE_SPEC, full_spec()], ids=["minimal", "full"])
def test_job_and_config_are_valid_objects(spec):
    ev = evaluation(spec=spec)
    run = run_name("quick", ev["metadata"]["uid"], None)
    strict_validate(make_job(ev, run, SETTINGS))
    strict_validate(make_run_config(ev, run))


def test_run_name_is_deterministic_and_changes_with_rerun_token():
    uid = "11111111-2222-3333-4444-555555555555"
    assert run_name("quick", uid, None) == run_name("quick", uid, None)
    assert run_name("quick", uid, "1") != run_name("quick", uid, None)
    assert run_name("quick", uid, "1") != run_name("quick", uid, "2")
    assert run_name("quick", "other-uid", None) != run_name("quick", uid, None)
    long = run_name("x" * 63, uid, None)
    assert len(long) <= 63 and long.startswith("x" * 50)


def test_job_is_indexed_owned_and_labelled():
    ev = evaluation(labels={"kueue.x-k8s.io/queue-name": "evals", "team": "a"})
    job = make_job(ev, "quick-abc123", SETTINGS)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == 1 and spec["parallelism"] == 1
    assert spec["backoffLimitPerIndex"] == 2
    owner = job["metadata"]["ownerReferences"][0]
    assert owner == {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "Evaluation",
        "name": "quick",
        "uid": ev["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    labels = job["metadata"]["labels"]
    assert labels["evals.io/evaluation"] == "quick"
    assert labels["evals.io/run"] == "quick-abc123"
    assert labels["kueue.x-k8s.io/queue-name"] == "evals"
    assert "team" not in labels
    assert spec["template"]["metadata"]["labels"] == labels


def test_pod_security_is_restricted():
    pod = make_job(evaluation(spec=full_spec()), "r", SETTINGS)["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
    # A read-only root needs a writable /tmp.
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert "readOnly" not in mounts["/tmp"]
    assert all(m.get("readOnly") for path, m in mounts.items() if path != "/tmp")


def test_api_key_comes_only_from_the_secret():
    job = make_job(evaluation(), "r", SETTINGS)
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EVAL_API_KEY"] == {
        "name": "EVAL_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "model-key", "key": "api-key"}},
    }
    assert "value" not in env["EVAL_API_KEY"]


def test_no_api_key_env_without_secret_ref():
    spec = json.loads(json.dumps(BASE_SPEC))
    del spec["model"]["apiKeySecretRef"]
    job = make_job(evaluation(spec=spec), "r", SETTINGS)
    names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "EVAL_API_KEY" not in names


def test_execution_settings_reach_the_job():
    job = make_job(evaluation(spec=full_spec()), "r", SETTINGS)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert (spec["completions"], spec["parallelism"], spec["backoffLimitPerIndex"]) == (4, 2, 3)
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["suspend"] is True
    assert container["image"] == "registry.example/custom-runner:9"
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"memory": "2147483648"},
    }
    assert pod["nodeSelector"] == {"pool": "cpu"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dataset"]["configMap"] == {
        "name": "qa",
        "items": [{"key": "qa.jsonl", "path": "qa.jsonl"}],
    }
    assert volumes["ca"]["secret"]["secretName"] == "corp-ca"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["EVAL_CA_BUNDLE"] == "/etc/eval/ca/ca.crt"
    assert env["EVAL_DATASET_DIR"] == "/etc/eval/dataset"


def test_defaults_come_from_operator_settings():
    container = make_job(evaluation(), "r", SETTINGS)["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/eval-runner:1.2.3"
    assert container["resources"] == SETTINGS.runner_resources


def test_permanent_runner_errors_fail_the_index_without_retry():
    rules = make_job(evaluation(), "r", SETTINGS)["spec"]["podFailurePolicy"]["rules"]
    fail_index = next(r for r in rules if r["action"] == "FailIndex")
    assert fail_index["onExitCodes"] == {"containerName": "runner", "operator": "In", "values": [3]}
    assert any(r["action"] == "Ignore" for r in rules)


def test_a_store_that_was_away_is_retried_without_spending_a_retry():
    rules = make_job(evaluation(), "r", SETTINGS)["spec"]["podFailurePolicy"]["rules"]
    ignored = [
        r["onExitCodes"]["values"] for r in rules if r["action"] == "Ignore" and "onExitCodes" in r
    ]
    assert ignored == [[EXIT_STORE_AWAY]] and EXIT_STORE_AWAY not in (0, 1, 3)


def test_run_config_freezes_the_spec_without_secrets():
    ev = evaluation()
    config_map = make_run_config(ev, "r")
    assert config_map["immutable"] is True
    frozen = json.loads(config_map["data"]["evaluation.json"])
    assert frozen["spec"] == ev["spec"]
    assert frozen["metadata"] == {"name": "quick", "namespace": "default"}
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == ev["metadata"]["uid"]


def judge_spec():
    spec = json.loads(json.dumps(BASE_SPEC))
    judge = {
        "name": "grader",
        "baseURL": "http://judge.models:8000/v1",
        "apiKeySecretRef": {"name": "judge-key", "key": "token"},
    }
    spec["task"]["scorers"] += [
        {"type": "llm_judge", "name": "helpful", "judge": judge, "rubric": "{{ output }}"},
        {
            "type": "llm_judge",
            "name": "polite",
            "judge": {**judge, "apiKeySecretRef": {"name": "other-judge", "key": "k"}},
            "rubric": "{{ output }}",
        },
    ]
    return spec


def test_each_judge_key_comes_from_its_own_secret():
    job = make_job(evaluation(spec=judge_spec()), "r", SETTINGS)
    strict_validate(job)
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EVAL_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "model-key",
        "key": "api-key",
    }
    assert env["EVAL_JUDGE_API_KEY"] == {
        "name": "EVAL_JUDGE_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "judge-key", "key": "token"}},
    }
    assert env["EVAL_JUDGE_API_KEY_1"]["valueFrom"]["secretKeyRef"] == {
        "name": "other-judge",
        "key": "k",
    }
    assert all("value" not in env[name] for name in env if "API_KEY" in name)


class ConfigMapsOnly:
    """The Kube calls missing_input may make, answered from a dict of ConfigMaps. It has no
    way to read a Secret: the operator's RBAC has none (issue 7 item 12)."""

    def __init__(self, config_maps):
        self.config_maps = config_maps
        self.calls = []

    async def config_map_keys(self, namespace, name):
        self.calls.append(name)
        return self.config_maps.get(name)


async def test_missing_input_checks_configmaps_and_never_secrets():
    spec = EvaluationSpec.model_validate(
        judge_spec() | {"dataset": {"configMapRef": {"name": "qa", "key": "qa.jsonl"}}}
    )
    kube = ConfigMapsOnly({})
    assert await missing_input(kube, "default", spec) == (
        "ConfigMapNotFound",
        "ConfigMap default/qa does not exist",
    )
    kube.config_maps["qa"] = {"other.jsonl"}
    assert await missing_input(kube, "default", spec) == (
        "ConfigMapKeyNotFound",
        "ConfigMap default/qa has no key 'qa.jsonl'",
    )
    kube.config_maps["qa"] = {"qa.jsonl"}
    assert await missing_input(kube, "default", spec) is None
    assert set(kube.calls) == {"qa"}  # the Secrets of the model and the judges are not looked up


def test_a_hub_dataset_gets_the_token_from_its_secret_and_the_operators_endpoint():
    spec = json.loads(json.dumps(BASE_SPEC))
    spec["dataset"] = {
        "huggingface": {
            "repo": "cais/mmlu",
            "revision": "c30699e8356da336a370243923dbaf21066bb9fe",
            "config": "all",
            "tokenSecretRef": {"name": "hub", "key": "token"},
        }
    }
    mirror = OperatorSettings(runner_image="r:1", hf_endpoint="https://hub.mirror.internal")
    job = make_job(evaluation(spec=spec), "r", mirror)
    strict_validate(job)
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hub", "key": "token"}},
    }
    assert env["HF_ENDPOINT"]["value"] == "https://hub.mirror.internal"
    # Without a token or a mirror: neither variable (huggingface.co, anonymous).
    del spec["dataset"]["huggingface"]["tokenSecretRef"]
    job = make_job(evaluation(spec=spec), "r", SETTINGS)
    names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not names & {"HF_TOKEN", "HF_ENDPOINT"}
