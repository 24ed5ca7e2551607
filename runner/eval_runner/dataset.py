"""Stage 1: records from a builtin dataset, inline records, a ConfigMap file, a URL or the
Hugging Face Hub, turned into the samples of one shard."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import random
import tempfile
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from yarl import URL

from eval_api.v1alpha1.dataset import BUILTIN_DATASETS, DatasetSpec, HuggingFaceDataset
from eval_runner import hub, transport
from eval_runner.errors import PermanentError

log = structlog.get_logger()

# Where the operator mounts a configMapRef dataset: the key becomes a file in this directory.
DEFAULT_DATASET_DIR = Path("/etc/eval/dataset")
# Where a url dataset is kept once downloaded and checked, named by its sha256: /tmp is the
# pod's writable emptyDir, so a restarted container of the same pod does not fetch it again.
DEFAULT_DOWNLOAD_DIR = Path(tempfile.gettempdir()) / "eval-datasets"
# A stalled download fails after this long without a byte; a large one may take its time.
DOWNLOAD_READ_TIMEOUT_SECONDS = 60.0
MAX_REDIRECTS = 5
CHUNK_BYTES = 1 << 16
SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}


@dataclass(frozen=True)
class Sample:
    """One record of the run. `id` is its position in the full shuffled-and-limited list, so it
    is the same in every shard and results from different shards never collide."""

    id: int
    input: str
    target: str
    record: dict[str, Any]  # every original field plus input/target: the template's variables
    group: str | None = None  # the value of task.groupField, when set


class ShardSamples(list[Sample]):
    """A shard's samples, and what early stopping needs of the whole run (every shard's): how
    many samples it has, and its largest group."""

    def __init__(self, samples: list[Sample], run_total: int, max_group: int | None = None) -> None:
        super().__init__(samples)
        self.run_total = run_total
        # With an asking order (execution.earlyStop) and task.groupField: the largest group of
        # the whole run.
        self.max_group = max_group


class DatasetUnavailable(Exception):
    """The dataset URL could not be fetched this time (network, 5xx): the pod is retried."""


async def load_samples(
    spec: DatasetSpec,
    *,
    dataset_dir: Path = DEFAULT_DATASET_DIR,
    dataset_file: Path | None = None,
    ca_bundle: Path | None = None,
    download_dir: Path = DEFAULT_DOWNLOAD_DIR,
    group_field: str | None = None,
    shard: int = 0,
    shards: int = 1,
    raw: bool = False,
    ask_seed: int | None = None,
) -> ShardSamples:
    """The samples of shard `shard` of `shards`: loaded, mapped to input/target, shuffled,
    limited, then sharded (shard_samples). With `raw` (an lm-eval task's docs) records are
    kept as they are, input and target left empty: the task file says what they are. With
    `ask_seed` (execution.earlyStop) the shard's samples are those of asking_order, in the
    order it asks them.

    `dataset_file` replaces the mounted file of a configMapRef dataset (local runs).
    `group_field` (task.groupField) names the record field holding each sample's group.
    A Hub dataset is read from its files twice instead of held whole: once to count (and
    group) its records, once to keep this shard's (see _hub_samples).
    """
    if not 0 <= shard < shards:
        raise PermanentError("InvalidShard", f"shard index {shard} is outside 0..{shards - 1}")
    if spec.huggingface is not None:
        split = await _fetch_split(spec, spec.huggingface, download_dir)
        log.info("dataset resolved", source=spec.source(), commit=split.commit)
        return await asyncio.to_thread(
            _hub_samples, split.files, spec, group_field, shard, shards, raw, ask_seed
        )
    records = await _load_records(spec, dataset_dir, dataset_file, ca_bundle, download_dir)
    if not records:
        raise PermanentError("DatasetInvalid", "the dataset has no records")
    mapper = _raw_record if raw else _map_record
    mapped = [mapper(record, index, spec) for index, record in enumerate(records)]
    if spec.shuffle_seed is not None:
        random.Random(spec.shuffle_seed).shuffle(mapped)
    if spec.limit is not None:
        mapped = mapped[: spec.limit]
    samples = [
        Sample(
            id=position,
            input=record.get("input", ""),  # a raw record has none
            target=record.get("target", ""),
            record=record,
            group=None if group_field is None else _group(record, position, group_field),
        )
        for position, record in enumerate(mapped)
    ]
    if ask_seed is None:
        return ShardSamples(shard_samples(samples, shard, shards), len(samples))
    groups = None if group_field is None else [sample.group or "" for sample in samples]
    mine = asking_order(len(samples), shard, shards, ask_seed, groups)
    return ShardSamples([samples[p] for p in mine], len(samples), _largest(groups))


def _hub_samples(
    files: tuple[Path, ...],
    spec: DatasetSpec,
    group_field: str | None,
    shard: int,
    shards: int,
    raw: bool = False,
    ask_seed: int | None = None,
) -> ShardSamples:
    """This shard's samples of files too large to hold whole: the same samples, ids and order
    as load_samples gives a list of records, with only this shard's records ever kept.

    The shuffle permutes record numbers (an array of them, 8 bytes a record) exactly as it
    permutes a list of records (random.shuffle's swaps depend only on the length), so the
    sample at position k is record order[k]."""
    total = sum(hub.count_records(path) for path in files)
    if total == 0:
        raise PermanentError("DatasetInvalid", "the dataset has no records")
    order = array("q", range(total))
    if spec.shuffle_seed is not None:
        random.Random(spec.shuffle_seed).shuffle(order)
    kept = total if spec.limit is None else min(total, spec.limit)
    position_groups: list[str] | None = None
    if group_field is not None:
        groups = [
            None if record.get(group_field) is None else _as_text(record[group_field])
            for path in files
            for record in hub.iter_records(path, columns=[group_field])
        ]
        position_groups = []
        for position in range(kept):
            value = groups[order[position]]
            if value is None:
                raise PermanentError(
                    "DatasetInvalid",
                    f"sample {position} has no field {group_field!r} (task.groupField)",
                )
            position_groups.append(value)
        del groups
    largest = _largest(position_groups) if ask_seed is not None else None
    if ask_seed is not None:
        mine = asking_order(kept, shard, shards, ask_seed, position_groups)
    elif position_groups is None:
        mine = range(shard, kept, shards)
    else:
        rank: dict[str, int] = {}
        mine = [
            position
            for position, value in enumerate(position_groups)
            if rank.setdefault(value, len(rank)) % shards == shard
        ]
    del position_groups
    wanted = {order[position]: position for position in mine}  # record number -> position
    found: list[Sample] = []
    index = 0
    mapper = _raw_record if raw else _map_record
    for path in files:
        for record in hub.iter_records(path):
            position = wanted.get(index)
            if position is not None:
                mapped = mapper(record, index, spec)
                group = None if group_field is None else _group(mapped, position, group_field)
                found.append(
                    Sample(
                        position, mapped.get("input", ""), mapped.get("target", ""), mapped, group
                    )
                )
            index += 1
    del wanted
    if ask_seed is None:
        found.sort(key=lambda sample: sample.id)
    else:  # the order the shard asks them in
        asked_at = {position: asked for asked, position in enumerate(mine)}
        found.sort(key=lambda sample: asked_at[sample.id])
    return ShardSamples(found, kept, largest)


def _group(record: dict[str, Any], position: int, field: str) -> str:
    if field not in record or record[field] is None:
        raise PermanentError(
            "DatasetInvalid", f"sample {position} has no field {field!r} (task.groupField)"
        )
    return _as_text(record[field])


def _largest(groups: Sequence[str] | None) -> int | None:
    """The most samples one group has, or None without groups."""
    if not groups:
        return None
    sizes: dict[str, int] = {}
    for value in groups:
        sizes[value] = sizes.get(value, 0) + 1
    return max(sizes.values())


def asking_order(
    count: int, shard: int, shards: int, seed: int, groups: Sequence[str] | None = None
) -> list[int]:
    """The positions shard `shard` asks, in the order it asks them (execution.earlyStop): one
    seeded random order of the run's `count` samples, dealt round-robin to the shards, so
    what the shards have scored at any time is a uniformly random part of the run — what an
    anytime-valid confidence sequence needs. With `groups` (each position's task.groupField
    value) the order is one of the groups, each asked whole, its samples in their order."""
    if not 0 <= shard < shards:
        raise PermanentError("InvalidShard", f"shard index {shard} is outside 0..{shards - 1}")
    rng = random.Random(seed)
    if groups is None:
        order = list(range(count))
        rng.shuffle(order)
        return order[shard::shards]
    members: dict[str, list[int]] = {}
    for position, value in enumerate(groups[:count]):
        members.setdefault(value, []).append(position)
    ranked = list(members)  # in order of first appearance
    rng.shuffle(ranked)
    return [position for value in ranked[shard::shards] for position in members[value]]


def shard_samples(samples: list[Sample], shard: int, shards: int) -> list[Sample]:
    """Shard `shard` of `shards` takes the samples whose position % shards == shard, or, with
    task.groupField, the groups whose rank (in order of first appearance) % shards == shard.

    Round-robin rather than contiguous blocks: shard sizes differ by at most one (one group,
    with groups), a sample's shard depends only on the dataset (a retried pod gets exactly the
    same slice), and a dataset sorted by topic or difficulty is spread evenly, so every shard's
    progress is representative of the whole. A group stays in one shard, so the clustered
    sums of the shards add up to those of the whole run.
    """
    if not 0 <= shard < shards:
        raise PermanentError("InvalidShard", f"shard index {shard} is outside 0..{shards - 1}")
    if not samples or samples[0].group is None:
        return samples[shard::shards]
    rank: dict[str, int] = {}
    for sample in samples:
        rank.setdefault(sample.group or "", len(rank))
    return [s for s in samples if rank[s.group or ""] % shards == shard]


async def _load_records(
    spec: DatasetSpec,
    dataset_dir: Path,
    dataset_file: Path | None,
    ca_bundle: Path | None,
    download_dir: Path,
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
            size = path.stat().st_size
            if size > spec.effective_max_bytes:
                raise PermanentError(
                    "DatasetTooLarge",
                    f"{path} holds {size} bytes, more than dataset.maxBytes "
                    f"({spec.effective_max_bytes})",
                )
            data = path.read_bytes()
        except FileNotFoundError as err:
            raise PermanentError(
                "DatasetNotFound",
                f"dataset file {path} (configMapRef {ref.name}/{ref.key}) does not exist",
            ) from err
        return _parse(data, spec.format or _infer_format(ref.key), str(path))
    if spec.url is not None:
        assert spec.sha256 is not None  # the API requires sha256 with url
        data = await download(
            spec.url, spec.sha256, spec.effective_max_bytes, ca_bundle, download_dir
        )
        return _parse(data, spec.format or _infer_format(urlsplit(spec.url).path), spec.url)
    raise PermanentError(
        "DatasetInvalid", "dataset sets none of builtin, configMapRef, inline, url"
    )


async def download(
    url: str, sha256: str, max_bytes: int, ca_bundle: Path | None, directory: Path
) -> bytes:
    """The file at `url`, fetched once per pod into `directory` and checked against `sha256`
    before anything parses it. At most `max_bytes` are read (the download stops there) and at
    most MAX_REDIRECTS redirects followed."""
    # Named by URL and checksum: another URL, even one claiming the same checksum, is fetched
    # and checked on its own.
    name = f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{sha256}"
    kept = directory / name
    data = _read_checked(kept, sha256)
    if data is not None:
        return data
    partial, out = _open_partial(directory, name)
    digest = hashlib.sha256()
    try:
        with out:
            await _fetch(url, max_bytes, ca_bundle, out, digest)
        actual = digest.hexdigest()
        # Checked before parsing, so a changed file is never evaluated, not even partly.
        if actual != sha256:
            raise PermanentError(
                "DatasetChecksumMismatch", f"sha256 of {url} is {actual}, expected {sha256}"
            )
        partial.replace(kept)
    finally:
        partial.unlink(missing_ok=True)
    # Blocking file reads are fine here: nothing else runs before the first request.
    return kept.read_bytes()  # noqa: ASYNC240


def _read_checked(path: Path, sha256: str) -> bytes | None:
    """The file's bytes if it exists and matches sha256 (else it is removed)."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() == sha256:
        return data
    path.unlink()
    return None


def _open_partial(directory: Path, name: str) -> tuple[Path, io.BufferedWriter]:
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f"{name}.{os.getpid()}.part"
    return partial, partial.open("wb")


async def _fetch(
    url: str, max_bytes: int, ca_bundle: Path | None, out: io.BufferedWriter, digest: Any
) -> None:
    timeout = aiohttp.ClientTimeout(
        total=None, connect=transport.CONNECT_SECONDS, sock_read=DOWNLOAD_READ_TIMEOUT_SECONDS
    )
    proxy = transport.proxy_for(URL(url))
    too_large = f"{url} is larger than dataset.maxBytes ({max_bytes} bytes)"
    async with transport.session(ca_bundle=ca_bundle, max_connections=1) as http:
        try:
            async with http.get(
                url,
                timeout=timeout,
                # aiohttp counts the redirect that passes the limit: N + 1 allows N.
                max_redirects=MAX_REDIRECTS + 1,
                proxy=proxy.url,
                proxy_headers=proxy.connect_headers,
                # The checksum is of the file as served, so no transfer compression.
                headers={"Accept-Encoding": "identity", **proxy.request_headers},
            ) as response:
                if 400 <= response.status < 500 and response.status not in (408, 429):
                    raise PermanentError("DatasetNotFound", f"GET {url} returned {response.status}")
                if response.status != 200:
                    raise DatasetUnavailable(f"GET {url} returned {response.status}")
                if (response.content_length or 0) > max_bytes:
                    raise PermanentError("DatasetTooLarge", too_large)
                size = 0
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    size += len(chunk)
                    if size > max_bytes:
                        raise PermanentError("DatasetTooLarge", too_large)
                    digest.update(chunk)
                    out.write(chunk)
        except aiohttp.TooManyRedirects as err:
            raise PermanentError(
                "DatasetNotFound", f"GET {url}: more than {MAX_REDIRECTS} redirects"
            ) from err
        except aiohttp.ClientConnectorError as err:
            reason = transport.connect_reason(err)
            raise DatasetUnavailable(
                f"GET {url}: cannot connect to {err.host}:{err.port}: {reason}"
            ) from err
        except (aiohttp.ClientError, TimeoutError) as err:
            raise DatasetUnavailable(f"GET {url}: {type(err).__name__}: {err}") from err


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


def _raw_record(record: Any, index: int, spec: DatasetSpec) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise PermanentError("DatasetInvalid", f"record {index} is not an object")
    return record


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


async def load_split_records(
    spec: DatasetSpec, split: str, download_dir: Path = DEFAULT_DOWNLOAD_DIR
) -> list[dict[str, Any]]:
    """Every record of another split of a huggingface dataset (an lm-eval task's few-shot
    split), whole: the examples are drawn from all of them."""
    assert spec.huggingface is not None
    other = spec.huggingface.model_copy(update={"split": split})
    found = await _fetch_split(spec, other, download_dir)
    return await asyncio.to_thread(
        lambda: [record for path in found.files for record in hub.iter_records(path)]
    )


async def _fetch_split(
    spec: DatasetSpec, split: HuggingFaceDataset, download_dir: Path
) -> hub.HubSplit:
    """A Hub split's files, downloaded within dataset.maxBytes (a blocking call, in a
    thread); a Hub that cannot be reached now is retried by the pod (DatasetUnavailable)."""
    try:
        return await asyncio.to_thread(
            hub.fetch_split, split, spec.effective_max_bytes, download_dir / "huggingface"
        )
    except hub.HubUnavailable as err:
        raise DatasetUnavailable(str(err)) from None
