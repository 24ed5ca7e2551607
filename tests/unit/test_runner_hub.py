"""dataset.huggingface: a split of a Hub dataset at a pinned revision, fetched by the real
huggingface_hub client from a stand-in hub over real HTTP, and read without holding it whole."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eval_api.v1alpha1 import DatasetSpec
from eval_runner import hub
from eval_runner.dataset import DatasetUnavailable, Sample, _hub_samples, load_samples
from eval_runner.errors import PermanentError
from tests.support.hfhub import StandInHub

ROWS = [
    {"question": f"q{i}", "answer": i % 7, "passage": f"p{i // 3}", "note": None} for i in range(50)
]
TOKEN = "hf_test_token_value_0123456789"  # noqa: S105 - a stand-in hub's token


def parquet(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer, row_group_size=7)
    return buffer.getvalue()


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def spec(**fields: Any) -> DatasetSpec:
    fields.setdefault("inputField", "question")
    fields.setdefault("targetField", "answer")
    return DatasetSpec.model_validate(fields)


def hf(repo: str = "org/quiz", revision: str = "v1", **fields: Any) -> dict[str, Any]:
    return {"repo": repo, "revision": revision, **fields}


def view(samples: list[Sample]) -> list[tuple[int, str, str, str | None]]:
    return [(s.id, s.input, s.target, s.group) for s in samples]


# --- which files hold a split ---------------------------------------------------------------------


README = """---
configs:
- config_name: all
  data_files:
  - split: test
    path: all/test-*
  - split: dev
    path: all/dev-*
- config_name: small
  default: true
  data_files:
  - split: test
    path: "small/**/*.jsonl"
---
# A dataset
"""


def test_the_readmes_configs_name_the_files_of_each_split() -> None:
    paths = sorted(
        ["all/test-00000-of-00002.parquet", "all/test-00001-of-00002.parquet",
         "all/dev-00000-of-00001.parquet", "small/a/b/test.jsonl", "small/x.jsonl", "README.md"]
    )  # fmt: skip
    assert hub.split_files(paths, README, "all", "test") == [
        "all/test-00000-of-00002.parquet",
        "all/test-00001-of-00002.parquet",
    ]
    assert hub.split_files(paths, README, "all", "dev") == ["all/dev-00000-of-00001.parquet"]
    # No config named: the default one; ** crosses folders, * does not.
    assert hub.split_files(paths, README, None, "test") == ["small/a/b/test.jsonl", "small/x.jsonl"]
    assert hub.split_files(paths, README, "all", "validation") == []


def test_without_configs_the_hubs_layouts_are_read() -> None:
    parquet_layout = ["abstract_algebra/test/0000.parquet", "abstract_algebra/dev/0000.parquet"]
    assert hub.split_files(parquet_layout, None, "abstract_algebra", "test") == [
        "abstract_algebra/test/0000.parquet"
    ]
    flat = ["main/test-00000-of-00001.parquet", "main/train-00000-of-00001.parquet"]
    assert hub.split_files(flat, None, "main", "train") == ["main/train-00000-of-00001.parquet"]
    data = ["data/test-00000-of-00001.parquet", "data/validation-00000.jsonl", "LICENSE"]
    assert hub.split_files(data, "---\n---\n", None, "validation") == [
        "data/validation-00000.jsonl"
    ]
    assert hub.split_files(["test.csv", "train.csv"], None, None, "test") == ["test.csv"]
    # A bare data_files list is the train split, as the datasets library reads it.
    bare = "---\nconfigs:\n- config_name: default\n  data_files: rows/*.jsonl\n---\n"
    assert hub.split_files(["rows/a.jsonl"], bare, None, "train") == ["rows/a.jsonl"]
    assert hub.split_files(["rows/a.jsonl"], bare, None, "test") == []


# --- the same samples as a list of records, never the whole split in memory ----------------------


@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize(
    "options",
    [{}, {"shuffleSeed": 7}, {"shuffleSeed": 7, "limit": 20}, {"limit": 45}],
    ids=["plain", "shuffled", "shuffled-limited", "limited"],
)
@pytest.mark.parametrize("group_field", [None, "passage"])
@pytest.mark.parametrize("ask_seed", [None, 5], ids=["in-order", "early-stop-order"])
async def test_files_give_the_samples_the_same_records_give(
    tmp_path: Path,
    shards: int,
    options: dict[str, Any],
    group_field: str | None,
    ask_seed: int | None,
) -> None:
    first, second = tmp_path / "a.parquet", tmp_path / "b.jsonl"
    first.write_bytes(parquet(ROWS[:30]))
    second.write_bytes(jsonl(ROWS[30:]))
    every: list[int] = []
    for shard in range(shards):
        from_records = await load_samples(
            spec(inline=ROWS, **options),
            group_field=group_field,
            shard=shard,
            shards=shards,
            ask_seed=ask_seed,
        )
        from_files = _hub_samples(
            (first, second), spec(huggingface=hf(), **options), group_field, shard, shards,
            ask_seed=ask_seed,
        )  # fmt: skip
        assert view(from_files) == view(from_records)
        assert [s.record for s in from_files] == [s.record for s in from_records]
        assert (from_files.run_total, from_files.max_group) == (
            from_records.run_total,
            from_records.max_group,
        )
        every += [s.id for s in from_files]
    # Together the shards ask every sample once, in whatever order.
    assert sorted(every) == list(range(from_files.run_total))


# --- over HTTP, from the real client --------------------------------------------------------------


@pytest.fixture
async def stand_in(monkeypatch: pytest.MonkeyPatch) -> StandInHub:
    async with StandInHub() as server:
        monkeypatch.setenv(hub.ENDPOINT_ENV, server.url)
        monkeypatch.delenv(hub.TOKEN_ENV, raising=False)
        yield server


async def test_a_split_is_downloaded_once_per_pod_at_its_revision(
    stand_in: StandInHub, tmp_path: Path
) -> None:
    repo = stand_in.repo("org/quiz")
    tagged = repo.add_commit(
        {"README.md": b"# quiz\n", "main/test-00000-of-00001.parquet": parquet(ROWS[:10])},
        refs=("main", "v1"),
    )
    # main moves on; v1 and the commit still name the first ten rows.
    repo.add_commit({"main/test-00000-of-00001.parquet": parquet(ROWS)}, refs=("main",))
    for revision in ("v1", tagged):
        samples = await load_samples(
            spec(huggingface=hf(revision=revision, config="main")), download_dir=tmp_path
        )
        assert [s.input for s in samples] == [f"q{i}" for i in range(10)]
    assert stand_in.downloads("test-00000-of-00001.parquet") == 1  # the pod's cache after that
    assert all(r.token is None for r in stand_in.requests)


async def test_a_gated_dataset_needs_the_token_and_never_tells_it(
    stand_in: StandInHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in.repo("org/gated", token=TOKEN).add_commit(
        {"data/test-00000.jsonl": jsonl(ROWS[:5])}, refs=("v2",)
    )
    gated = spec(huggingface=hf("org/gated", "v2"))
    with pytest.raises(PermanentError) as refused:
        await load_samples(gated, download_dir=tmp_path)
    assert refused.value.reason == "DatasetForbidden"
    assert "without a token" in refused.value.message and "tokenSecretRef" in refused.value.message
    monkeypatch.setenv(hub.TOKEN_ENV, "hf_wrong_token_value")
    with pytest.raises(PermanentError) as wrong:
        await load_samples(gated, download_dir=tmp_path)
    assert "HTTP 403" in wrong.value.message and "hf_wrong" not in wrong.value.message
    monkeypatch.setenv(hub.TOKEN_ENV, TOKEN)
    samples = await load_samples(gated, download_dir=tmp_path)
    assert [s.input for s in samples] == ["q0", "q1", "q2", "q3", "q4"]
    assert {r.token for r in stand_in.requests[-3:]} == {TOKEN}


async def test_what_is_not_there_is_named(stand_in: StandInHub, tmp_path: Path) -> None:
    stand_in.repo("org/quiz").add_commit({"data/train-0.jsonl": jsonl(ROWS)}, refs=("v1",))
    cases = {
        "org/quiz@v9": (hf(revision="v9"), "has no revision 'v9'"),
        "org/none": (hf("org/none"), "no dataset org/none at http://127.0.0.1"),
        "split": (hf(split="test"), "has no files for split 'test' (files: data/train-0.jsonl)"),
    }
    for what, (fields, message) in cases.items():
        with pytest.raises(PermanentError) as err:
            await load_samples(spec(huggingface=fields), download_dir=tmp_path)
        assert err.value.reason == "DatasetNotFound", what
        assert message in err.value.message, (what, err.value.message)


async def test_a_split_larger_than_max_bytes_is_not_downloaded(
    stand_in: StandInHub, tmp_path: Path
) -> None:
    stand_in.repo("org/quiz").add_commit({"data/test-0.jsonl": jsonl(ROWS)}, refs=("v1",))
    with pytest.raises(PermanentError) as err:
        await load_samples(spec(huggingface=hf(), maxBytes=1000), download_dir=tmp_path)
    assert err.value.reason == "DatasetTooLarge" and "more than dataset.maxBytes (1000)" in str(
        err.value.message
    )
    assert stand_in.downloads("test-0.jsonl") == 0


async def test_a_hub_that_cannot_be_reached_is_retried_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(hub.ENDPOINT_ENV, f"http://127.0.0.1:{port}")
    with pytest.raises(DatasetUnavailable):
        await load_samples(spec(huggingface=hf()), download_dir=tmp_path)
