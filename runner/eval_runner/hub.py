"""dataset.huggingface: a split of a Hugging Face Hub dataset at a pinned revision.

huggingface_hub (the Hub's own client) resolves the revision to its commit, lists the commit's
files and downloads the split's files once per pod into its cache under /tmp (a restarted
container of the pod finds them there). The endpoint is HF_ENDPOINT (a mirror, or an air-gapped
cluster's own hub: the chart's huggingface.endpoint), the token HF_TOKEN (from the Secret named by
tokenSecretRef). The token is handed to the client and nowhere else: no message here holds it.

Which files hold a split, as the `datasets` library decides for the repos the Hub serves:
- the README's YAML `configs:` list, when it has one (config_name, data_files with split and
  path globs; `default: true` marks the config used when none is named);
- else the Hub's parquet layout, `<config>/<split>/*.parquet` or `<config>/<split>-*.<ext>`;
- else, with no config named, `data/<split>-*.<ext>`, `<split>/*.<ext>` or `<split>.<ext>`.
Files are read in the order of their paths. parquet is read a record batch at a time, jsonl and
csv a line at a time: a split's records are never all in memory at once (see dataset.py).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from eval_api import environment
from eval_api.v1alpha1.dataset import DEFAULT_SPLIT, HuggingFaceDataset
from eval_runner.errors import PermanentError
from eval_runner.secrets import read_key

ENDPOINT_ENV = environment.HF_ENDPOINT
TOKEN_ENV = environment.HF_TOKEN
FORMATS = {
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
}
BATCH_ROWS = 1024
READ_BUFFER_BYTES = 1 << 20


class HubUnavailable(Exception):
    """The Hub could not be reached or answered 5xx this time: the pod is retried."""


@dataclass(frozen=True)
class HubSplit:
    commit: str  # the revision, resolved
    files: tuple[Path, ...]  # the split's files, downloaded, in order


def fetch_split(
    spec: HuggingFaceDataset, max_bytes: int, cache_dir: Path, environ: dict[str, str] | None = None
) -> HubSplit:
    """Resolve, list and download the split's files (a blocking call: run it in a thread)."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    environ = os.environ if environ is None else environ
    endpoint = environ.get(ENDPOINT_ENV) or None
    # Registered for redaction like the API keys; False: never a token from ~/.cache/huggingface.
    token = read_key(TOKEN_ENV, environ.get(TOKEN_ENV)) or False
    where = f"{spec.repo}@{spec.revision}"
    split = spec.split or DEFAULT_SPLIT
    api = HfApi(endpoint=endpoint, token=token)
    try:
        commit = api.dataset_info(spec.repo, revision=spec.revision).sha
        tree = [
            entry
            for entry in api.list_repo_tree(
                spec.repo, revision=commit, recursive=True, repo_type="dataset"
            )
            if getattr(entry, "size", None) is not None
        ]
        sizes = {entry.path: entry.size for entry in tree}
        readme = None
        if "README.md" in sizes:
            readme = Path(
                hf_hub_download(
                    spec.repo, "README.md", repo_type="dataset", revision=commit,
                    cache_dir=cache_dir, endpoint=endpoint, token=token,
                )
            ).read_text(encoding="utf-8")  # fmt: skip
        chosen = split_files(sorted(sizes), readme, spec.config, split)
        if not chosen:
            subset = f"config {spec.config!r} " if spec.config else ""
            raise PermanentError(
                "DatasetNotFound",
                f"{where} has no files for {subset}split {split!r} "
                f"(files: {', '.join(sorted(sizes)[:20])})",
            )
        total = sum(sizes[path] for path in chosen)
        if total > max_bytes:
            raise PermanentError(
                "DatasetTooLarge",
                f"split {split!r} of {where} is {total} bytes in {len(chosen)} file(s), "
                f"more than dataset.maxBytes ({max_bytes})",
            )
        files = tuple(
            Path(
                hf_hub_download(
                    spec.repo, path, repo_type="dataset", revision=commit,
                    cache_dir=cache_dir, endpoint=endpoint, token=token,
                )
            )
            for path in chosen
        )  # fmt: skip
    except GatedRepoError as err:
        asked = "the tokenSecretRef's token" if token else "a request without a token"
        raise PermanentError(
            "DatasetForbidden",
            f"{spec.repo} is gated or private and the Hub refused {asked} (HTTP "
            f"{_status(err)}): accept its terms on the Hub with the token's account, or set "
            "dataset.huggingface.tokenSecretRef",
        ) from None
    except RevisionNotFoundError:
        raise PermanentError(
            "DatasetNotFound", f"{spec.repo} has no revision {spec.revision!r}"
        ) from None
    except RepositoryNotFoundError:
        raise PermanentError(
            "DatasetNotFound", f"no dataset {spec.repo} at {endpoint or 'huggingface.co'}"
        ) from None
    except EntryNotFoundError as err:
        raise PermanentError("DatasetNotFound", f"{where}: {_first_line(err)}") from None
    except HfHubHTTPError as err:
        status = _status(err)
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            raise PermanentError("DatasetNotFound", f"{where}: {_first_line(err)}") from None
        raise HubUnavailable(f"{where}: {_first_line(err)}") from None
    except OSError as err:  # connection refused, DNS, timeouts (httpx's errors are OSErrors' kin)
        raise HubUnavailable(f"{where}: {type(err).__name__}: {err}") from None
    except Exception as err:
        if type(err).__module__.startswith(("httpx", "httpcore")):
            raise HubUnavailable(f"{where}: {type(err).__name__}: {err}") from None
        raise
    return HubSplit(commit, files)


def _status(err: Exception) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


# --- which files hold a split --------------------------------------------------------------------


def split_files(paths: list[str], readme: str | None, config: str | None, split: str) -> list[str]:
    """The repository paths holding `split` of `config`, in order (see the module's docstring)."""
    configs = _readme_configs(readme)
    if configs:
        entry = _config_entry(configs, config)
        if entry is not None:
            globs = _split_globs(entry.get("data_files"), split)
            return [p for p in paths if _data_file(p) and any(_glob_match(g, p) for g in globs)]
    data = [p for p in paths if _data_file(p)]
    if config is not None:
        folder, name = re.escape(config), re.escape(split)
        candidates = (rf"{folder}/{name}/[^/]+", rf"{folder}/{name}[-.][^/]+")
    else:
        candidates = (
            rf"data/{re.escape(split)}[-.][^/]+",
            rf"{re.escape(split)}/[^/]+",
            rf"{re.escape(split)}\.[^/]+",
        )
    for pattern in candidates:
        found = [p for p in data if re.fullmatch(pattern, p)]
        if found:
            return found
    return []


def _data_file(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in FORMATS


def _readme_configs(readme: str | None) -> list[dict[str, Any]]:
    if not readme or not readme.startswith("---"):
        return []
    end = readme.find("\n---", 3)
    if end < 0:
        return []
    try:
        header = yaml.safe_load(readme[3:end])
    except yaml.YAMLError:
        return []
    configs = header.get("configs") if isinstance(header, dict) else None
    return [c for c in configs if isinstance(c, dict)] if isinstance(configs, list) else []


def _config_entry(configs: list[dict[str, Any]], config: str | None) -> dict[str, Any] | None:
    if config is not None:
        return next((c for c in configs if c.get("config_name") == config), None)
    default = [c for c in configs if c.get("default")]
    if default:
        return default[0]
    named = [c for c in configs if c.get("config_name") == "default"]
    return named[0] if named else (configs[0] if len(configs) == 1 else None)


def _split_globs(data_files: Any, split: str) -> list[str]:
    if isinstance(data_files, (str, list)) and not (
        isinstance(data_files, list) and data_files and isinstance(data_files[0], dict)
    ):
        # A bare path or list of paths is the train split, as datasets reads it.
        return _as_list(data_files) if split == "train" else []
    globs: list[str] = []
    for item in data_files or []:
        if isinstance(item, dict) and item.get("split") == split:
            globs += _as_list(item.get("path"))
    return globs


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [v for v in value or [] if isinstance(v, str)]


def _glob_match(pattern: str, path: str) -> bool:
    """fsspec's glob: `**/` is any number of folders, `*` and `?` stay within one."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.fullmatch(regex, path) is not None


# --- reading records a batch at a time -----------------------------------------------------------


def format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise PermanentError("DatasetInvalid", f"{path.name}: not parquet, jsonl, json or csv")
    return FORMATS[suffix]


def count_records(path: Path) -> int:
    """How many records the file holds; parquet says so in its footer."""
    if format_of(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return sum(1 for _ in iter_records(path))


def iter_records(path: Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The file's records, one at a time; `columns` reads only those (parquet reads no other)."""
    fmt = format_of(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        # Read as a stream: pyarrow's defaults (pre-buffering, threads) hold most of the file in
        # memory at once (a 369 MB file: 767 MB peak, against 130 MB this way).
        parquet = pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER_BYTES)
        present = set(parquet.schema_arrow.names)
        wanted = None if columns is None else [c for c in columns if c in present]
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=wanted, use_threads=False):
            yield from batch.to_pylist()
    elif fmt == "jsonl":
        with path.open(encoding="utf-8-sig") as lines:
            for lineno, line in enumerate(lines, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as err:
                        raise PermanentError(
                            "DatasetInvalid", f"{path.name} line {lineno} is not JSON: {err}"
                        ) from err
    elif fmt == "csv":
        with path.open(encoding="utf-8-sig", newline="") as rows:
            yield from csv.DictReader(rows)
    else:
        try:
            document = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as err:
            raise PermanentError("DatasetInvalid", f"{path.name} is not JSON: {err}") from err
        records = document.get("data") if isinstance(document, dict) else document
        if not isinstance(records, list):
            raise PermanentError(
                "DatasetInvalid", f'{path.name} must hold a list of records or {{"data": [...]}}'
            )
        yield from records
