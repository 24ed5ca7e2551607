"""The Helm chart: lint, render with every values file in ci/, validate, and check its contracts.

Rendered objects are validated strictly: built-in kinds with kubernetes-validate (the oldest and
a recent supported Kubernetes), Prometheus Operator kinds against the upstream CRD schemas
(hack/thirdparty-crds.lock; structural schema + CEL, the emulator's validator). Then the parts
users rely on are asserted: least-privilege RBAC, the restricted securityContext, the settings
the operator reads, the ports and labels monitoring selects by, and PromQL that parses and names
only metrics the code exports.
"""

from __future__ import annotations

import base64
import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY

import eval_operator.metrics  # noqa: F401  (registers the operator's metrics)
import eval_runner.metrics  # noqa: F401  (registers the runner's metrics)
from eval_operator.builders.job import PROGRESS_PORT_NAME
from eval_operator.settings import ENV_PREFIX, OperatorSettings
from tests.support.factories import evaluation, make_job
from tests.support.kubeapi.schema import prune
from tests.support.kubeapi.schema import validate as validate_against_crd
from tests.support.thirdparty import thirdparty_crds
from tests.support.tools import tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "eval-operator"
VALUES_FILES = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
KUBE_VERSIONS = ("1.30", "1.36")
THIRD_PARTY_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}
RELEASE, NAMESPACE = "evals", "eval-system"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [tool("helm"), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and done.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{done.stderr}", pytrace=False)
    return done


@cache
def render(values_file: str, *extra: str) -> tuple[dict[str, Any], ...]:
    out = helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--include-crds",
        "-f",
        str(CHART / "ci" / values_file),
        *extra,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> list[dict]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    (found,) = find(docs, kind)
    return found


def operator_container(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


# --- lint, render, validate -------------------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_lint_strict(values_file: str) -> None:
    done = helm("lint", "--strict", str(CHART), "-f", str(CHART / "ci" / values_file))
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_rendered_objects_are_valid(values_file: str) -> None:
    docs = render(values_file)
    crd_dir = None
    for doc in docs:
        kind = doc["kind"]
        where = f"{values_file}: {kind} {doc['metadata']['name']}"
        if kind in THIRD_PARTY_KINDS:
            crd_dir = crd_dir or thirdparty_crds()
            crd = yaml.safe_load((crd_dir / THIRD_PARTY_KINDS[kind]).read_text())
            (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
            schema = version["schema"]["openAPIV3Schema"]
            errors = validate_against_crd(doc, schema, root=True)
            assert errors == [], f"{where}: {errors}"
            # Strict field validation (kubectl's default): no field the schema would prune.
            assert prune(doc, schema, root=True) == doc, f"{where} has fields the CRD lacks"
            continue
        for kube in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, kube, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{where} is invalid for Kubernetes {kube}: {err.message}")
        # In the watched namespaces: their Roles and runner NetworkPolicies; the dashboard
        # ConfigMap goes where Grafana's sidecar looks.
        assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE or kind in (
            "Role",
            "RoleBinding",
            "ConfigMap",
            "NetworkPolicy",
        ), where


def test_every_optional_object_is_rendered_by_some_values_file() -> None:
    kinds = {d["kind"] for f in VALUES_FILES for d in render(f)}
    assert (
        set(THIRD_PARTY_KINDS)
        | {"ConfigMap", "Role", "RoleBinding", "Service", "NetworkPolicy"}
        | {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    ) <= kinds


def test_values_schema_rejects_typos_and_bad_values() -> None:
    for flag, message in (
        ("operator.logLevl=debug", "additional properties 'logLevl' not allowed"),
        ("watchNamespace[0]=a", "additional properties 'watchNamespace' not allowed"),
        ("operator.logLevel=trace", "logLevel"),
        ("image.digest=latest", "digest"),
        ("watchNamespaces[0]=Not_A_Namespace", "watchNamespaces"),
        ("monitoring.prometheusRule.costPerHourBudgetUSD=ten", "costPerHourBudgetUSD"),
    ):
        done = helm("template", RELEASE, str(CHART), "--set", flag, check=False)
        assert done.returncode != 0 and message in done.stderr, (flag, done.stderr)


def test_schema_forbids_unknown_keys_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    free_form = {"podSecurityContext", "securityContext", "affinity", "tolerations"}

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} allows unknown keys"
            for name, child in node["properties"].items():
                if name not in free_form:
                    walk(child, f"{path}.{name}")

    walk(schema, "values")


def test_chart_refuses_too_old_kubernetes() -> None:
    done = helm("template", RELEASE, str(CHART), "--kube-version", "1.29.0", check=False)
    assert done.returncode != 0 and "kubeVersion" in done.stderr


def test_chart_crds_are_the_generated_ones() -> None:
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    shipped = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert shipped == generated
    for name in generated:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"charts/eval-operator/crds/{name} differs from crds/{name}: run `make crds`"
        )
    assert sorted(
        d["metadata"]["name"]
        for d in find(render("default-values.yaml"), "CustomResourceDefinition")
    ) == ["evalsuites.evals.io", "evaluations.evals.io"]


# --- RBAC ---------------------------------------------------------------------------------------


def rules_of(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def expand(group: str, resource: str, verbs: str) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for verb in verbs.split()}


FRAMEWORK_CLUSTER = expand("apiextensions.k8s.io", "customresourcedefinitions", "list watch")
FRAMEWORK_EVENTS = expand("", "events", "create")


def documented_rules() -> set[tuple[str, str, str]]:
    """The RBAC table of the chart's README: (apiGroup, resource, verb) of each row, the
    namespaces row aside (it is the watchNamespaces mode's alone)."""
    found = set()
    for line in (CHART / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`") or cells[1] == "namespaces":
            continue
        group = cells[0].strip("`").strip('"')
        for resource in cells[1].split(", "):
            found |= {(group, resource, verb) for verb in cells[2].split(", ")}
    return found


# The application's rules: the README's table less kopf's own (the CRD watch, events).
APPLICATION = documented_rules() - FRAMEWORK_CLUSTER - FRAMEWORK_EVENTS


def test_the_readmes_rbac_table_is_the_rendered_cluster_role() -> None:
    role = find(render("default-values.yaml"), "ClusterRole", f"{RELEASE}-eval-operator")[0]
    assert rules_of(role) == documented_rules()
    # Secrets are only created (a suite's generated credentials), never read; EvalSuites get
    # nothing written but their status; whatever the operator applies server-side it may
    # create too (a real apiserver authorizes an apply that makes the object as a create).
    assert {verb for group, resource, verb in APPLICATION if resource == "secrets"} == {"create"}
    assert not {verb for _, resource, verb in APPLICATION if resource == "evalsuites"} - {
        "get",
        "list",
        "watch",
    }
    patched = {(g, r) for g, r, v in APPLICATION if v == "patch" and "/" not in r}
    created = {(g, r) for g, r, v in APPLICATION if v == "create"}
    assert patched <= created, sorted(patched - created)


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses() -> None:
    docs = render("default-values.yaml")
    role = find(docs, "ClusterRole", f"{RELEASE}-eval-operator")[0]
    assert rules_of(role) == FRAMEWORK_CLUSTER | FRAMEWORK_EVENTS | APPLICATION
    (binding,) = find(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{RELEASE}-eval-operator", "namespace": NAMESPACE}
    ]
    assert not find(docs, "Role") and not find(docs, "RoleBinding")
    assert "--all-namespaces" in operator_container(docs)["args"]


def test_namespaced_rbac_grants_nothing_outside_the_watched_namespaces() -> None:
    docs = render("namespaced-values.yaml")
    (cluster_role,) = find(docs, "ClusterRole")
    assert rules_of(cluster_role) == FRAMEWORK_CLUSTER | expand("", "namespaces", "list watch")
    roles = find(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert rules_of(role) == FRAMEWORK_EVENTS | APPLICATION
    for binding in find(docs, "RoleBinding") + find(docs, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "evals", "namespace": NAMESPACE}
        ]
    args = operator_container(docs)["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]


def test_no_wildcards_and_secrets_only_created_anywhere() -> None:
    """A Secret is never read, updated, listed or deleted: the operator only makes a suite's
    generated credentials, once."""
    for values_file in VALUES_FILES:
        for role in [d for d in render(values_file) if d["kind"] in ("Role", "ClusterRole")]:
            for group, resource, verb in rules_of(role):
                assert "*" not in (group, resource, verb), role["metadata"]["name"]
                if resource == "secrets":
                    assert verb == "create", role["metadata"]["name"]


def test_users_get_evaluations_through_the_default_roles() -> None:
    docs = render("default-values.yaml")
    view = find(docs, "ClusterRole", f"{RELEASE}-eval-operator-view")[0]
    edit = find(docs, "ClusterRole", f"{RELEASE}-eval-operator-edit")[0]
    labels = "rbac.authorization.k8s.io/aggregate-to-"
    assert {
        k for k, v in view["metadata"]["labels"].items() if k.startswith(labels) and v == "true"
    } == {
        labels + "view",
        labels + "edit",
        labels + "admin",
    }
    assert {
        k for k, v in edit["metadata"]["labels"].items() if k.startswith(labels) and v == "true"
    } == {
        labels + "edit",
        labels + "admin",
    }
    assert rules_of(view) == expand("evals.io", "evaluations", "get list watch") | expand(
        "evals.io", "evalsuites", "get list watch"
    )
    assert rules_of(edit) == expand(
        "evals.io", "evaluations", "create update patch delete deletecollection"
    ) | expand("evals.io", "evalsuites", "create update patch delete deletecollection")
    # Only the operator writes status; no aggregated role grants it.
    assert not find(
        render("namespaced-values.yaml"), "ClusterRole", f"{RELEASE}-eval-operator-view"
    )


def test_bring_your_own_service_account_and_rbac() -> None:
    docs = render("minimal-values.yaml")
    assert not find(docs, "ServiceAccount")
    assert not [
        d for d in docs if d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
    ]
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "platform-managed"


# --- the operator Deployment --------------------------------------------------------------------


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_deployment_runs_restricted_with_a_writable_tmp(values_file: str) -> None:
    deployment = one(render(values_file), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "hostNetwork" not in pod and "hostPID" not in pod
    container = operator_container(render(values_file))
    assert container["securityContext"] == RESTRICTED_CONTAINER
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_probes_point_at_kopfs_liveness_endpoint(values_file: str) -> None:
    container = operator_container(render(values_file))
    (liveness,) = [a for a in container["args"] if a.startswith("--liveness=")]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert liveness == f"--liveness=http://0.0.0.0:{ports['http-health']}/healthz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http-health"}
    assert container["args"][:2] == ["run", "--standalone"]
    assert container["args"][-2:] == ["-m", "eval_operator.main"]


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_environment_is_valid_operator_settings(values_file: str) -> None:
    docs = render(values_file)
    entries = operator_container(docs)["env"]
    env = {e["name"]: e["value"] for e in entries if "value" in e}
    # From the Downward API: the pod's namespace.
    from_pod = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in entries
        if "fieldRef" in e.get("valueFrom", {})
    }
    assert from_pod == {"EVAL_OPERATOR_NAMESPACE": "metadata.namespace"}
    env["EVAL_OPERATOR_NAMESPACE"] = NAMESPACE
    # From a Secret, by the kubelet: the key of the tokens that stop runs early, in the
    # Secret the chart makes (and keeps) unless earlyStop.controlKeySecret names one.
    from_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in entries
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    (secret,) = [d for d in find(docs, "Secret") if d["metadata"]["name"].endswith("-control-key")]
    assert from_secret == {
        "EVAL_OPERATOR_CONTROL_KEY": {"name": secret["metadata"]["name"], "key": "key"}
    }
    assert len(base64.b64decode(secret["data"]["key"])) == 48
    env["EVAL_OPERATOR_CONTROL_KEY"] = base64.b64decode(secret["data"]["key"]).decode()
    known = {ENV_PREFIX + name.upper() for name in OperatorSettings.model_fields}
    assert set(env) <= known, set(env) - known
    settings = OperatorSettings.from_env(env)
    (deployment,) = find(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert settings.pod_labels == selector  # the operator knows its own pods' labels
    values = yaml.safe_load((CHART / "ci" / values_file).read_text()) or {}
    runner = values.get("runner", {})
    if "resources" in runner:
        assert settings.runner_resources == runner["resources"]
    if "image" in runner:
        assert settings.runner_image == f"{runner['image']['repository']}:{runner['image']['tag']}"
    ports = {p["name"]: p["containerPort"] for p in operator_container(docs)["ports"]}
    assert settings.metrics_port == ports.get("http-metrics", 0)


def test_images_default_to_app_version_and_digests_win() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    container = operator_container(render("default-values.yaml"))
    assert container["image"] == f"ghcr.io/eval-operator/eval-operator:{chart['appVersion']}"
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert (
        env["EVAL_OPERATOR_RUNNER_IMAGE"]
        == f"ghcr.io/eval-operator/eval-runner:{chart['appVersion']}"
    )
    digest = operator_container(render("monitoring-values.yaml"))["image"]
    assert digest == "registry.example.com/ml/eval-operator@sha256:" + "0123456789abcdef" * 4


def test_notes_render() -> None:
    done = helm(
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=client",
        "-n",
        NAMESPACE,
        "-f",
        str(CHART / "ci" / "namespaced-values.yaml"),
    )
    assert "It watches Evaluations in: team-a, team-b." in done.stdout
    assert (
        "helm show crds CHART | kubectl apply --server-side --force-conflicts -f -" in done.stdout
    )


# --- monitoring ---------------------------------------------------------------------------------


def test_service_monitor_selects_the_metrics_service_port() -> None:
    docs = render("monitoring-values.yaml")
    monitor = one(docs, "ServiceMonitor")
    (service,) = [s for s in find(docs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = service["spec"]["ports"]
    assert endpoint["port"] == port["name"]
    container_ports = {p["name"] for p in operator_container(docs)["ports"]}
    assert port["targetPort"] in container_ports
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_pod_monitor_selects_runner_pods_as_the_operator_builds_them() -> None:
    monitor = one(render("monitoring-values.yaml"), "PodMonitor")
    job = make_job(evaluation(), "quick-abc123", OperatorSettings())
    template = job["spec"]["template"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (container,) = template["spec"]["containers"]
    assert endpoint["port"] == PROGRESS_PORT_NAME
    assert PROGRESS_PORT_NAME in {p["name"] for p in container["ports"]}
    relabeled = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert relabeled == {
        "evaluation": ["__meta_kubernetes_pod_label_evals_io_evaluation"],
        "run": ["__meta_kubernetes_pod_label_evals_io_run"],
    }
    namespaced = render("namespaced-values.yaml", "--set", "monitoring.podMonitor.enabled=true")
    assert one(namespaced, "PodMonitor")["spec"]["namespaceSelector"] == {
        "matchNames": ["team-a", "team-b"]
    }


def exported_metric_names() -> set[str]:
    """Sample names exported by the operator and the runner (histograms' _bucket etc. too)."""
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith(("eval_operator_", "eval_runner_")):
            suffixes = {
                "counter": ["_total"],
                "histogram": ["_bucket", "_sum", "_count"],
            }.get(family.type, [""])
            names.update(family.name + suffix for suffix in suffixes)
    names |= {  # computed at scrape time from the kopf index (EvaluationCollector)
        f.name for f in eval_operator.metrics.EvaluationCollector({}).describe()
    }
    return names


def selectors(node: Any) -> list[str]:
    """Metric names of the vector selectors in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        return [node.name]
    found = []
    for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None:
            found += selectors(child)
    for arg in getattr(node, "args", None) or []:
        found += selectors(arg)
    return found


def alert_rules() -> list[dict[str, Any]]:
    rule = one(render("monitoring-values.yaml"), "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_alerts_cover_the_failure_modes_users_page_on() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert {
        "EvalOperatorDown",
        "EvaluationFailed",
        "EvalModelHighErrorRate",
        "EvalCircuitBreakerOpen",
        "EvalCostOverBudget",
    } <= names
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["labels"]["team"] == "ml-platform"  # alertLabels
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_alert_expressions_parse_and_use_exported_metrics() -> None:
    exported = exported_metric_names()
    rules = {r["alert"]: r["expr"] for r in alert_rules()}
    for alert, expr in rules.items():
        parsed = promql_parser.parse(expr)  # raises on a syntax error
        used = set(selectors(parsed))
        assert used, alert
        unknown = used - exported - {"up"}
        assert not unknown, f"{alert} uses metrics nobody exports: {unknown}"
    assert 'up{job="evals-eval-operator-metrics", namespace="eval-system"} == 1' in rules[
        "EvalOperatorDown"
    ].replace("  ", " ")
    assert rules["EvalModelHighErrorRate"].rstrip().endswith("> 0.25")
    assert rules["EvalCostOverBudget"].rstrip().endswith("> 12.5")


def test_grafana_dashboard_configmap_for_the_sidecar() -> None:
    docs = render("monitoring-values.yaml")
    (config_map,) = [
        d for d in find(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")
    ]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Evaluations"}
    dashboard = json.loads(config_map["data"]["eval-operator.json"])
    assert dashboard["uid"] == "eval-operator"
    exported = exported_metric_names()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            # Grafana substitutes $namespace before Prometheus parses the query.
            expr = target["expr"].replace("$namespace", ".*")
            used = set(selectors(promql_parser.parse(expr)))
            assert used and used <= exported, (panel["title"], used - exported)


def test_a_control_key_secret_of_ones_own_replaces_the_charts() -> None:
    docs = render("default-values.yaml", "--set", "earlyStop.controlKeySecret=my-control-key")
    assert not [d for d in find(docs, "Secret") if d["metadata"]["name"].endswith("-control-key")]
    entries = operator_container(docs)["env"]
    (key,) = [e for e in entries if e["name"] == "EVAL_OPERATOR_CONTROL_KEY"]
    assert key["valueFrom"]["secretKeyRef"] == {"name": "my-control-key", "key": "key"}
