"""spec.dataset: where the samples come from (a builtin dataset, a ConfigMap key, inline records,
a URL or a Hugging Face Hub dataset) and which record fields they read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from eval_api.v1alpha1.common import (
    ApiModel,
    ConfigMapKeySelector,
    SecretKeySelector,
    cel_rule,
    exactly_one_of,
)

# Datasets shipped inside the runner package (runner/eval_runner/datasets/);
# a unit test keeps this list and the files in step.
BUILTIN_DATASETS = ("arithmetic", "capitals", "sentiment")

# dataset.maxBytes: its default, and the largest value accepted (a runner pod's memory holds the
# whole file while it is parsed).
DEFAULT_DATASET_MAX_BYTES = 256 * 1024 * 1024
MAX_DATASET_BYTES_LIMIT = 16 * 1024 * 1024 * 1024


# A Hub repo id, "owner/name" (huggingface_hub's validate_repo_id: 96 characters at most).
HF_REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$"
# A commit id or a tag. Branches move: "main" or "master" would change the data under a baseline.
HF_REVISION_PATTERN = r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$"
MOVING_REVISIONS = ("main", "master")
DEFAULT_SPLIT = "test"


class HuggingFaceDataset(ApiModel):
    """A dataset repository on the Hugging Face Hub, or on a mirror of it (the operator's
    Hub endpoint, chart value huggingface.endpoint)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!(self.revision in " + str(list(MOVING_REVISIONS)) + ")",
                    "revision must be a commit or a tag: a branch moves under a baseline",
                    ".revision",
                )
            ]
        }
    )

    repo: str = Field(
        max_length=96,
        pattern=HF_REPO_PATTERN,
        description='The dataset repository, "owner/name" (e.g. cais/mmlu).',
    )
    revision: str = Field(
        min_length=1,
        max_length=128,
        pattern=HF_REVISION_PATTERN,
        description=(
            "The commit (40 hex digits) or tag the samples are read at. Required: a dataset "
            "that changes under a baseline breaks every comparison. The commit it resolved to "
            "is reported in status.datasetSource."
        ),
    )
    config: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description=(
            "The dataset's configuration (subset), as its README's configs lists them or as a "
            "folder of the repository (the Hub's parquet layout, config/split/*.parquet)."
        ),
    )
    split: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description=(
            "The split the samples are read from: by default test, or with task.lmEval the "
            "task's test_split (else its validation_split)."
        ),
    )
    token_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description=(
            "A Secret key holding a Hub token, for gated or private datasets. It reaches the "
            "runner only as the environment variable HF_TOKEN, never in logs or status."
        ),
    )

    def source(self) -> str:
        subset = f" {self.config}" if self.config else ""
        return f"huggingface {self.repo}@{self.revision}{subset} {self.split or DEFAULT_SPLIT}"


class DatasetSpec(ApiModel):
    """Where the samples come from: exactly one of builtin, configMapRef, inline, url or
    huggingface."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    exactly_one_of("builtin", "configMapRef", "inline", "url", "huggingface"),
                    "exactly one of builtin, configMapRef, inline, url or huggingface must be set",
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
                    "!has(self.maxBytes) || has(self.url) || has(self.configMapRef)"
                    " || has(self.huggingface)",
                    "maxBytes applies to url, configMapRef and huggingface datasets only",
                    ".maxBytes",
                ),
                cel_rule(
                    "!has(self.format) || !has(self.huggingface)",
                    "a huggingface dataset's format is its files' (parquet, jsonl, json, csv)",
                    ".format",
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
    huggingface: HuggingFaceDataset | None = Field(
        default=None,
        description=(
            "A Hugging Face Hub dataset at a pinned revision: its split's files (parquet, "
            "jsonl, json or csv) are downloaded once per pod and read a batch at a time."
        ),
    )
    max_bytes: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DATASET_BYTES_LIMIT,
        description=(
            "Size limit in bytes of the file at url, of the configMapRef file, or of the "
            "huggingface split's files together (default 268435456, 256 MiB). A download "
            "stops as soon as it passes the limit, and the run fails with reason "
            "DatasetTooLarge. A url is fetched once per pod (into /tmp), following at most 5 "
            "redirects."
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
        if self.huggingface is not None:
            return self.huggingface.source()
        url = self.url or ""
        return f"url {url if len(url) <= 80 else url[:77] + '...'}"
