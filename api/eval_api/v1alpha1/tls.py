"""An EvalSuite's spec.tls: TLS inside the stack with cert-manager certificates."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from eval_api.v1alpha1.common import ApiModel, cel_rule

GO_DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"  # as cert-manager's durations


class IssuerReference(ApiModel):
    """A cert-manager issuer of the suite's certificates."""

    name: str = Field(
        min_length=1, max_length=253, description="The Issuer's or ClusterIssuer's name."
    )
    kind: Literal["Issuer", "ClusterIssuer"] = Field(
        default="Issuer", description="Issuer (in the suite's namespace) or ClusterIssuer."
    )
    group: str = Field(
        default="cert-manager.io",
        max_length=253,
        description="The issuer's API group (cert-manager.io, or an external issuer's).",
    )


class TLSSpec(ApiModel):
    """TLS inside the stack with cert-manager certificates: PostgreSQL (ssl on, clients
    verify-full), Redis (its TLS port, clients rediss://) and the dashboard (HTTPS)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    # has(): the object's own default ({}) is validated before its fields'.
                    "!has(self.duration) || !has(self.renewBefore) || "
                    "duration(self.renewBefore) < duration(self.duration)",
                    "renewBefore must be shorter than duration (cert-manager refuses such a "
                    "Certificate)",
                    ".renewBefore",
                )
            ]
        }
    )

    enabled: bool = Field(
        default=False,
        description=(
            "Serve the store, the cache and the dashboard over TLS (default false). Without "
            "cert-manager in the cluster TLSReady is False, reason CertManagerNotInstalled, "
            "and the stack runs without TLS; installing it is noticed without a restart."
        ),
    )
    issuer_ref: IssuerReference | None = Field(
        default=None,
        description=(
            "The issuer of the certificates (it must put the CA in each certificate's Secret, "
            "key ca.crt, as CA and self-signed issuers do). Default: a self-signed bootstrap "
            "Issuer, a CA Certificate <suite>-ca and a CA Issuer, in the suite's namespace."
        ),
    )
    duration: str = Field(
        default="2160h",
        pattern=GO_DURATION_PATTERN,
        min_length=2,
        max_length=32,
        description="Lifetime of each certificate (default 2160h, 90 days).",
    )
    renew_before: str = Field(
        default="720h",
        pattern=GO_DURATION_PATTERN,
        min_length=2,
        max_length=32,
        description="Renewed this long before it expires (default 720h, 30 days).",
    )
