"""Operator settings: read once from the environment at start-up, validated, then passed along.

The Helm chart sets these variables; anything invalid stops the operator at start (fail fast)
instead of surfacing later as a broken Job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator

ENV_PREFIX = "EVAL_OPERATOR_"


class OperatorSettings(BaseModel):
    runner_image: str = Field(
        default="ghcr.io/eval-operator/eval-runner:0.1.0",
        min_length=1,
        description="Runner image used when an Evaluation does not override it.",
    )
    runner_image_pull_policy: str = Field(
        default="IfNotPresent", pattern="^(Always|IfNotPresent|Never)$"
    )
    runner_resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        },
        description="Runner pod resources used when an Evaluation sets none.",
    )
    postgres_image: str = Field(
        default="docker.io/library/postgres:17.6-bookworm",
        min_length=1,
        description=(
            "PostgreSQL image of an EvalSuite's managed store (the official image; its "
            "postgres user has UID 999) when the suite does not override it."
        ),
    )
    redis_image: str = Field(
        default="docker.io/library/redis:7.4.5-bookworm",
        min_length=1,
        description=(
            "Redis image of an EvalSuite's managed cache (the official image; its redis user "
            "has UID 999) when the suite does not override it."
        ),
    )
    hf_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description=(
            "The Hugging Face Hub (or a mirror of it) runners download dataset.huggingface "
            "datasets from, as HF_ENDPOINT; unset, huggingface.co."
        ),
    )
    postgres_exporter_image: str = Field(
        default="quay.io/prometheuscommunity/postgres-exporter:v0.17.1",
        min_length=1,
        description="postgres_exporter sidecar of a managed store, with spec.monitoring.",
    )
    redis_exporter_image: str = Field(
        default="docker.io/oliver006/redis_exporter:v1.74.0",
        min_length=1,
        description="redis_exporter sidecar of a managed cache, with spec.monitoring.",
    )
    platform_recheck_seconds: float = Field(
        default=300.0,
        ge=1,
        le=86400,
        description=(
            "How often the operator asks the API server (discovery) again whether the "
            "Prometheus Operator's and cert-manager's APIs are served: installing them is "
            "noticed within this, without a restart."
        ),
    )
    progress_port: int = Field(default=9090, ge=1, le=65535, description="Runner /progress port.")
    namespace: str | None = Field(
        default=None,
        max_length=63,
        description=(
            "The operator's own namespace (the chart sets it from the Downward API): an "
            "EvalSuite's NetworkPolicy lets the runners accept the operator from there only. "
            "Unset: from the operator's pods in any namespace."
        ),
    )
    pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "eval-operator"},
        min_length=1,
        description="Labels of the operator's pods (JSON), for the same NetworkPolicy.",
    )
    progress_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description=(
            "How often the operator-wide progress loop polls the running runner pods' /progress "
            "(with jitter)."
        ),
    )
    progress_write_interval_seconds: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description=(
            "Least time between two status writes of an Evaluation that change only its "
            "progress, results or usage; other changes are written at once."
        ),
    )
    # A reconcile mostly waits for the apiserver (each write is an etcd commit), so many run
    # side by side; 64 start 1,000 new Evaluations' Jobs within 1.5x of kopf's one handler per
    # object (make bench-operator) at a fraction of its tasks.
    reconcile_workers: int = Field(
        default=64, ge=1, le=512, description="Evaluations reconciled at the same time."
    )
    missing_input_recheck_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How often a run waiting for a missing ConfigMap checks for it again.",
    )
    pod_start_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        description=(
            "How long a runner pod may stay in ContainerCreating before the Evaluation shows "
            "reason PodNotStarting (a volume waiting for a missing Secret or ConfigMap looks "
            "like that, and so does a long image pull)."
        ),
    )
    progress_timeout_seconds: float = Field(
        default=2.0, gt=0, le=30, description="Timeout of one /progress poll of a runner pod."
    )
    control_key: SecretStr | None = Field(
        default=None,
        description=(
            "Key the tokens that stop a run's shards early (execution.earlyStop) are derived "
            "from (eval_operator.control); unset, a random one for the process: runs started "
            "before a restart then ask every sample."
        ),
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the operator's GET /metrics; 0 serves none (the Helm chart sets it).",
    )

    @field_validator("runner_resources")
    @classmethod
    def _known_sections(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        unknown = set(value) - {"requests", "limits"}
        if unknown:
            raise ValueError(
                f"runner resources allow only requests and limits, not {sorted(unknown)}"
            )
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """EVAL_OPERATOR_RUNNER_IMAGE etc.; RUNNER_RESOURCES and POD_LABELS are JSON."""
        env = os.environ if environ is None else environ
        raw: dict[str, object] = {}
        for name in cls.model_fields:
            value = env.get(ENV_PREFIX + name.upper())
            if value is None or value == "":
                continue
            raw[name] = json.loads(value) if name in ("runner_resources", "pod_labels") else value
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            raise SystemExit(f"invalid operator settings ({ENV_PREFIX}*): {err}") from err
