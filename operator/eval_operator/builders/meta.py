"""Names, labels and owner references shared by every child object."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from eval_api.v1alpha1.common import API_VERSION, GROUP

MANAGED_BY = "eval-operator"
EVALUATION_LABEL = f"{GROUP}/evaluation"
RUN_LABEL = f"{GROUP}/run"
# Labels copied from an Evaluation to its Job so queueing systems (Kueue) see them.
PASSTHROUGH_LABEL_PREFIXES = ("kueue.x-k8s.io/",)

# Object names that go into label values (job-name) must fit 63 characters.
_MAX_NAME = 63
_HASH_LEN = 6


def run_name(evaluation_name: str, uid: str, rerun_token: str | None) -> str:
    """Deterministic name of one run's Job and ConfigMap.

    It depends only on the Evaluation's identity and the rerun annotation, so an operator restart
    or a replayed event computes the same name and finds the existing Job instead of creating a
    second one; a new rerun token gives a new name.
    """
    digest = hashlib.sha256(f"{uid}/{rerun_token or ''}".encode()).hexdigest()[:_HASH_LEN]
    prefix = evaluation_name[: _MAX_NAME - _HASH_LEN - 1].rstrip("-.")
    return f"{prefix}-{digest}"


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner.get("kind", "Evaluation"),
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_labels(evaluation: Mapping[str, Any], run: str) -> dict[str, str]:
    meta = evaluation["metadata"]
    labels = {
        "app.kubernetes.io/name": "eval-runner",
        "app.kubernetes.io/component": "runner",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        EVALUATION_LABEL: meta["name"],
        RUN_LABEL: run,
    }
    for key, value in (meta.get("labels") or {}).items():
        if key.startswith(PASSTHROUGH_LABEL_PREFIXES):
            labels[key] = value
    return labels


# The runner image's user (Dockerfile.runner): runner pods and a suite's migration Job.
RUNNER_UID = 65532


def restricted_container(uid: int) -> dict[str, Any]:
    """A container's securityContext under Pod Security "restricted": non-root with the
    image's own UID, no escalation, no capabilities, read-only root filesystem."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
