"""An EvalSuite's spec.dashboard (the results dashboard: its autoscaling, rate limit and trusted
proxies) and status.dashboard.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, field_validator

from eval_api.v1alpha1.common import (
    CIDR_PATTERN,
    DEFAULTED_OBJECT,
    ApiModel,
    LocalObjectReference,
    ResourceRequirements,
    cel_rule,
    checked_cidrs,
)


class DashboardRateLimit(ApiModel):
    """Per-client token buckets: a client (its address) may send `burst` requests at once,
    then `requestsPerSecond`; beyond that it gets 429 with Retry-After."""

    requests_per_second: int = Field(
        default=20, ge=1, le=100_000, description="Sustained requests a second per client."
    )
    burst: int = Field(default=40, ge=1, le=1_000_000, description="Requests at once per client.")


class DashboardSpec(ApiModel):
    """The results dashboard: a Deployment serving the store's runs as a JSON API and HTML
    pages, scaled by a HorizontalPodAutoscaler (autoscaling/v2)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # has(): the rule also holds the field's default ({}) before its own defaults.
                cel_rule(
                    "!has(self.minReplicas) || !has(self.maxReplicas) || "
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas cannot exceed maxReplicas",
                    ".minReplicas",
                ),
            ]
        }
    )

    enabled: bool = Field(default=True, description="Run the dashboard (default true).")
    min_replicas: int = Field(
        default=1,
        ge=1,
        le=50,
        description="Fewest replicas (the autoscaler's minReplicas); above 1, a "
        "PodDisruptionBudget keeps all but one up through node drains.",
    )
    max_replicas: int = Field(
        default=3, ge=1, le=100, description="Most replicas (the autoscaler's maxReplicas)."
    )
    target_cpu_utilization_percentage: int = Field(
        default=70,
        ge=1,
        le=100,
        alias="targetCPUUtilizationPercentage",
        description="Average CPU use, as a share of the request, the autoscaler aims at.",
    )
    target_memory_utilization_percentage: int = Field(
        default=80,
        ge=1,
        le=100,
        description="Average memory use, as a share of the request, the autoscaler aims at.",
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description=(
            "CPU and memory of each replica (default requests cpu 100m, memory 256Mi; limit "
            "memory 512Mi). The autoscaler measures use against the requests: a missing "
            "cpu or memory request takes the default."
        ),
    )
    rate_limit: DashboardRateLimit = Field(
        default_factory=DashboardRateLimit,
        description="Per-client rate limiting.",
        json_schema_extra=DEFAULTED_OBJECT,
    )
    trusted_proxies: (
        list[
            Annotated[
                str,
                Field(pattern=CIDR_PATTERN, max_length=64, json_schema_extra={"format": "cidr"}),
            ]
        ]
        | None
    ) = Field(
        default=None,
        max_length=32,
        description=(
            "The proxies in front of the dashboard, as CIDRs (e.g. the ingress controller's "
            "pod network, 10.244.0.0/16). A request from one of them is the client's of the "
            "right-most X-Forwarded-For address that is not itself a trusted proxy; any other "
            "peer's X-Forwarded-For is ignored (a client can write what it likes there). "
            "Default none: the client is the peer, so behind an ingress every user shares the "
            "ingress's rate limit."
        ),
    )
    store_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description=(
            "With an external store: a Secret with read-only credentials, in the shape of "
            "store.external.secretRef (uri, or host, port, dbname, username, password). The "
            "dashboard never gets the store's own; with a managed store the operator makes a "
            "read-only role and its Secret."
        ),
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str] | None) -> list[str] | None:
        return checked_cidrs(value)


class DashboardStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    url: str | None = Field(default=None, description="The dashboard's in-cluster URL.")
    replicas: int | None = Field(default=None, description="Available replicas.")
