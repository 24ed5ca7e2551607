"""An EvalSuite's stack: spec.store (PostgreSQL, managed with its backups, or external) and
spec.cache (Redis, managed or external), and what the status says of each.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from eval_api.v1alpha1.common import (
    CRON_PATTERN,
    DEFAULTED_OBJECT,
    IMAGE_PATTERN,
    ApiModel,
    CABundleSource,
    LocalObjectReference,
    Quantity,
    ResourceRequirements,
    SecretKeySelector,
    cel_rule,
    time_zone_rule,
)

# postgresql.conf settings the operator owns (where the server listens, its files, TLS):
# spec.store.managed.parameters may not set them.
RESERVED_POSTGRES_PARAMETERS = (
    "listen_addresses",
    "port",
    "data_directory",
    "config_file",
    "hba_file",
    "ident_file",
    "unix_socket_directories",
    "external_pid_file",
    "ssl",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "archive_command",
    "restore_command",
)


# The store and the cache say which they are by `mode`, and take the settings of that mode only.
MODE_MEMBER_RULES = [
    cel_rule(
        "self.mode != 'External' || has(self.external)",
        "mode External needs external.secretRef",
        ".external",
    ),
    cel_rule(
        "self.mode == 'External' || !has(self.external)",
        "external is only for mode External",
        ".external",
    ),
    cel_rule(
        "self.mode == 'Managed' || !has(self.managed)",
        "managed is only for mode Managed",
        ".managed",
    ),
]


def volume_rules(what: str) -> list[dict[str, str]]:
    """What a PersistentVolumeClaim allows, said at `kubectl apply` of the suite: a size above
    zero that may grow (where the StorageClass allows expansion) but never shrink, and a
    StorageClass fixed once the volume exists."""
    return [
        cel_rule(
            # has(): the object's own default ({}) is validated before its fields' defaults.
            "!has(self.size) || quantity(self.size).isGreaterThan(quantity('0'))",
            f"the {what} volume's size must be more than 0",
            ".size",
        ),
        cel_rule(
            "!has(self.size) || !has(oldSelf.size) || "
            "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
            f"the {what} volume may grow but never shrink (a PersistentVolumeClaim cannot): "
            "keep size at least what it was",
            ".size",
        ),
        cel_rule(
            "has(self.storageClassName) == has(oldSelf.storageClassName) && "
            "(!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
            f"the {what} volume's storageClassName cannot change once it exists (a "
            "PersistentVolumeClaim's class is fixed)",
            ".storageClassName",
        ),
    ]


class StoreBackupSpec(ApiModel):
    """Scheduled dumps of the managed store: a CronJob runs `pg_dump -Fc` to a backup volume of
    its own and keeps the newest `retention` dumps."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [*volume_rules("backup"), time_zone_rule()]}
    )

    enabled: bool = Field(default=True, description="Take scheduled dumps (default true).")
    schedule: str = Field(
        default="0 3 * * *",
        max_length=128,
        pattern=CRON_PATTERN,
        description='Cron schedule of the dumps, five fields or a macro (default "0 3 * * *").',
    )
    time_zone: str | None = Field(
        default=None,
        max_length=64,
        description='IANA time zone of the schedule, e.g. "Europe/Paris" (default: UTC).',
    )
    retention: int = Field(
        default=7, ge=1, le=1000, description="Dumps kept; older ones are deleted (default 7)."
    )
    size: Quantity = Field(
        default="10Gi", description='Size of the backup volume (default "10Gi").'
    )
    storage_class_name: str | None = Field(
        default=None,
        max_length=253,
        description="StorageClass of the backup volume (default: the cluster's default class).",
    )


class ManagedStoreSpec(ApiModel):
    """A single-instance PostgreSQL StatefulSet run by the operator for this suite."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                *volume_rules("data"),
                cel_rule(
                    "!has(self.parameters) || self.parameters.all(k, !(k in ["
                    + ", ".join(f"'{name}'" for name in RESERVED_POSTGRES_PARAMETERS)
                    + "]))",
                    "parameters may not set "
                    + ", ".join(RESERVED_POSTGRES_PARAMETERS)
                    + " (the operator owns them)",
                    ".parameters",
                ),
                cel_rule(
                    "!has(self.parameters) || self.parameters.all(k, "
                    "k.matches('^[a-z][a-z0-9_.]*$'))",
                    "parameter names are lower-case postgresql.conf names, e.g. work_mem",
                    ".parameters",
                ),
                cel_rule(
                    # A value is written quoted on a line of postgresql.conf: a quote is
                    # doubled and a backslash escaped, but a line break would end the line
                    # (PostgreSQL refuses the file; what follows would be a setting of its own).
                    "!has(self.parameters) || self.parameters.all(k, "
                    "!self.parameters[k].matches('[\\\\x00-\\\\x1f\\\\x7f]'))",
                    "parameter values may not hold a line break or another control character",
                    ".parameters",
                ),
            ]
        }
    )

    image: str | None = Field(
        default=None,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description=(
            "PostgreSQL image (default: the operator's pinned official postgres image). It "
            "must be the official image or follow its conventions (docker-entrypoint.sh, "
            "POSTGRES_* variables, the postgres user with UID 999)."
        ),
    )
    size: Quantity = Field(default="10Gi", description='Size of the data volume (default "10Gi").')
    storage_class_name: str | None = Field(
        default=None,
        max_length=253,
        description="StorageClass of the data volume (default: the cluster's default class).",
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description=(
            "PostgreSQL's CPU and memory (default requests 250m/512Mi, limit 1Gi); "
            "shared_buffers and effective_cache_size follow the memory limit."
        ),
    )
    parameters: dict[str, Annotated[str, Field(max_length=256)]] | None = Field(
        default=None,
        max_length=64,
        description=(
            "postgresql.conf settings over the operator's tuned ones, e.g. {work_mem: 16MB}."
        ),
    )
    retain_on_delete: bool = Field(
        default=True,
        description=(
            "Keep the data volume and the credentials Secret when the suite is deleted "
            "(default true): a suite created again under the same name reattaches them. "
            "False deletes them with the suite."
        ),
    )
    backup: StoreBackupSpec = Field(
        default_factory=StoreBackupSpec,
        description="Scheduled dumps (on by default).",
        json_schema_extra=DEFAULTED_OBJECT,
    )


POSTGRES_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class ExternalStoreSpec(ApiModel):
    """A PostgreSQL database the suite does not run (CloudNativePG, RDS, Cloud SQL, ...)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!(self.sslmode in ['verify-ca', 'verify-full']) || has(self.caBundle)",
                    "sslmode verify-ca and verify-full need caBundle (the CA that signed the "
                    "server's certificate)",
                    ".caBundle",
                ),
            ]
        }
    )

    secret_ref: LocalObjectReference = Field(
        description=(
            "Secret in the shape of a CloudNativePG app Secret: key uri "
            "(postgresql://user:password@host:port/dbname), or keys host, port, dbname, "
            "username and password (port defaults to 5432). A CloudNativePG Cluster's "
            "<cluster>-app Secret works as it is."
        )
    )
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        default="require",
        description=(
            "libpq sslmode of every connection (default require: encrypted, server not "
            "verified; verify-full checks the certificate and the host name against "
            "caBundle)."
        ),
    )
    ca_bundle: CABundleSource | None = Field(
        default=None, description="CA bundle for sslmode verify-ca / verify-full."
    )


class StoreSpec(ApiModel):
    """Where per-sample results go: PostgreSQL, managed by the suite or external."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": MODE_MEMBER_RULES})

    mode: Literal["Managed", "External"] = Field(
        default="Managed",
        description="Managed (default): a PostgreSQL StatefulSet; External: store.external.",
    )
    managed: ManagedStoreSpec | None = Field(
        default=None, description="The managed PostgreSQL (defaults when omitted)."
    )
    external: ExternalStoreSpec | None = Field(default=None, description="The external database.")


class ManagedCacheSpec(ApiModel):
    """A Redis Deployment run by the operator: no persistence, least-recently-used eviction."""

    image: str | None = Field(
        default=None,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description="Redis image (default: the operator's pinned official redis image).",
    )
    max_memory: Quantity = Field(
        default="256Mi",
        description=(
            'Redis maxmemory (default "256Mi"): past it the least recently used answers are '
            "evicted (allkeys-lru). The container's memory limit is set above it."
        ),
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Redis's CPU and memory (default: from maxMemory)."
    )


class ExternalCacheSpec(ApiModel):
    """A Redis the suite does not run."""

    secret_ref: SecretKeySelector = Field(
        description=(
            "Secret key holding the URL, redis://[user:password@]host:port/db or rediss:// for TLS."
        )
    )


class CacheSpec(ApiModel):
    """The response cache: identical requests are answered from Redis, not the model."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": MODE_MEMBER_RULES})

    mode: Literal["Managed", "External", "Disabled"] = Field(
        default="Managed",
        description="Managed (default): a Redis Deployment; External: cache.external; Disabled.",
    )
    ttl_seconds: int = Field(
        default=604800,
        ge=60,
        le=31_536_000,
        description="How long a cached answer is kept, in seconds (default 604800, 7 days).",
    )
    managed: ManagedCacheSpec | None = Field(
        default=None, description="The managed Redis (defaults when omitted)."
    )
    external: ExternalCacheSpec | None = Field(default=None, description="The external Redis.")


class StoreStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    mode: str | None = Field(default=None, description="Managed or External.")
    endpoint: str | None = Field(
        default=None, description="host:port/dbname of the store (never a password)."
    )
    secret_name: str | None = Field(
        default=None,
        description="Secret the runner pods read the store's credentials from (by reference).",
    )
    schema_version: int | None = Field(
        default=None, description="The last schema migration applied."
    )


class CacheStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    mode: str | None = Field(default=None, description="Managed, External or Disabled.")
    endpoint: str | None = Field(default=None, description="host:port of the cache.")
    secret_name: str | None = Field(
        default=None, description="Secret the runner pods read the cache URL from."
    )
