"""The Indexed Job and the run-config ConfigMap of one Evaluation run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from eval_api import environment
from eval_api.environment import judge_key_env
from eval_api.exitcodes import EXIT_PERMANENT, EXIT_STORE_AWAY
from eval_api.ledger import LEDGER_KEY, Ledger
from eval_api.tasks import LM_EVAL_TASK_KEY, spec_dataset
from eval_api.v1alpha1.evalsuite import EvalSuiteSpec
from eval_api.v1alpha1.evaluation import EvaluationSpec
from eval_operator.builders import suite as suite_builders
from eval_operator.builders.meta import (
    RUNNER_UID,
    child_labels,
    owner_reference,
    restricted_container,
)
from eval_operator.control import CONTROL_TOKEN_KEY, control_secret_name
from eval_operator.runplan import (
    RUN_PLAN_ANNOTATION,
    SUSPEND_ANNOTATION,
    RunPlan,
)
from eval_operator.settings import OperatorSettings

CONTAINER_NAME = "runner"
CONFIG_DIR = "/etc/eval/config"
CONFIG_KEY = "evaluation.json"
DATASET_DIR = "/etc/eval/dataset"
LEDGER_DIR = "/etc/eval/ledger"
CA_DIR = "/etc/eval/ca"
CA_FILE = "ca.crt"
PROGRESS_PORT_NAME = "http-progress"


def build_run_config(
    evaluation: Mapping[str, Any], run: str, plan: RunPlan, task_file: str | None = None
) -> dict[str, Any]:
    """The spec the run was started from, frozen in an immutable ConfigMap named by its hash.

    Later edits of the Evaluation do not change a running Job's input; the next run gets a
    new ConfigMap. The hash in the name means a ConfigMap left by an earlier attempt to start
    the run from another spec is never taken for this one (its create would answer 409 and look
    like success). No secret is ever in it: the API key stays in its Secret. A task.lmEval's
    task file, as the operator read and checked it, is frozen beside the spec (its text is
    part of the hash).
    """
    meta = evaluation["metadata"]
    frozen = {
        "apiVersion": evaluation.get("apiVersion"),
        "kind": evaluation.get("kind"),
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace")},
        "spec": evaluation["spec"],
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": plan.config_map,
            "namespace": meta["namespace"],
            "labels": child_labels(evaluation, run),
            "ownerReferences": [owner_reference(evaluation)],
        },
        "immutable": True,
        "data": {
            CONFIG_KEY: json.dumps(frozen, sort_keys=True, separators=(",", ":")),
            **({LM_EVAL_TASK_KEY: task_file} if task_file is not None else {}),
        },
    }


def _resources(spec: EvaluationSpec, settings: OperatorSettings) -> dict[str, Any]:
    if spec.execution.resources is None:
        return {k: dict(v) for k, v in settings.runner_resources.items()}
    given = spec.execution.resources.model_dump(exclude_none=True)
    return {section: {k: str(v) for k, v in values.items()} for section, values in given.items()}


def _env(spec: EvaluationSpec, settings: OperatorSettings, run: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": environment.DATASET_DIR, "value": DATASET_DIR},
        {"name": environment.PROGRESS_PORT, "value": str(settings.progress_port)},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    ref = spec.model.api_key_secret_ref
    if ref is not None:
        # The key reaches the pod only through the kubelet: never in the Job object's values.
        env.append(
            {
                "name": environment.API_KEY,
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    judges = [s.judge for s in spec.task.scorer_list if s.judge is not None]
    for index, judge in enumerate(judges):
        if judge.api_key_secret_ref is not None:
            # Each judge's key from its own Secret, under a name of its own.
            judge_ref = judge.api_key_secret_ref
            env.append(
                {
                    "name": judge_key_env(index),
                    "valueFrom": {"secretKeyRef": {"name": judge_ref.name, "key": judge_ref.key}},
                }
            )
    hub = spec_dataset(spec).huggingface
    if hub is not None:
        if settings.hf_endpoint:
            env.append({"name": environment.HF_ENDPOINT, "value": settings.hf_endpoint})
        if hub.token_secret_ref is not None:
            token = hub.token_secret_ref
            env.append(
                {
                    "name": environment.HF_TOKEN,
                    "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}},
                }
            )
    if spec.model.ca_bundle is not None:
        env.append({"name": environment.CA_BUNDLE, "value": f"{CA_DIR}/{CA_FILE}"})
    if spec.execution.early_stop is not None:
        # The token the operator's POST /stop carries, from the run's control Secret.
        env.append(
            {
                "name": environment.STOP_TOKEN,
                "valueFrom": {
                    "secretKeyRef": {"name": control_secret_name(run), "key": CONTROL_TOKEN_KEY}
                },
            }
        )
    if spec.budget is not None:
        # A retry's share of the budget is what earlier attempts left: it learns how many
        # there were from the Job controller's annotations, and what they spent from the
        # ledger the operator keeps.
        env.append({"name": environment.LEDGER_FILE, "value": f"{LEDGER_DIR}/{LEDGER_KEY}"})
        for name, annotation in (
            (environment.INDEX_FAILURES, "batch.kubernetes.io/job-index-failure-count"),
            (
                environment.INDEX_IGNORED_FAILURES,
                "batch.kubernetes.io/job-index-ignored-failure-count",
            ),
        ):
            field = f"metadata.annotations['{annotation}']"
            env.append({"name": name, "valueFrom": {"fieldRef": {"fieldPath": field}}})
    return env


def ledger_name(run: str) -> str:
    """The ConfigMap of what each shard's ended attempts spent (budgeted runs)."""
    return f"{run}-ledger"


def build_ledger(evaluation: Mapping[str, Any], run: str, ledger: Ledger) -> dict[str, Any]:
    """The run's ledger ConfigMap (owned by the Evaluation, gone with the run on a re-run)."""
    meta = evaluation["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ledger_name(run),
            "namespace": meta["namespace"],
            "labels": child_labels(evaluation, run),
            "ownerReferences": [owner_reference(evaluation)],
        },
        "data": {LEDGER_KEY: ledger.to_json()},
    }


def _volumes(
    spec: EvaluationSpec, config_map: str, run: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map}},
        # The only writable path: Python and httpx may want a temp dir.
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if spec.budget is not None:
        # Optional: it exists only once an attempt failed; the kubelet fills it in later.
        volumes.append(
            {"name": "ledger", "configMap": {"name": ledger_name(run), "optional": True}}
        )
        mounts.append({"name": "ledger", "mountPath": LEDGER_DIR, "readOnly": True})
    dataset_ref = spec.dataset.config_map_ref if spec.dataset is not None else None
    if dataset_ref is not None:
        volumes.append(
            {
                "name": "dataset",
                "configMap": {
                    "name": dataset_ref.name,
                    "items": [{"key": dataset_ref.key, "path": dataset_ref.key}],
                },
            }
        )
        mounts.append({"name": "dataset", "mountPath": DATASET_DIR, "readOnly": True})
    ca = spec.model.ca_bundle
    if ca is not None:
        if ca.config_map_ref is not None:
            source = {
                "configMap": {
                    "name": ca.config_map_ref.name,
                    "items": [{"key": ca.config_map_ref.key, "path": CA_FILE}],
                }
            }
        else:
            assert ca.secret_ref is not None  # the schema demands exactly one
            source = {
                "secret": {
                    "secretName": ca.secret_ref.name,
                    "items": [{"key": ca.secret_ref.key, "path": CA_FILE}],
                }
            }
        volumes.append({"name": "ca", **source})
        mounts.append({"name": "ca", "mountPath": CA_DIR, "readOnly": True})
    return volumes, mounts


def _suite_env(
    evaluation: Mapping[str, Any], run: str, suite: str, suite_spec: EvalSuiteSpec
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A run inside an EvalSuite: who its rows belong to, and the store and cache, whose
    credentials reach the pod only by secretKeyRef: a managed store's application role, never
    its superuser."""
    meta = evaluation["metadata"]
    env = [
        {"name": environment.EVALUATION_UID, "value": meta["uid"]},
        {"name": environment.EVALUATION_NAME, "value": meta["name"]},
        {"name": environment.EVALUATION_NAMESPACE, "value": meta["namespace"]},
        {"name": environment.SUITE, "value": suite},
        {"name": environment.RUN, "value": run},
    ]
    store, env_from = suite_builders.store_env(
        suite_spec.store, suite_builders.client_secret_of(suite, suite_spec)
    )
    env += store + suite_builders.cache_env(suite, suite_spec.cache)
    return env, env_from


def build_job(
    evaluation: Mapping[str, Any],
    spec: EvaluationSpec,
    run: str,
    plan: RunPlan,
    settings: OperatorSettings,
    suite: tuple[str, EvalSuiteSpec] | None = None,
) -> dict[str, Any]:
    """The Indexed Job of one run: one pod per shard, each retried on its own.

    It carries the run's plan (what status judges it by) and the spec.suspend it was created
    with. A Job for Kueue (the queue-name label passes through) is created the same way:
    Kueue's webhook suspends it at creation and Kueue resumes it on admission; without Kueue
    it runs. `suite` is the (name, spec) of the EvalSuite the run is in (spec.suiteRef).
    """
    meta = evaluation["metadata"]
    labels = child_labels(evaluation, run)
    if suite is not None:
        # The suite's NetworkPolicies select its runner pods by this label.
        labels[suite_builders.SUITE_LABEL] = suite[0]
    volumes, mounts = _volumes(spec, plan.config_map, run)
    execution = spec.execution
    env = _env(spec, settings, run)
    env_from: list[dict[str, Any]] = []
    if suite is not None:
        suite_env, env_from = _suite_env(evaluation, run, *suite)
        env += suite_env
        if plan.regression is not None and plan.regression.sequential:
            # The regression gate: the shards pair their samples with this cell's baseline.
            env += [
                {"name": environment.CELL, "value": plan.regression.cell},
                {"name": environment.BASELINE, "value": plan.regression.baseline},
            ]
        store_ca = suite_builders.store_ca_volume(suite[1].store)
        if store_ca is not None:
            volumes.append(store_ca[0])
            mounts.append(store_ca[1])

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": execution.image or settings.runner_image,
        "imagePullPolicy": settings.runner_image_pull_policy,
        "args": ["shard", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}"],
        "env": env,
        **({"envFrom": env_from} if env_from else {}),
        "ports": [
            {"name": PROGRESS_PORT_NAME, "containerPort": settings.progress_port, "protocol": "TCP"}
        ],
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": PROGRESS_PORT_NAME},
            "periodSeconds": 10,
        },
        "resources": _resources(spec, settings),
        "securityContext": restricted_container(RUNNER_UID),
        "volumeMounts": mounts,
        # The runner writes its shard summary here; the operator reads it from the pod status.
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    pod_spec: dict[str, Any] = {
        # Required by podFailurePolicy; retries are per index, by the Job controller.
        "restartPolicy": "Never",
        # Runner pods never talk to the Kubernetes API: no token, no RBAC.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "fsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if execution.node_selector:
        pod_spec["nodeSelector"] = dict(execution.node_selector)
    if execution.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in execution.tolerations
        ]

    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": execution.shards,
        "parallelism": execution.parallelism or execution.shards,
        "backoffLimitPerIndex": execution.backoff_limit_per_index,
        "podFailurePolicy": {
            "rules": [
                # Bad input (dataset checksum, template error): retrying cannot help.
                {
                    "action": "FailIndex",
                    "onExitCodes": {
                        "containerName": CONTAINER_NAME,
                        "operator": "In",
                        "values": [EXIT_PERMANENT],
                    },
                },
                # The store was away (a drain, a restart): not the shard's fault either; the
                # new pod resumes from the store.
                {
                    "action": "Ignore",
                    "onExitCodes": {
                        "containerName": CONTAINER_NAME,
                        "operator": "In",
                        "values": [EXIT_STORE_AWAY],
                    },
                },
                # Evictions and preemptions are not the runner's fault: do not spend a retry.
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                },
            ]
        },
        "suspend": spec.suspend,
        "activeDeadlineSeconds": execution.active_deadline_seconds,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": run,
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {
                RUN_PLAN_ANNOTATION: plan.to_annotation(),
                SUSPEND_ANNOTATION: "true" if spec.suspend else "false",
            },
            "ownerReferences": [owner_reference(evaluation)],
        },
        "spec": job_spec,
    }
