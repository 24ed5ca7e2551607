"""The token that lets the operator, and only it, stop a run's shards early (execution.earlyStop).

A runner pod takes POST /stop only with its run's token (eval_runner.server). The operator
derives the token from a key of its own and the run — HMAC-SHA256(key, "namespace/run") — so it
never reads a Secret (it holds no `get` on Secrets): it puts the token in the run's control
Secret when it starts the run, and the kubelet gives it to the pods (EVAL_STOP_TOKEN). The key
is EVAL_OPERATOR_CONTROL_KEY, from the kubelet too (the chart's key Secret, made once and kept,
or earlyStop.controlKeySecret); without one (a development run), random for the process: a run
started before a restart then cannot be stopped early by the new process (its pods answer 403)
and asks every sample, as a run without earlyStop does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from eval_operator.builders.meta import child_labels, owner_reference

CONTROL_TOKEN_KEY = "token"  # noqa: S105 - the Secret key's name, not a token


def process_key(configured: str | None) -> bytes:
    """The key tokens are derived from: the configured one, or a random one."""
    return configured.encode() if configured else secrets.token_bytes(32)


def stop_token(key: bytes, namespace: str, run: str) -> str:
    return hmac.new(key, f"{namespace}/{run}".encode(), hashlib.sha256).hexdigest()


def control_secret_name(run: str) -> str:
    return f"{run}-control"


def build_control_secret(evaluation: Mapping[str, Any], run: str, token: str) -> dict[str, Any]:
    """The run's control Secret (owned by the Evaluation): the token its pods accept a stop
    with."""
    meta = evaluation["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": control_secret_name(run),
            "namespace": meta["namespace"],
            "labels": child_labels(evaluation, run),
            "ownerReferences": [owner_reference(evaluation)],
        },
        "data": {CONTROL_TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }
