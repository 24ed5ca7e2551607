"""An EvalSuite's spec.networkPolicy: the NetworkPolicies made for its pods, with the selectors
and address blocks they take.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator

from eval_api.v1alpha1.common import CIDR_PATTERN, ApiModel, cel_rule, checked_cidrs


class LabelSelectorRequirement(ApiModel):
    """A label selector requirement, as in meta/v1."""

    key: str = Field(min_length=1, max_length=317, description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] | None = Field(
        default=None,
        max_length=64,
        description="The values for In and NotIn (empty for Exists and DoesNotExist).",
    )


class LabelSelector(ApiModel):
    """Labels to match, as in meta/v1 (both parts must match; empty matches everything)."""

    match_labels: dict[str, str] | None = Field(default=None, max_length=32)
    match_expressions: list[LabelSelectorRequirement] | None = Field(default=None, max_length=32)


class NetworkPeer(ApiModel):
    """Pods selected by namespace labels, pod labels, or both (a NetworkPolicy peer)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "has(self.namespaceSelector) || has(self.podSelector)",
                    "a peer needs namespaceSelector, podSelector or both",
                )
            ]
        }
    )

    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose pods may connect (all pods in them)."
    )
    pod_selector: LabelSelector | None = Field(
        default=None,
        description=(
            "Pods that may connect: in the suite's namespace, or in the namespaces of "
            "namespaceSelector when both are set."
        ),
    )


class IPBlock(ApiModel):
    """Addresses, as a NetworkPolicy's ipBlock: a CIDR, less the CIDRs in except."""

    cidr: str = Field(
        pattern=CIDR_PATTERN, max_length=64, description="The addresses, e.g. 10.20.0.0/16."
    )
    except_: list[Annotated[str, Field(pattern=CIDR_PATTERN, max_length=64)]] | None = Field(
        default=None,
        alias="except",
        max_length=32,
        description="CIDRs within cidr that are left out.",
    )

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        checked_cidrs([value])
        return value

    @field_validator("except_")
    @classmethod
    def _excepts(cls, value: list[str] | None) -> list[str] | None:
        return checked_cidrs(value)


class EgressPeer(ApiModel):
    """Where the suite's pods may connect: an address block (ipBlock), or pods chosen by
    namespace labels, pod labels or both (a NetworkPolicy egress peer)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "has(self.ipBlock) != (has(self.namespaceSelector) || has(self.podSelector))",
                    "a peer is an ipBlock, or namespaceSelector and/or podSelector",
                )
            ]
        }
    )

    ip_block: IPBlock | None = Field(
        default=None, description="Addresses (outside the cluster, or a database's range)."
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose pods may be reached (all pods in them)."
    )
    pod_selector: LabelSelector | None = Field(
        default=None,
        description=(
            "Pods that may be reached: in the suite's namespace, or in the namespaces of "
            "namespaceSelector when both are set."
        ),
    )


class ExternalEgress(ApiModel):
    """Egress from the suite's clients of an external store or cache to where it runs."""

    to: list[EgressPeer] | None = Field(
        default=None,
        max_length=16,
        description="Where it is (default: any address).",
    )
    ports: list[Annotated[int, Field(ge=1, le=65535)]] | None = Field(
        default=None,
        max_length=8,
        description="Its TCP ports (default: 5432 for the store, 6379 for the cache).",
    )


DEFAULT_DASHBOARD_FROM = [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
]
DEFAULT_PROMETHEUS_FROM = [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
]


class SuiteNetworkPolicySpec(ApiModel):
    """NetworkPolicies the operator makes for the suite's pods: everything denied but what the
    stack needs (who may talk to whom is in the README)."""

    enabled: bool = Field(
        default=True,
        description=(
            "Make the suite's NetworkPolicies (default true): default deny for every pod of "
            "the suite, then the store only from the runners, the migration, cell report and "
            "backup Jobs; the cache only from the runners and the migration; the runners "
            "reach the store, the cache, DNS and the model endpoints, and accept the "
            "operator on their progress port. They take effect where the network plugin "
            "enforces NetworkPolicy."
        ),
    )
    model_egress_cidrs: list[Annotated[str, Field(pattern=CIDR_PATTERN, max_length=64)]] | None = (
        Field(
            default=None,
            alias="modelEgressCIDRs",
            max_length=32,
            description=(
                "Where the runners may send model (and judge) requests, as CIDRs (default: "
                "any address)."
            ),
        )
    )
    model_egress_ports: list[Annotated[int, Field(ge=1, le=65535)]] | None = Field(
        default=None,
        max_length=32,
        description=(
            "Ports of the model endpoints the runners may reach (default: 443, 80 and the "
            "port of every model's and judge's baseURL)."
        ),
    )

    dashboard_from: list[NetworkPeer] | None = Field(
        default=None,
        max_length=16,
        description=(
            "Who may open the dashboard (its port only): default the pods of the ingress "
            "controller's namespace, kubernetes.io/metadata.name ingress-nginx. kubectl "
            "port-forward reaches it whatever this says."
        ),
    )

    prometheus_from: list[NetworkPeer] | None = Field(
        default=None,
        max_length=16,
        description=(
            "With spec.monitoring: who may scrape the suite's metrics ports (dashboard, "
            "runners, store and cache exporters); default the pods of the namespace "
            "kubernetes.io/metadata.name monitoring (kube-prometheus-stack's usual one)."
        ),
    )

    store_egress: ExternalEgress | None = Field(
        default=None,
        description=(
            "With store.mode External: where the store's clients (runners, migration, cell "
            "reports, comparisons, dashboard) may reach it. Default: port 5432 at any "
            "address; name the database's addresses (ipBlock) or pods (selectors) and port "
            "to narrow it. Unused with a managed store."
        ),
    )
    cache_egress: ExternalEgress | None = Field(
        default=None,
        description=(
            "With cache.mode External: where the cache's clients (runners, migration, "
            "dashboard) may reach it. Default: port 6379 at any address. Unused otherwise."
        ),
    )

    @field_validator("model_egress_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str] | None) -> list[str] | None:
        return checked_cidrs(value)
