"""spec.dataset: where the samples come from (a builtin dataset, a ConfigMap key, inline records
or a URL) and which record fields they read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from eval_api.v1alpha1.common import ApiModel, ConfigMapKeySelector, cel_rule, exactly_one_of

# Datasets shipped inside the runner package (runner/eval_runner/datasets/);
# a unit test keeps this list and the files in step.
BUILTIN_DATASETS = ("arithmetic", "capitals", "sentiment")

# dataset.maxBytes: its default, and the largest value accepted (a runner pod's memory holds the
# whole file while it is parsed).
DEFAULT_DATASET_MAX_BYTES = 256 * 1024 * 1024
MAX_DATASET_BYTES_LIMIT = 16 * 1024 * 1024 * 1024


class DatasetSpec(ApiModel):
    """Where the samples come from: exactly one of builtin, configMapRef, inline or url."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    exactly_one_of("builtin", "configMapRef", "inline", "url"),
                    "exactly one of builtin, configMapRef, inline or url must be set",
                ),
                cel_rule(
                    "!has(self.url) || has(self.sha256)",
                    "url requires sha256, so a changed file is detected",
                    ".sha256",
                ),
                cel_rule(
                    "!has(self.sha256) || has(self.url)",
                    "sha256 is only meaningful with url",
                    ".sha256",
                ),
                cel_rule(
                    "!has(self.maxBytes) || has(self.url) || has(self.configMapRef)",
                    "maxBytes applies to url and configMapRef datasets only",
                    ".maxBytes",
                ),
            ]
        }
    )

    builtin: Literal[BUILTIN_DATASETS] | None = Field(  # type: ignore[valid-type]
        default=None, description="A small dataset shipped in the runner image."
    )
    config_map_ref: ConfigMapKeySelector | None = Field(
        default=None, description="A ConfigMap key holding the dataset file."
    )
    inline: list[dict[str, Any]] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Records given in the manifest (at most 1000; use a ConfigMap or url beyond).",
    )
    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://",
        description="HTTP(S) URL of the dataset file; requires sha256.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[a-f0-9]{64}$",
        description=(
            "Hex SHA-256 of the file at url, checked before the file is parsed; a mismatch "
            "fails the run (DatasetChecksumMismatch)."
        ),
    )
    max_bytes: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DATASET_BYTES_LIMIT,
        description=(
            "Size limit in bytes of the file at url or of the configMapRef file (default "
            "268435456, 256 MiB). A download stops as soon as it passes the limit, and the run "
            "fails with reason DatasetTooLarge. A url is fetched once per pod (into /tmp), "
            "following at most 5 redirects."
        ),
    )
    format: Literal["jsonl", "json", "csv"] | None = Field(
        default=None,
        description=(
            "File format of configMapRef or url; inferred from the key or URL suffix when omitted."
        ),
    )
    input_field: str = Field(
        default="input", min_length=1, description="Record field holding the model input."
    )
    target_field: str = Field(
        default="target", min_length=1, description="Record field holding the expected answer."
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Use only the first N records (after shuffling).",
    )
    shuffle_seed: int | None = Field(
        default=None, description="Shuffle the records with this seed before limit and sharding."
    )

    @property
    def effective_max_bytes(self) -> int:
        return DEFAULT_DATASET_MAX_BYTES if self.max_bytes is None else self.max_bytes

    def source(self) -> str:
        """Where the samples come from, in a few words (status.datasetSource)."""
        if self.builtin is not None:
            return f"builtin {self.builtin}"
        if self.config_map_ref is not None:
            return f"configMap {self.config_map_ref.name}/{self.config_map_ref.key}"
        if self.inline is not None:
            return f"inline, {len(self.inline)} records"
        url = self.url or ""
        return f"url {url if len(url) <= 80 else url[:77] + '...'}"
