"""Dataset loading: builtin, inline, files, URLs; mapping, shuffle, limit, sharding."""

from __future__ import annotations

import hashlib
import json
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from eval_api.v1alpha1 import BUILTIN_DATASETS, DatasetSpec
from eval_runner.dataset import Sample, load_samples, shard_samples
from eval_runner.demo_server import arithmetic_answer
from eval_runner.errors import PermanentError
from tests.support.model_server import ModelServer

RECORDS = [{"question": f"q{i}", "answer": i, "topic": "t"} for i in range(10)]


def spec(**fields: Any) -> DatasetSpec:
    return DatasetSpec.model_validate(fields)


async def load(**fields: Any) -> list[Sample]:
    return await load_samples(spec(**fields))


# --- builtin --------------------------------------------------------------------------------


def test_builtin_datasets_match_the_shipped_files() -> None:
    folder = files("eval_runner") / "datasets"
    shipped = {p.name.removesuffix(".jsonl") for p in folder.iterdir() if p.name.endswith(".jsonl")}
    assert shipped == set(BUILTIN_DATASETS)


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
async def test_every_builtin_record_has_input_and_target(name: str) -> None:
    samples = await load(builtin=name)
    assert 20 <= len(samples) <= 60
    assert all(s.input.strip() and s.target.strip() for s in samples)
    assert len({s.input for s in samples}) == len(samples), "duplicate questions"


async def test_builtin_arithmetic_targets_are_correct_integers() -> None:
    for sample in await load(builtin="arithmetic"):
        assert int(sample.target) == int(arithmetic_answer(sample.input) or "x"), sample


# --- inline and mapping ---------------------------------------------------------------------


async def test_inline_maps_fields_and_keeps_the_originals() -> None:
    samples = await load(inline=RECORDS, inputField="question", targetField="answer")
    assert [s.id for s in samples] == list(range(10))
    first = samples[0]
    assert (first.input, first.target) == ("q0", "0")  # non-string targets become text
    assert first.record == {
        "question": "q0",
        "answer": 0,
        "topic": "t",
        "input": "q0",
        "target": "0",
    }


async def test_missing_input_field_names_the_record() -> None:
    records = [{"input": "a"}, {"input": "b"}, {"text": "c"}]
    with pytest.raises(PermanentError) as caught:
        await load(inline=records)
    assert caught.value.reason == "DatasetInvalid"
    assert "record 2" in caught.value.message and "'input'" in caught.value.message


async def test_missing_target_is_empty() -> None:
    samples = await load(inline=[{"input": "x"}])
    assert samples[0].target == ""


# --- shuffle, limit, sharding ---------------------------------------------------------------


async def test_shuffle_is_deterministic_then_limited() -> None:
    first = await load(inline=RECORDS, inputField="question", shuffleSeed=7)
    again = await load(inline=RECORDS, inputField="question", shuffleSeed=7)
    other = await load(inline=RECORDS, inputField="question", shuffleSeed=8)
    limited = await load(inline=RECORDS, inputField="question", shuffleSeed=7, limit=4)
    assert [s.input for s in first] == [s.input for s in again]
    assert [s.input for s in first] != [s.input for s in other]
    assert sorted(s.input for s in first) == sorted(r["question"] for r in RECORDS)
    assert [s.input for s in limited] == [s.input for s in first[:4]]
    # ids are positions in the shuffled-and-limited list
    assert [s.id for s in limited] == [0, 1, 2, 3]


async def test_limit_without_shuffle_takes_the_first_records() -> None:
    samples = await load(inline=RECORDS, inputField="question", limit=3)
    assert [s.input for s in samples] == ["q0", "q1", "q2"]


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 7, 10, 13])
async def test_shards_cover_every_sample_exactly_once(shards: int) -> None:
    samples = await load(inline=RECORDS, inputField="question", shuffleSeed=1)
    slices = [shard_samples(samples, i, shards) for i in range(shards)]
    ids = [s.id for part in slices for s in part]
    assert sorted(ids) == list(range(len(samples)))
    assert max(map(len, slices)) - min(map(len, slices)) <= 1
    assert all(s.id % shards == i for i, part in enumerate(slices) for s in part)


def test_shard_index_out_of_range_is_permanent() -> None:
    with pytest.raises(PermanentError) as caught:
        shard_samples([], 3, 3)
    assert caught.value.reason == "InvalidShard"


# --- files (configMapRef) -------------------------------------------------------------------

JSONL = b'{"input": "a", "target": "1"}\n\n{"input": "b", "target": "2"}\n'
JSON_LIST = json.dumps([{"input": "a", "target": "1"}, {"input": "b", "target": "2"}]).encode()
JSON_DATA = json.dumps(
    {"data": [{"input": "a", "target": "1"}, {"input": "b", "target": 2}]}
).encode()
CSV = b"\xef\xbb\xbfinput,target,extra\na,1,x\nb,2,y\n"  # with the BOM spreadsheets write


@pytest.mark.parametrize(
    ("key", "content", "fmt"),
    [
        ("data.jsonl", JSONL, None),
        ("data.json", JSON_LIST, None),
        ("data.json", JSON_DATA, None),
        ("data.csv", CSV, None),
        ("data.txt", JSONL, "jsonl"),  # an explicit format wins over the suffix
    ],
)
async def test_configmap_file_formats(
    tmp_path: Path, key: str, content: bytes, fmt: str | None
) -> None:
    (tmp_path / key).write_bytes(content)
    dataset = spec(configMapRef={"name": "cm", "key": key}, format=fmt)
    samples = await load_samples(dataset, dataset_dir=tmp_path)
    assert [(s.input, s.target) for s in samples] == [("a", "1"), ("b", "2")]


async def test_dataset_file_replaces_the_mounted_file(tmp_path: Path) -> None:
    local = tmp_path / "local.jsonl"
    local.write_bytes(JSONL)
    dataset = spec(configMapRef={"name": "cm", "key": "data.jsonl"})
    samples = await load_samples(dataset, dataset_dir=tmp_path / "absent", dataset_file=local)
    assert len(samples) == 2


@pytest.mark.parametrize(
    ("key", "content", "reason", "words"),
    [
        ("absent.jsonl", None, "DatasetNotFound", "does not exist"),
        ("data.txt", JSONL, "DatasetInvalid", "set dataset.format"),
        ("data.jsonl", b'{"input": "a"}\n{oops\n', "DatasetInvalid", "line 2"),
        ("data.json", b'{"rows": []}', "DatasetInvalid", '{"data": [...]}'),
        ("data.json", b"[1, 2]", "DatasetInvalid", "record 0 is not an object"),
        ("data.jsonl", b"", "DatasetInvalid", "no records"),
        ("data.csv", b"\xff\xfe", "DatasetInvalid", "UTF-8"),
    ],
)
async def test_bad_files_are_permanent_errors(
    tmp_path: Path, key: str, content: bytes | None, reason: str, words: str
) -> None:
    if content is not None:
        (tmp_path / key).write_bytes(content)
    with pytest.raises(PermanentError) as caught:
        await load_samples(spec(configMapRef={"name": "cm", "key": key}), dataset_dir=tmp_path)
    assert caught.value.reason == reason
    assert words in caught.value.message


# --- url ------------------------------------------------------------------------------------


async def test_url_download_checks_sha256(tmp_path: Path) -> None:
    digest = hashlib.sha256(CSV).hexdigest()

    async def fetch(url: str, sha256: str) -> list[Sample]:
        return await load_samples(spec(url=url, sha256=sha256), download_dir=tmp_path)

    async with ModelServer(files={"qa.csv": CSV, "broken.jsonl": b"{oops"}) as server:
        samples = await fetch(server.url("/files/qa.csv"), digest)
        assert [s.record["extra"] for s in samples] == ["x", "y"]

        with pytest.raises(PermanentError) as mismatch:
            await fetch(server.url("/files/qa.csv"), "0" * 64)
        assert mismatch.value.reason == "DatasetChecksumMismatch"
        assert digest in mismatch.value.message

        # The checksum is checked before parsing: a changed file is never even partly read.
        with pytest.raises(PermanentError) as changed:
            await fetch(server.url("/files/broken.jsonl"), digest)
        assert changed.value.reason == "DatasetChecksumMismatch"

        with pytest.raises(PermanentError) as missing:
            await fetch(server.url("/files/absent.csv"), digest)
        assert missing.value.reason == "DatasetNotFound"
    # Only the file that matched its checksum is kept.
    assert len(os.listdir(tmp_path)) == 1


async def test_a_url_is_downloaded_once_per_pod(tmp_path: Path) -> None:
    digest = hashlib.sha256(JSONL).hexdigest()
    async with ModelServer(files={"qa.jsonl": JSONL}) as server:
        dataset = spec(url=server.url("/files/qa.jsonl"), sha256=digest)
        first = await load_samples(dataset, download_dir=tmp_path)
        again = await load_samples(dataset, download_dir=tmp_path)  # a restarted container
    assert [s.input for s in first] == [s.input for s in again] == ["a", "b"]
    assert server.file_requests == {"qa.jsonl": 1}


async def test_a_url_download_stops_at_max_bytes(tmp_path: Path) -> None:
    big = b'{"input": "a", "target": "1"}\n' * (1 << 20)  # 30 MiB
    digest = hashlib.sha256(big).hexdigest()
    async with ModelServer(files={"big.jsonl": big}) as server:
        for path in ("/files/big.jsonl", "/stream/big.jsonl"):  # with and without a length
            with pytest.raises(PermanentError) as caught:
                await load_samples(
                    spec(url=server.url(path), sha256=digest, maxBytes=100_000),
                    download_dir=tmp_path,
                )
            assert caught.value.reason == "DatasetTooLarge"
            assert "maxBytes (100000 bytes)" in caught.value.message
    # The stream was cut early: far less than the file was sent, and nothing was kept.
    assert server.streamed_bytes < len(big) // 4
    assert os.listdir(tmp_path) == []


async def test_url_redirects_are_followed_up_to_five(tmp_path: Path) -> None:
    digest = hashlib.sha256(JSONL).hexdigest()
    async with ModelServer(files={"qa.jsonl": JSONL}) as server:
        samples = await load_samples(
            spec(url=server.url("/redirect/5/qa.jsonl"), sha256=digest, format="jsonl"),
            download_dir=tmp_path,
        )
        assert len(samples) == 2
        with pytest.raises(PermanentError) as caught:
            await load_samples(
                spec(url=server.url("/redirect/6/qa.jsonl"), sha256=digest, format="jsonl"),
                download_dir=tmp_path,
            )
    assert caught.value.reason == "DatasetNotFound"
    assert "more than 5 redirects" in caught.value.message


async def test_max_bytes_limits_a_configmap_file_too(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_bytes(JSONL)
    dataset = spec(configMapRef={"name": "cm", "key": "data.jsonl"}, maxBytes=10)
    with pytest.raises(PermanentError) as caught:
        await load_samples(dataset, dataset_dir=tmp_path)
    assert caught.value.reason == "DatasetTooLarge"


def test_max_bytes_is_only_for_files() -> None:
    with pytest.raises(ValueError, match="maxBytes applies to url, configMapRef and huggingface"):
        spec(builtin="arithmetic", maxBytes=10)
