"""What both kinds, and several modules of this package, build on.

ApiModel (camelCase on the wire, unknown fields rejected, CEL rules evaluated in Python) and the
rule helpers; the API group and version; the patterns several fields share (decimals, fractions,
DNS labels, quantities, image references, cron schedules, CIDRs); object metadata and
conditions; references to Secrets, ConfigMaps and objects, CA bundles, and pod resources.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel

from eval_api import cel

GROUP = "evals.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
# A decimal in [0, 1], e.g. "0.05".
FRACTION_PATTERN = r"^(0(\.[0-9]+)?|1(\.0+)?)$"
SIGNED_DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# Annotation whose new value asks the operator to run a finished Evaluation again.
RERUN_ANNOTATION = f"{GROUP}/rerun"


def cel_rule(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One x-kubernetes-validations entry; the CRD generator copies these verbatim."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def exactly_one_of(*fields: str) -> str:
    return " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields) + " == 1"


def _rules(extra: Any) -> list[dict[str, str]]:
    return (
        list((extra or {}).get("x-kubernetes-validations") or []) if isinstance(extra, dict) else []
    )


class ApiModel(BaseModel):
    """Base: camelCase on the wire, unknown fields rejected (a typo is an error, not a no-op).

    Its validator evaluates the model's CEL rules (and those of its fields) in Python, the same
    texts the CRD gives the apiserver: a manifest read outside a cluster is held to exactly
    the rules `kubectl apply` enforces. Each rule is written once. An object the apiserver
    already admitted is validated with context=cel.ADMITTED: its rules are not evaluated twice.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )

    @model_validator(mode="after")
    def _cel_rules(self, info: ValidationInfo) -> Any:
        if info.context and info.context.get("admitted"):
            return self
        cls = type(self)
        model_rules = _rules(cls.model_config.get("json_schema_extra"))
        field_rules = [
            (name, rule)
            for name, info in cls.model_fields.items()
            for rule in _rules(info.json_schema_extra)
        ]
        if not model_rules and not field_rules:
            return self
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        failed = [
            rule
            for rule in model_rules
            if not cel.is_transition_rule(rule["rule"]) and not cel.holds(rule["rule"], data)
        ]
        for name, rule in field_rules:
            alias = cls.model_fields[name].alias or name
            if cel.is_transition_rule(rule["rule"]):
                continue
            if alias in data and not cel.holds(rule["rule"], data[alias]):
                failed.append(rule)
        if failed:
            raise ValueError("; ".join(_describe(rule) for rule in failed))
        return self


def _describe(rule: dict[str, str]) -> str:
    where = rule.get("fieldPath", "").lstrip(".")
    return f"{where}: {rule['message']}" if where else rule["message"]


class SecretKeySelector(ApiModel):
    """A key of a Secret in the Evaluation's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")
    key: str = Field(min_length=1, max_length=253, description="Key inside the Secret's data.")


class ConfigMapKeySelector(ApiModel):
    """A key of a ConfigMap in the Evaluation's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the ConfigMap.")
    key: str = Field(min_length=1, max_length=253, description="Key inside the ConfigMap's data.")


class CABundleSource(ApiModel):
    """A PEM bundle of CA certificates to trust for the model endpoint."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    exactly_one_of("configMapRef", "secretRef"),
                    "exactly one of configMapRef or secretRef must be set",
                )
            ]
        }
    )

    config_map_ref: ConfigMapKeySelector | None = Field(
        default=None, description="ConfigMap key holding the PEM bundle."
    )
    secret_ref: SecretKeySelector | None = Field(
        default=None, description="Secret key holding the PEM bundle."
    )


# A Kubernetes resource.Quantity (the apiserver's syntax: 500m, 1.5Gi, 2e3, 128974848), never
# negative (the apiserver rejects negative resources).
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = (
    Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]
)
# An OCI image reference (distribution's grammar): [registry[:port]/]path[:tag][@digest].
IMAGE_PATTERN = (
    r"^(([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*"
    r"(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(@[a-zA-Z][a-zA-Z0-9]*([-_+.][a-zA-Z][a-zA-Z0-9]*)*"
    r":[0-9a-fA-F]{32,})?$"
)


class ResourceRequirements(ApiModel):
    """CPU and memory for each runner pod, as in core/v1."""

    requests: dict[str, Quantity] | None = Field(
        default=None,
        max_length=16,
        description='Requested resources, e.g. {cpu: "500m", memory: 256Mi} (quantities).',
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, max_length=16, description="Resource limits (quantities)."
    )


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the object.")


class Condition(ApiModel):
    """A condition in the shape of the Kubernetes API conventions (metav1.Condition)."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(description="Condition type, e.g. Ready, Progressing, Succeeded, Passed.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the condition was set for."
    )


class ObjectMeta(BaseModel):
    """The parts of metadata the operator and runner read."""

    model_config = ConfigDict(extra="allow")

    name: str = "evaluation"
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# An object field whose absence means its defaults: a `default` on the object makes the
# apiserver fill in the nested defaults too, so what is stored (and what GitOps tools diff) is
# what the models read. The apiserver checks the object's CEL rules on the default as written
# (nested defaults not applied), so a default names the fields its rules read.
DEFAULTED_OBJECT = {"default": {}}
DEFAULT_MANAGED = {"default": {"mode": "Managed"}}

# A cron schedule of five fields (minute hour day-of-month month day-of-week) or a macro such
# as @daily; the operator parses it with croniter and reports what it cannot (InvalidSpec).
CRON_PATTERN = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"


def time_zone_rule() -> dict[str, str]:
    """A time zone as a CronJob's validation takes it: a name of the tz database (CEL reads a
    timestamp in it, which fails for any other name), not "Local" (the apiserver's own zone)
    nor an offset such as +01:00. The operator checks it again with zoneinfo, its own database,
    for the objects admitted before this rule."""
    return cel_rule(
        "!has(self.timeZone) || (self.timeZone.lowerAscii() != 'local' && "
        "!self.timeZone.contains(':') && "
        "timestamp('2000-01-01T00:00:00Z').getFullYear(self.timeZone) > 0)",
        "timeZone must be an IANA time zone such as Europe/Paris",
        ".timeZone",
    )


# An IPv4 or IPv6 CIDR such as 10.0.0.0/8 (checked in full by the ipaddress module).
CIDR_PATTERN = r"^[0-9a-fA-F:.]+/[0-9]{1,3}$"


def checked_cidrs(value: list[str] | None) -> list[str] | None:
    for cidr in value or []:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"{cidr!r} is not a CIDR such as 10.0.0.0/8") from None
    return value
