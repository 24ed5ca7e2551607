"""The floor `make bench-operator` compares our operator with: a bare kopf operator.

It does the least an operator of Evaluations can do: on create, make a Job (the same shape of
call our operator makes, through kubernetes_asyncio) and patch the status once. Nothing else:
no validation, no progress, no events. Run as `kopf run --standalone -m bench.floor_operator`.
"""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException


@kopf.on.startup()
async def connect(memo: kopf.Memo, **_: Any) -> None:
    await config.load_kube_config()
    memo.api = client.ApiClient()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.api.close()


@kopf.on.create("evals.io", "v1alpha1", "evaluations")
async def create_job(
    name: str,
    namespace: str,
    uid: str,
    spec: kopf.Spec,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{name}-floor",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "eval-operator-floor"},
            "ownerReferences": [
                {
                    "apiVersion": "evals.io/v1alpha1",
                    "kind": "Evaluation",
                    "name": name,
                    "uid": uid,
                    "controller": True,
                }
            ],
        },
        "spec": {
            "suspend": bool(spec.get("suspend")),
            "completionMode": "Indexed",
            "completions": 1,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "runner", "image": "eval-runner:bench"}],
                }
            },
        },
    }
    try:
        await client.BatchV1Api(memo.api).create_namespaced_job(namespace, job)
    except ApiException as err:
        if err.status != 409:
            raise
    patch.status["phase"] = "Pending"  # the one status write
