"""The chart's opt-in lock-down: NetworkPolicies and the ValidatingAdmissionPolicy.

The NetworkPolicies must select the pods the operator really builds, on the port it really
polls. The admission policy's CEL is evaluated the way the apiserver evaluates it (the
emulator's ValidatingAdmissionPolicy engine, tests/support/kubeapi/admission.py) on
Evaluations as the apiserver holds them after defaulting: what it lets through, what it
denies and with which message.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from eval_operator.builders.job import PROGRESS_PORT_NAME
from eval_operator.settings import OperatorSettings
from tests.chart.test_chart import CHART, NAMESPACE, RELEASE, find, helm, one, render
from tests.support.factories import BASE_SPEC, evaluation, make_job
from tests.support.kubeapi.admission import Request, enforce, selector_matches
from tests.support.kubeapi.errors import APIError
from tests.support.kubeapi.schema import apply_defaults, prune
from tests.support.tools import ROOT

SECURITY = "security-values.yaml"
OPERATOR_NAME = f"{RELEASE}-eval-operator"


def test_lock_down_is_off_by_default() -> None:
    for values_file in ("default-values.yaml", "minimal-values.yaml", "namespaced-values.yaml"):
        kinds = {d["kind"] for d in render(values_file)}
        assert not kinds & {
            "NetworkPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        }, values_file


# --- NetworkPolicy ------------------------------------------------------------------------------


def runner_policies(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["namespace"]: d
        for d in find(docs, "NetworkPolicy")
        if d["metadata"]["name"].endswith("-runner")
    }


def test_runner_policies_let_the_operator_reach_the_pods_it_builds() -> None:
    docs = render(SECURITY)
    policies = runner_policies(docs)
    assert sorted(policies) == ["team-a", "team-b"]  # networkPolicy.runnerNamespaces
    operator_pod = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    settings = OperatorSettings()
    pod_template = make_job(evaluation(namespace="team-a"), "quick-abc123", settings)["spec"][
        "template"
    ]
    (container,) = pod_template["spec"]["containers"]
    (progress_port,) = [p for p in container["ports"] if p["name"] == PROGRESS_PORT_NAME]
    for policy in policies.values():
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]  # egress to the model endpoints: untouched
        assert selector_matches(spec["podSelector"], pod_template["metadata"]["labels"])
        (rule,) = spec["ingress"]
        assert rule["ports"] == [{"port": progress_port["containerPort"], "protocol": "TCP"}]
        operator_peer, scraper = rule["from"]
        assert operator_peer["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}
        }
        assert selector_matches(operator_peer["podSelector"], operator_pod)
        assert scraper["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "monitoring"
        }


def test_the_operator_policy_admits_scrapers_and_reaches_only_the_api_and_runners() -> None:
    docs = render(SECURITY)
    (policy,) = [d for d in find(docs, "NetworkPolicy") if d["metadata"]["namespace"] == NAMESPACE]
    spec = policy["spec"]
    operator_pod = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(spec["podSelector"], operator_pod)
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = spec["ingress"]
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    metrics_port = {p["name"]: p["containerPort"] for p in container["ports"]}["http-metrics"]
    assert ingress["ports"] == [{"port": metrics_port, "protocol": "TCP"}]
    api, runners = spec["egress"]
    assert [p["port"] for p in api["ports"]] == [443, 6443]
    assert api["to"] == [
        {"ipBlock": {"cidr": "10.96.0.1/32"}},
        {"ipBlock": {"cidr": "172.18.0.0/16"}},
    ]
    (peer,) = runners["to"]
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a", "team-b"]
    job = make_job(evaluation(namespace="team-b"), "quick-abc123", OperatorSettings())
    assert selector_matches(peer["podSelector"], job["spec"]["template"]["metadata"]["labels"])


def test_runner_namespaces_default_to_the_watched_ones_and_the_operator_admits_nothing() -> None:
    docs = render("namespaced-values.yaml", "--set", "networkPolicy.enabled=true")
    assert sorted(runner_policies(docs)) == ["team-a", "team-b"]
    (rule,) = runner_policies(docs)["team-a"]["spec"]["ingress"]
    assert rule["ports"][0]["port"] == 9191  # runner.progressPort of that values file
    assert len(rule["from"]) == 1  # the operator only: no metricsFrom given
    (operator,) = [d for d in find(docs, "NetworkPolicy") if "-runner" not in d["metadata"]["name"]]
    assert operator["spec"]["ingress"] == [] and operator["spec"]["policyTypes"] == ["Ingress"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set", "networkPolicy.enabled=true"], "needs networkPolicy.runnerNamespaces"),
        (
            [
                "--set",
                "networkPolicy.enabled=true",
                "--set",
                "networkPolicy.runnerNamespaces[0]=team-a",
                "--set",
                "monitoring.podMonitor.enabled=true",
            ],
            "set networkPolicy.metricsFrom",
        ),
        (
            ["--set", "admissionPolicy.validationActions={Deny,Warn}"],
            "validationActions",
        ),
        (["--set", "admissionPolicy.allowedEndpointPrefixes[0]=vllm:8000"], "allowedEndpoint"),
    ],
)
def test_misconfigured_lock_down_fails_at_install(flags: list[str], message: str) -> None:
    done = helm("template", RELEASE, str(CHART), *flags, check=False)
    assert done.returncode != 0 and message in done.stderr, done.stderr


# --- ValidatingAdmissionPolicy --------------------------------------------------------------------


def admitted(spec: dict[str, Any], namespace: str = "team-a") -> dict[str, Any]:
    """An Evaluation as the apiserver holds it when validating admission runs: pruned and
    defaulted by the CRD's schema."""
    crd = yaml.safe_load((ROOT / "crds" / "evaluations.evals.io.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    obj = evaluation(namespace=namespace, spec=spec)
    obj.pop("status")
    return apply_defaults(prune(obj, schema, root=True), schema, root=True)


def check(
    obj: dict[str, Any], values_file: str = SECURITY, *extra: str, restricted: bool = True
) -> list[str]:
    """The warnings of creating `obj` in a namespace labelled as given; raises the denial."""
    docs = render(values_file, *extra)
    namespace = {
        "metadata": {
            "name": obj["metadata"]["namespace"],
            "labels": {"kubernetes.io/metadata.name": obj["metadata"]["namespace"]}
            | ({"evals.io/restricted": "true"} if restricted else {}),
        }
    }
    request = Request(
        operation="CREATE",
        group="evals.io",
        version="v1alpha1",
        resource="evaluations",
        kind="Evaluation",
        namespace=obj["metadata"]["namespace"],
        name=obj["metadata"]["name"],
    )
    warnings: list[str] = []
    enforce(
        find(docs, "ValidatingAdmissionPolicy"),
        find(docs, "ValidatingAdmissionPolicyBinding"),
        request,
        obj,
        None,
        namespace,
        "evaluations.evals.io",
        warnings.append,
    )
    return warnings


def spec_with(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE_SPEC)
    spec["model"]["baseURL"] = "http://vllm.models.svc:8000/v1"
    spec["model"]["apiKeySecretRef"] = {"name": "evals-model-key", "key": "api-key"}
    for path, value in changes.items():
        node = spec
        *parents, leaf = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return spec


JUDGE_SCORER = {
    "type": "llm_judge",
    "name": "judged",
    "rubric": "Grade {{ output }} against {{ target }}: score: x",
    "judge": {
        "name": "judge-model",
        "baseURL": "http://vllm.models.svc:8000/v1",
        "apiKeySecretRef": {"name": "evals-judge-key", "key": "api-key"},
    },
}


def with_judge(**judge: Any) -> dict[str, Any]:
    scorer = copy.deepcopy(JUDGE_SCORER)
    for key, value in judge.items():
        if value is None:
            scorer["judge"].pop(key, None)
        else:
            scorer["judge"][key] = value
    return spec_with(task__scorers=[{"type": "exact_match"}, scorer])


ALLOWED = {
    "the allowed endpoint and Secret": spec_with(),
    "the public OpenAI API by default": spec_with(model__baseURL=None),
    "an allowed runner image": spec_with(execution__image="ghcr.io/eval-operator/eval-runner:0.2"),
    "no API key at all": spec_with(model__apiKeySecretRef=None),
    "a judge on an allowed endpoint": with_judge(),
    "a CA bundle from a ConfigMap": spec_with(
        model__caBundle={"configMapRef": {"name": "anything", "key": "ca.crt"}}
    ),
}
DENIED = {
    "another endpoint": (
        spec_with(model__baseURL="https://exfiltrate.example.com/v1"),
        "spec: endpoint https://exfiltrate.example.com/v1 is not allowed here",
    ),
    "a prefix look-alike": (
        spec_with(model__baseURL="http://vllm.models.svc:8000.evil.example/v1"),
        "endpoint http://vllm.models.svc:8000.evil.example/v1 is not allowed",
    ),
    "Anthropic's public API by default": (
        spec_with(model__provider="anthropic", model__baseURL=None),
        "endpoint https://api.anthropic.com/v1 is not allowed",
    ),
    "a judge sending its key elsewhere": (
        with_judge(baseURL="https://judge.example.com/v1"),
        "endpoint https://judge.example.com/v1 is not allowed",
    ),
    "a judge on Anthropic's API by default": (
        with_judge(provider="anthropic", baseURL=None),
        "endpoint https://api.anthropic.com/v1 is not allowed",
    ),
    "another image": (
        spec_with(execution__image="docker.io/attacker/steal:latest"),
        "spec.execution.image: docker.io/attacker/steal:latest is not allowed here "
        "(allowed: ghcr.io/eval-operator/)",
    ),
    "another Secret for the model": (
        spec_with(model__apiKeySecretRef={"name": "prod-db-password", "key": "password"}),
        "spec: Secret prod-db-password is not allowed here (allowed: evals-)",
    ),
    "another Secret for a judge": (
        with_judge(apiKeySecretRef={"name": "team-b-openai", "key": "k"}),
        "Secret team-b-openai is not allowed",
    ),
    "another Secret as CA bundle": (
        spec_with(model__caBundle={"secretRef": {"name": "tls-private-key", "key": "tls.key"}}),
        "Secret tls-private-key is not allowed",
    ),
}


@pytest.mark.parametrize("case", ALLOWED)
def test_the_admission_policy_lets_allowed_evaluations_through(case: str) -> None:
    assert check(admitted(ALLOWED[case])) == []


@pytest.mark.parametrize("case", DENIED)
def test_the_admission_policy_denies_with_a_clear_message(case: str) -> None:
    spec, message = DENIED[case]
    with pytest.raises(APIError) as denied:
        check(admitted(spec))
    assert denied.value.code == 403 and denied.value.reason == "Forbidden"
    assert denied.value.message.startswith(
        f'evaluations.evals.io "quick" is forbidden: ValidatingAdmissionPolicy '
        f"'{OPERATOR_NAME}-evaluations' with binding '{OPERATOR_NAME}-evaluations' denied "
        "request: "
    )
    assert message in denied.value.message


def test_the_admission_policy_applies_only_where_its_namespace_selector_says() -> None:
    spec, _ = DENIED["another image"]
    assert check(admitted(spec), restricted=False) == []


def test_empty_lists_allow_anything_and_warn_mode_warns() -> None:
    every_denied = [admitted(spec) for spec, _ in DENIED.values()]
    permissive = ("default-values.yaml", "--set", "admissionPolicy.enabled=true")
    for obj in every_denied:
        assert check(obj, *permissive) == []
    warn = (
        SECURITY,
        "--set",
        "admissionPolicy.validationActions={Warn}",
    )
    spec, message = DENIED["another endpoint"]
    (warning,) = check(admitted(spec), *warn)
    assert warning.startswith(
        f"Validation failed for ValidatingAdmissionPolicy '{OPERATOR_NAME}-evaluations' with "
        f"binding '{OPERATOR_NAME}-evaluations': "
    )
    assert message in warning
