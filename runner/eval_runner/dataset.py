"""Stage 1: records from a builtin dataset, inline records, a ConfigMap file or a URL, turned
into the samples of one shard."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from eval_api.v1alpha1 import BUILTIN_DATASETS, DatasetSpec
from eval_runner.errors import PermanentError
from eval_runner.tls import verify_context

# Where the operator mounts a configMapRef dataset: the key becomes a file in this directory.
DEFAULT_DATASET_DIR = Path("/etc/eval/dataset")
DOWNLOAD_TIMEOUT_SECONDS = 60.0
SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}


@dataclass(frozen=True)
class Sample:
    """One record of the run. `id` is its position in the full shuffled-and-limited list, so it
    is the same in every shard and results from different shards never collide."""

    id: int
    input: str
    target: str
    record: dict[str, Any]  # every original field plus input/target: the template's variables


async def load_samples(
    spec: DatasetSpec,
    *,
    dataset_dir: Path = DEFAULT_DATASET_DIR,
    dataset_file: Path | None = None,
    ca_bundle: Path | None = None,
) -> list[Sample]:
    """All samples of the run: loaded, mapped to input/target, shuffled, then limited.

    `dataset_file` replaces the mounted file of a configMapRef dataset (local runs).
    """
    records = await _load_records(spec, dataset_dir, dataset_file, ca_bundle)
    if not records:
        raise PermanentError("DatasetInvalid", "the dataset has no records")
    mapped = [_map_record(record, index, spec) for index, record in enumerate(records)]
    if spec.shuffle_seed is not None:
        random.Random(spec.shuffle_seed).shuffle(mapped)
    if spec.limit is not None:
        mapped = mapped[: spec.limit]
    return [
        Sample(id=position, input=record["input"], target=record["target"], record=record)
        for position, record in enumerate(mapped)
    ]


def shard_samples(samples: list[Sample], shard: int, shards: int) -> list[Sample]:
    """Shard `shard` of `shards` takes the samples whose position % shards == shard.

    Round-robin rather than contiguous blocks: shard sizes differ by at most one, a sample's
    shard depends only on its position (a retried pod gets exactly the same slice), and a
    dataset sorted by topic or difficulty is spread evenly, so every shard's progress is
    representative of the whole.
    """
    if not 0 <= shard < shards:
        raise PermanentError("InvalidShard", f"shard index {shard} is outside 0..{shards - 1}")
    return samples[shard::shards]


async def _load_records(
    spec: DatasetSpec, dataset_dir: Path, dataset_file: Path | None, ca_bundle: Path | None
) -> list[Any]:
    if spec.inline is not None:
        return list(spec.inline)
    if spec.builtin is not None:
        resource = files("eval_runner") / "datasets" / f"{spec.builtin}.jsonl"
        if not resource.is_file():
            raise PermanentError(
                "DatasetNotFound",
                f"no builtin dataset {spec.builtin!r}; known: {', '.join(BUILTIN_DATASETS)}",
            )
        return _parse(resource.read_bytes(), "jsonl", f"builtin dataset {spec.builtin}")
    if spec.config_map_ref is not None:
        ref = spec.config_map_ref
        path = dataset_file or dataset_dir / ref.key
        try:
            data = path.read_bytes()
        except FileNotFoundError as err:
            raise PermanentError(
                "DatasetNotFound",
                f"dataset file {path} (configMapRef {ref.name}/{ref.key}) does not exist",
            ) from err
        return _parse(data, spec.format or _infer_format(ref.key), str(path))
    if spec.url is not None:
        assert spec.sha256 is not None  # the API requires sha256 with url
        data = await _download(spec.url, spec.sha256, ca_bundle)
        return _parse(data, spec.format or _infer_format(urlsplit(spec.url).path), spec.url)
    raise PermanentError(
        "DatasetInvalid", "dataset sets none of builtin, configMapRef, inline, url"
    )


async def _download(url: str, sha256: str, ca_bundle: Path | None) -> bytes:
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(DOWNLOAD_TIMEOUT_SECONDS),
        follow_redirects=True,
        verify=verify_context(ca_bundle),
    ) as http:
        response = await http.get(url)
    if response.is_client_error and response.status_code not in (408, 429):
        raise PermanentError("DatasetNotFound", f"GET {url} returned {response.status_code}")
    # Server errors and network failures propagate as ordinary exceptions: the pod is retried.
    response.raise_for_status()
    digest = hashlib.sha256(response.content).hexdigest()
    # Checked before parsing, so a changed file is never evaluated, not even partly.
    if digest != sha256:
        raise PermanentError(
            "DatasetChecksumMismatch", f"sha256 of {url} is {digest}, expected {sha256}"
        )
    return response.content


def _infer_format(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise PermanentError(
            "DatasetInvalid",
            f"cannot infer the format of {name!r} from its suffix; set dataset.format",
        )
    return SUFFIX_FORMATS[suffix]


def _parse(data: bytes, fmt: str, source: str) -> list[Any]:
    try:
        text = data.decode("utf-8-sig")  # -sig: files exported from spreadsheets start with a BOM
    except UnicodeDecodeError as err:
        raise PermanentError("DatasetInvalid", f"{source} is not UTF-8: {err}") from err
    if fmt == "jsonl":
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise PermanentError(
                        "DatasetInvalid", f"{source} line {lineno} is not JSON: {err}"
                    ) from err
    elif fmt == "json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise PermanentError("DatasetInvalid", f"{source} is not JSON: {err}") from err
        records = document.get("data") if isinstance(document, dict) else document
        if not isinstance(records, list):
            raise PermanentError(
                "DatasetInvalid", f'{source} must hold a list of records or {{"data": [...]}}'
            )
    else:
        records = list(csv.DictReader(io.StringIO(text)))
    return records


def _map_record(record: Any, index: int, spec: DatasetSpec) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise PermanentError("DatasetInvalid", f"record {index} is not an object")
    if spec.input_field not in record:
        raise PermanentError(
            "DatasetInvalid",
            f"record {index} has no field {spec.input_field!r} (dataset.inputField)",
        )
    target = record.get(spec.target_field)
    return {
        **record,
        "input": _as_text(record[spec.input_field]),
        # A missing target is allowed: json_valid and target-less regex scorers need none.
        "target": "" if target is None else _as_text(target),
    }


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
