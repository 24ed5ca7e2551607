"""Who holds which credentials of a managed store (issue 17, 4.15): every secret reference in
every object of a suite's stack, the runners, cell reports and comparisons included. Only the
store itself (its StatefulSet, with its exporter sidecar) and the migration Job reference the
superuser's password; every other client logs in as the application role."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from eval_api import environment
from eval_api.v1alpha1 import EvalSuiteSpec, EvaluationSpec
from eval_operator.builders import dashboard, monitoring, tls
from eval_operator.builders import suite as builders
from eval_operator.builders.job import build_job
from eval_operator.builders.netpol import build_network_policies
from eval_operator.matrix import build_store_job
from eval_operator.runplan import RunPlan
from tests.support.factories import evaluation
from tests.unit.test_suite_builders import SETTINGS, suite_object

POD_KINDS = ("StatefulSet", "Deployment", "CronJob", "Job")
SPEC = {
    "monitoring": {"enabled": True},
    "tls": {"enabled": True},
    "models": [{"name": "m", "model": {"name": "m", "baseURL": "http://model:8000/v1"}}],
    "tasks": [
        {
            "name": "t",
            "dataset": {"builtin": "arithmetic"},
            "task": {"scorers": [{"type": "exact_match"}]},
        }
    ],
}


def stack(spec_body: dict[str, Any]) -> list[dict[str, Any]]:
    """What the operator applies for a suite (as handlers.suite._ensure_stack composes it),
    and the Jobs it makes in it: a runner Job, a cell report, a comparison."""
    suite = suite_object(spec_body)
    spec = EvalSuiteSpec.model_validate(spec_body)
    objects = builders.desired_objects(suite, spec, SETTINGS)
    objects = monitoring.with_exporters(objects, suite, spec, SETTINGS)
    objects += dashboard.dashboard_objects(suite, spec, SETTINGS)
    objects += monitoring.core_objects(suite, spec) + monitoring.prometheus_objects(suite, spec)
    objects.append(builders.build_migration_job(suite, spec, 6, SETTINGS))
    ev = evaluation(namespace="team-a")
    ev["spec"]["suiteRef"] = {"name": "stack"}
    parsed = EvaluationSpec.model_validate(ev["spec"])
    plan = RunPlan.of(parsed, ev["spec"], 1, "run-1")
    objects.append(build_job(ev, parsed, "run-1", plan, SETTINGS, ("stack", spec)))
    for component in ("cell-report", "compare"):
        objects.append(
            build_store_job(
                suite, spec, name=component, component=component, args=[], extra_labels={},
                image="runner", pull_policy="Never",
            )
        )  # fmt: skip
    objects = tls.with_tls_servers(objects, suite, spec) + tls.cert_manager_objects(suite, spec)
    objects = [
        tls.with_tls_clients(o, "stack", spec) if o["kind"] in POD_KINDS else o for o in objects
    ]
    return objects + build_network_policies(suite, spec, SETTINGS)


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec") or {}
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return (spec.get("template") or {}).get("spec")


def secret_refs(obj: dict[str, Any]) -> Iterator[tuple[str, str, str | None, str | None]]:
    """(object, container or volume, Secret, key; None for a whole Secret) of a pod spec."""
    pod = pod_spec(obj)
    if pod is None:
        return
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        for entry in container.get("env", []):
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                yield where, container["name"], ref["name"], ref["key"]
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                yield where, container["name"], source["secretRef"]["name"], None
    for volume in pod.get("volumes", []):
        sources = [volume] + [s for s in (volume.get("projected") or {}).get("sources", [])]
        for source in sources:
            if "secret" in source:
                name = source["secret"].get("secretName") or source["secret"].get("name")
                keys = [item["key"] for item in source["secret"].get("items", [])] or [None]
                for key in keys:
                    yield where, volume.get("name", "projected"), name, key


def test_only_the_store_and_the_migration_reference_the_superusers_password() -> None:
    superuser = builders.store_secret_name("stack")
    objects = stack(SPEC)
    holders = {
        where
        for obj in objects
        for where, _, secret, key in secret_refs(obj)
        if secret == superuser and key in ("password", "uri", None)
    }
    migration = next(o for o in objects if o["metadata"]["name"].startswith("stack-migrate-"))
    assert holders == {"StatefulSet/stack-store", f"Job/{migration['metadata']['name']}"}


def test_runners_reports_comparisons_and_backups_log_in_as_the_application_role() -> None:
    app = builders.app_secret_name("stack")
    objects = {f"{o['kind']}/{o['metadata']['name']}": o for o in stack(SPEC)}
    clients = ["Job/cell-report", "Job/compare", "CronJob/stack-store-backup"]
    clients += [w for w, o in objects.items() if o["kind"] == "Job" and "run-1" in w]
    assert len(clients) == 4
    for where in clients:
        used = {(secret, key) for _, _, secret, key in secret_refs(objects[where])}
        assert (app, "password") in used, where
        assert (app, "username") in used, where
        assert not [s for s, k in used if s == builders.store_secret_name("stack")], where
    # The migration Job makes the role with the application Secret's name and password.
    migration = next(o for w, o in objects.items() if w.startswith("Job/stack-migrate-"))
    env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in pod_spec(migration)["containers"][0]["env"]
        if "valueFrom" in e
    }
    assert env[environment.APP_USER] == {"name": app, "key": "username"}
    assert env[environment.APP_PASSWORD] == {"name": app, "key": "password"}


def test_the_application_secret_is_in_the_store_secrets_shape() -> None:
    secret = builders.build_app_secret(suite_object(SPEC), "s3cr/t")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {
        "username": "evals_app",
        "password": "s3cr/t",
        "dbname": "evals",
        "host": "stack-store.team-a.svc",
        "port": "5432",
        "uri": "postgresql://evals_app:s3cr%2Ft@stack-store.team-a.svc:5432/evals",
    }
    # Owned by the suite: the migration sets the role's password from it on every new suite.
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_an_external_store_keeps_the_users_secret_and_makes_no_role() -> None:
    body = {
        **SPEC,
        "tls": {"enabled": False},
        "store": {"mode": "External", "external": {"secretRef": {"name": "pg-app"}}},
    }
    objects = stack(body)
    names = {secret for obj in objects for _, _, secret, _ in secret_refs(obj)}
    assert builders.app_secret_name("stack") not in names
    migration = next(o for o in objects if o["metadata"]["name"].startswith("stack-migrate-"))
    env = {e["name"] for e in pod_spec(migration)["containers"][0]["env"]}
    assert environment.APP_USER not in env
