"""An EvalSuite's NetworkPolicies, evaluated with the NetworkPolicy semantics
(tests/support/netpol.py) against the pods the operator builds: who may talk to whom."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from eval_api.v1alpha1 import EvalSuiteSpec, EvaluationSpec
from eval_operator.builders.dashboard import build_dashboard_deployment
from eval_operator.builders.job import build_job
from eval_operator.builders.netpol import build_network_policies, member_view
from eval_operator.builders.suite import (
    build_backup_cronjob,
    build_cache_deployment,
    build_migration_job,
    build_store_statefulset,
    managed_cache,
    managed_store,
)
from eval_operator.matrix import build_store_job
from eval_operator.runplan import RunPlan
from eval_operator.settings import OperatorSettings
from tests.support.factories import evaluation
from tests.support.netpol import Cluster, External, Pod

NS = "team"
SETTINGS = OperatorSettings(namespace="evals-system")
MODEL_URL = "http://model.team.svc:8000/v1"


def suite_body(name: str = "stack") -> dict[str, Any]:
    return {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "EvalSuite",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": {},
    }


def spec_of(**network_policy: Any) -> EvalSuiteSpec:
    return EvalSuiteSpec.model_validate(
        {
            "networkPolicy": network_policy,
            "models": [{"name": "m", "model": {"name": "m", "baseURL": MODEL_URL}}],
            "tasks": [
                {
                    "name": "t",
                    "dataset": {"builtin": "arithmetic"},
                    "task": {"scorers": [{"type": "exact_match"}]},
                }
            ],
        }
    )


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["metadata"]["labels"])


def runner_pod(suite: dict[str, Any], spec: EvalSuiteSpec) -> dict[str, str]:
    ev = evaluation(namespace=NS)
    ev["spec"]["suiteRef"] = {"name": suite["metadata"]["name"]}
    parsed = EvaluationSpec.model_validate(ev["spec"])
    plan = RunPlan.of(parsed, ev["spec"], 1, "run-abc123")
    job = build_job(ev, parsed, "run-abc123", plan, SETTINGS, (suite["metadata"]["name"], spec))
    return pod_labels(job)


def pods(spec: EvalSuiteSpec) -> dict[str, Pod]:
    """One pod of every kind the operator builds for the suite, with the labels it builds."""
    suite = suite_body()
    other = suite_body("other")
    store, cache = managed_store(spec), managed_cache(spec)
    assert store is not None and cache is not None
    report = build_store_job(
        suite, spec, name="r", component="cell-report", args=[], extra_labels={},
        image="runner", pull_policy="Never",
    )  # fmt: skip
    compare = build_store_job(
        suite, spec, name="c", component="compare", args=[], extra_labels={},
        image="runner", pull_policy="Never",
    )  # fmt: skip
    labels = {
        "store": pod_labels(build_store_statefulset(suite, spec, SETTINGS)),
        "cache": pod_labels(build_cache_deployment(suite, cache, SETTINGS)),
        "migration": pod_labels(build_migration_job(suite, spec, 4, SETTINGS)),
        "backup": pod_labels(build_backup_cronjob(suite, store, SETTINGS)),
        "report": pod_labels(report),
        "compare": pod_labels(compare),
        "runner": runner_pod(suite, spec),
        "dashboard": pod_labels(build_dashboard_deployment(suite, spec, SETTINGS)),
        "other-suite-runner": runner_pod(other, spec),
        "other-pod": {"app": "something-else"},
    }
    found = {
        name: Pod(name, NS, value, f"10.0.0.{i + 10}")
        for i, (name, value) in enumerate(labels.items())
    }
    found["operator"] = Pod(
        "operator", "evals-system", {"app.kubernetes.io/name": "eval-operator"}, "10.0.1.2"
    )
    found["dns"] = Pod("dns", "kube-system", {"k8s-app": "kube-dns"}, "10.0.2.10")
    found["ingress"] = Pod(
        "ingress", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}, "10.0.4.4"
    )
    found["elsewhere"] = Pod("elsewhere", "team-b", {"app": "curious"}, "10.0.5.5")
    return found


MODEL = External("model", "203.0.113.10")
# (from, to, port, protocol, allowed)
WHO_MAY_TALK = [
    ("runner", "store", 5432, "TCP", True),
    ("runner", "cache", 6379, "TCP", True),
    ("runner", "dns", 53, "UDP", True),
    ("runner", "dns", 53, "TCP", True),
    ("runner", "model", 443, "TCP", True),
    ("runner", "model", 80, "TCP", True),
    ("runner", "model", 8000, "TCP", True),  # the port of the model's baseURL
    ("runner", "model", 22, "TCP", False),
    ("runner", "runner", 9090, "TCP", False),
    ("migration", "store", 5432, "TCP", True),
    ("migration", "cache", 6379, "TCP", True),
    ("report", "store", 5432, "TCP", True),
    ("compare", "store", 5432, "TCP", True),
    ("backup", "store", 5432, "TCP", True),
    ("report", "cache", 6379, "TCP", False),
    ("backup", "cache", 6379, "TCP", False),
    ("migration", "model", 443, "TCP", False),
    ("report", "model", 443, "TCP", False),
    ("backup", "model", 443, "TCP", False),
    ("store", "model", 443, "TCP", False),
    ("cache", "model", 443, "TCP", False),
    ("cache", "store", 5432, "TCP", False),
    ("store", "cache", 6379, "TCP", False),
    ("other-pod", "store", 5432, "TCP", False),
    ("other-pod", "cache", 6379, "TCP", False),
    ("other-suite-runner", "store", 5432, "TCP", False),
    ("operator", "runner", 9090, "TCP", True),  # /progress
    ("operator", "store", 5432, "TCP", False),  # the operator never talks to the store
    ("operator", "runner", 5432, "TCP", False),
    ("store", "runner", 9090, "TCP", False),
    ("other-pod", "runner", 9090, "TCP", False),
    ("model", "runner", 9090, "TCP", False),
    ("dns", "store", 5432, "TCP", False),
    ("ingress", "dashboard", 8080, "TCP", True),  # the default dashboardFrom
    ("ingress", "dashboard", 22, "TCP", False),
    ("elsewhere", "dashboard", 8080, "TCP", False),
    ("other-pod", "dashboard", 8080, "TCP", False),
    ("ingress", "store", 5432, "TCP", False),
    ("dashboard", "store", 5432, "TCP", True),
    ("dashboard", "cache", 6379, "TCP", True),  # its readiness ping, without a password
    ("dashboard", "dns", 53, "UDP", True),
    ("dashboard", "model", 443, "TCP", False),  # the dashboard cannot reach a model
    ("dashboard", "model", 8000, "TCP", False),
    ("dashboard", "runner", 9090, "TCP", False),
    ("runner", "dashboard", 8080, "TCP", False),
]


@pytest.fixture(scope="module")
def cluster() -> tuple[Cluster, dict[str, Any]]:
    spec = spec_of()
    policies = build_network_policies(suite_body(), spec, SETTINGS)
    everyone: dict[str, Any] = {**pods(spec), "model": MODEL}
    return Cluster(policies), everyone


@pytest.mark.parametrize("row", WHO_MAY_TALK, ids=lambda r: f"{r[0]}->{r[1]}:{r[2]}/{r[3]}")
def test_who_may_talk_to_whom(cluster: tuple[Cluster, dict[str, Any]], row: tuple) -> None:
    policies, everyone = cluster
    source, target, port, protocol, expected = row
    assert policies.allows(everyone[source], everyone[target], port, protocol) is expected


def test_only_the_runners_and_the_stack_jobs_reach_the_store(
    cluster: tuple[Cluster, dict[str, Any]],
) -> None:
    policies, everyone = cluster
    reach = {n for n, p in everyone.items() if policies.allows(p, everyone["store"], 5432)}
    # Nothing but the runners, the dashboard and the stack's Jobs (migration, cell report,
    # comparison, backup) reaches Postgres.
    assert reach == {"runner", "dashboard", "migration", "report", "compare", "backup"}
    reach = {n for n, p in everyone.items() if policies.allows(p, everyone["cache"], 6379)}
    assert reach == {"runner", "migration", "dashboard"}
    # Of the suite's pods, only the runners reach a model endpoint.
    for port in (443, 80, 8000):
        reach = {n for n, p in everyone.items() if policies.allows(p, MODEL, port)}
        suite_pods = {
            "store", "cache", "migration", "backup", "report", "compare", "runner", "dashboard"
        }  # fmt: skip
        assert reach & suite_pods == {"runner"}
    reach = {n for n, p in everyone.items() if policies.allows(p, everyone["dashboard"], 8080)}
    assert reach == {"ingress"}


def test_dashboard_from_names_who_may_open_the_dashboard() -> None:
    spec = spec_of(
        dashboardFrom=[
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team-b"}}},
            {"podSelector": {"matchLabels": {"role": "browser"}}},
        ]
    )
    policies = Cluster(build_network_policies(suite_body(), spec, SETTINGS))
    everyone = pods(spec)
    browser = Pod("browser", NS, {"role": "browser"}, "10.0.6.6")
    stranger = Pod("stranger", "team-c", {"role": "browser"}, "10.0.6.7")
    assert policies.allows(everyone["elsewhere"], everyone["dashboard"], 8080)
    assert policies.allows(browser, everyone["dashboard"], 8080)
    assert not policies.allows(stranger, everyone["dashboard"], 8080)
    assert not policies.allows(everyone["ingress"], everyone["dashboard"], 8080)
    assert not policies.allows(browser, everyone["store"], 5432)


def test_without_a_dashboard_there_is_no_dashboard_policy() -> None:
    spec = EvalSuiteSpec.model_validate({"dashboard": {"enabled": False}})
    names = [p["metadata"]["name"] for p in build_network_policies(suite_body(), spec, SETTINGS)]
    assert "stack-dashboard" not in names and "stack-store" in names


def test_model_egress_cidrs_and_ports_narrow_the_runners_egress() -> None:
    spec = spec_of(modelEgressCIDRs=["10.20.0.0/16"], modelEgressPorts=[8443])
    policies = Cluster(build_network_policies(suite_body(), spec, SETTINGS))
    runner = pods(spec)["runner"]
    assert policies.allows(runner, External("inside", "10.20.1.5"), 8443)
    assert not policies.allows(runner, External("inside", "10.20.1.5"), 443)
    assert not policies.allows(runner, MODEL, 8443)


def test_the_policies_are_valid_and_off_when_disabled() -> None:
    for policy in build_network_policies(suite_body(), spec_of(), SETTINGS):
        kubernetes_validate.validate(policy, "1.30", strict=True)
        assert policy["metadata"]["ownerReferences"][0]["kind"] == "EvalSuite"
    assert build_network_policies(suite_body(), spec_of(enabled=False), SETTINGS) == []


def test_without_its_namespace_the_operator_is_accepted_from_any_namespace() -> None:
    spec = spec_of()
    policies = Cluster(build_network_policies(suite_body(), spec, OperatorSettings()))
    runner = pods(spec)["runner"]
    elsewhere = Pod("op", "ops", {"app.kubernetes.io/name": "eval-operator"}, "10.0.3.3")
    impostor = Pod("op", "ops", {"app.kubernetes.io/name": "not-it"}, "10.0.3.4")
    assert policies.allows(elsewhere, runner, 9090)
    assert not policies.allows(impostor, runner, 9090)


def test_the_runners_reach_the_ports_of_the_evaluations_in_the_suite() -> None:
    spec = spec_of()
    member = member_view(
        "joined",
        {
            "model": {"baseURL": "http://ollama.team.svc:11434/v1"},
            "task": {"scorers": [{"type": "llm_judge", "judge": {"baseURL": "https://j:8443/v1"}}]},
        },
    )
    assert member == {"name": "joined", "ports": [11434, 8443]}
    policies = Cluster(
        build_network_policies(suite_body(), spec, SETTINGS, extra_ports=member["ports"])
    )
    runner = pods(spec)["runner"]
    assert policies.allows(runner, MODEL, 11434) and policies.allows(runner, MODEL, 8443)
    assert not Cluster(build_network_policies(suite_body(), spec, SETTINGS)).allows(
        runner, MODEL, 11434
    )


def test_the_runners_reach_the_operators_hub_mirror_on_its_port() -> None:
    spec = spec_of()
    mirror = OperatorSettings.model_validate(
        {**SETTINGS.model_dump(), "hf_endpoint": "http://hf-mirror.infra.svc:8081"}
    )
    runner = pods(spec)["runner"]
    hub = External("mirror", "10.9.0.4")
    assert Cluster(build_network_policies(suite_body(), spec, mirror)).allows(runner, hub, 8081)
    assert not Cluster(build_network_policies(suite_body(), spec, SETTINGS)).allows(
        runner, hub, 8081
    )
    dashboard = pods(spec)["dashboard"]
    assert not Cluster(build_network_policies(suite_body(), spec, mirror)).allows(
        dashboard, hub, 8081
    )


# An external store and cache (issue 17, 4.5): their clients reach them, nothing else widens.
EXTERNAL = {
    "store": {"mode": "External", "external": {"secretRef": {"name": "pg-app"}}},
    "cache": {"mode": "External", "external": {"secretRef": {"name": "redis", "key": "url"}}},
    "dashboard": {"storeSecretRef": {"name": "pg-readonly"}},
}
DATABASE = External("database", "198.51.100.7")
REDIS = External("redis", "198.51.100.8")
STORE_CLIENT_PODS = ("runner", "migration", "report", "compare", "backup", "dashboard")
CACHE_CLIENT_PODS = ("runner", "migration", "dashboard")
SUITE_PODS = ("store", "cache", *STORE_CLIENT_PODS)


def external_spec(**network_policy: Any) -> EvalSuiteSpec:
    spec = spec_of(**network_policy).model_dump(by_alias=True, exclude_none=True)
    return EvalSuiteSpec.model_validate({**spec, **EXTERNAL})


def reach(policies: Cluster, everyone: dict[str, Any], target: Any, port: int) -> set[str]:
    return {name for name, pod in everyone.items() if policies.allows(pod, target, port)}


def test_an_external_store_and_cache_are_reached_on_their_port_by_their_clients_only() -> None:
    spec = external_spec()
    policies = Cluster(build_network_policies(suite_body(), spec, SETTINGS))
    everyone = pods(spec_of())  # the pods' labels do not depend on the store's mode
    # By default the store's port at any address (the address is in the user's Secret).
    assert reach(policies, everyone, DATABASE, 5432) & set(SUITE_PODS) == set(STORE_CLIENT_PODS)
    assert reach(policies, everyone, REDIS, 6379) & set(SUITE_PODS) == set(CACHE_CLIENT_PODS)
    # Nothing else is widened: other ports stay closed to everyone but the runners' model
    # ports, and the other suite's pods gain nothing.
    assert reach(policies, everyone, DATABASE, 22) & set(SUITE_PODS) == set()
    assert reach(policies, everyone, DATABASE, 443) & set(SUITE_PODS) == {"runner"}
    assert reach(policies, everyone, REDIS, 5432) & set(SUITE_PODS) == set(STORE_CLIENT_PODS)
    assert not policies.allows(everyone["report"], REDIS, 6379)
    assert not policies.allows(everyone["dashboard"], MODEL, 8000)


def test_store_egress_and_cache_egress_name_where_the_external_servers_are() -> None:
    spec = external_spec(
        storeEgress={
            "to": [{"ipBlock": {"cidr": "198.51.100.0/24", "except": ["198.51.100.128/25"]}}],
            "ports": [5433],
        },
        cacheEgress={
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}},
                    "podSelector": {"matchLabels": {"app": "redis"}},
                }
            ]
        },
    )
    policies = Cluster(build_network_policies(suite_body(), spec, SETTINGS))
    everyone = pods(spec_of())
    excepted = External("excepted", "198.51.100.200")
    elsewhere = External("elsewhere", "203.0.113.77")
    redis = Pod("redis", "data", {"app": "redis"}, "10.9.0.5")
    impostor = Pod("redis", "team-b", {"app": "redis"}, "10.9.0.6")
    for client in STORE_CLIENT_PODS:
        assert policies.allows(everyone[client], DATABASE, 5433), client
        assert not policies.allows(everyone[client], DATABASE, 5432), client
        assert not policies.allows(everyone[client], excepted, 5433), client
        assert not policies.allows(everyone[client], elsewhere, 5433), client
    for client in CACHE_CLIENT_PODS:
        assert policies.allows(everyone[client], redis, 6379), client
        assert not policies.allows(everyone[client], impostor, 6379), client
        assert not policies.allows(everyone[client], REDIS, 6379), client
    assert not policies.allows(everyone["report"], redis, 6379)
    assert reach(policies, everyone, DATABASE, 5433) & set(SUITE_PODS) == set(STORE_CLIENT_PODS)
    for policy in policies.policies:
        kubernetes_validate.validate(policy, "1.30", strict=True)


def test_a_managed_store_ignores_store_egress() -> None:
    spec = spec_of(storeEgress={"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
    assert build_network_policies(suite_body(), spec, SETTINGS) == build_network_policies(
        suite_body(), spec_of(), SETTINGS
    )
