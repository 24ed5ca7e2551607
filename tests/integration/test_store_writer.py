"""The sample writer against a real PostgreSQL: batches at N rows or ~1 s, a re-sent batch adds
nothing, a store killed and restarted mid-run loses and duplicates nothing, a store that stays
down stops the shard with StoreUnavailable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from eval_api.shard import ShardSummary
from eval_api.store import StoreSettings
from eval_api.v1alpha1 import Evaluation
from eval_runner import metrics
from eval_runner.errors import PermanentError
from eval_runner.pipeline import run_shard
from eval_runner.store import COLUMNS, RunIdentity, SampleStore, StoreUnavailable, WriterSettings
from tests.support.model_server import Faults, ModelServer
from tests.support.servers import PostgresServer, postgres_server
from tests.support.store_db import create_database, eventually, fetch

pytestmark = pytest.mark.integration

IDENTITY = RunIdentity("0b9a2c1e-0000-4000-8000-0000000000aa", "arith-run1", "team", "arith")


def records(n: int) -> list[dict[str, str]]:
    return [{"input": f"What is {i} + {i % 7}?", "target": str(i + i % 7)} for i in range(n)]


def evaluation(base_url: str, n: int, concurrency: int = 4, **spec: Any) -> Evaluation:
    return Evaluation.model_validate(
        {
            "metadata": {"name": "arith", "namespace": "team"},
            "spec": {
                "model": {
                    "name": "m",
                    "baseURL": base_url,
                    "maxConcurrency": concurrency,
                    "parameters": {"maxTokens": 16},
                    "pricing": {"inputPerMillionUSD": "0.15", "outputPerMillionUSD": "0.60"},
                },
                "dataset": {"inline": records(n)},
                "task": {"scorers": [{"type": "exact_match"}, {"type": "numeric"}]},
                **spec,
            },
        }
    )


def exact(summary: ShardSummary) -> dict[str, Any]:
    """What must be the same as a clean run's: counts, scores, usage."""
    return summary.model_dump(
        by_alias=True, include={"total", "completed", "failed", "errors", "scores", "usage"}
    )


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    with postgres_server() as running:
        yield running


def fake_row(i: int, run: str = IDENTITY.run) -> tuple[Any, ...]:
    values = {
        "evaluation_uid": IDENTITY.evaluation_uid,
        "run": run,
        "sample_id": i,
        "shard": 0,
        "attempt": 1,
        "input_hash": "i" * 64,
        "prompt_hash": "p" * 64,
        "prompt": '[{"role": "user", "content": "question"}]',
        "response": f"answer {i}",
        "scores": '{"exact_match": 1.0}',
        "requests": 1,
        "input_tokens": 10,
        "output_tokens": 2,
        "truncated": False,
        "timed_out": 0,
        "cost_usd": Decimal("0.0000027"),
        "cache_hit": False,
        "cache_saved_usd": Decimal(0),
        "latency_ms": 12.5,
        "error_class": None,
        "error_message": None,
        "sample_group": None,
        "details": None,
    }
    return tuple(values[column] for column in COLUMNS)


async def count(dsn: str) -> int:
    return (await fetch(dsn, "SELECT count(*) AS n FROM samples"))[0]["n"]


def write_count() -> float:
    return next(
        s.value
        for metric in metrics.STORE_WRITE_DURATION.collect()
        for s in metric.samples
        if s.name.endswith("_count")
    )


async def has_rows(dsn: str, n: int) -> bool:
    return await count(dsn) >= n


async def done_at_least(summary: ShardSummary, n: int) -> bool:
    return summary.completed >= n


async def opened_store(dsn: str, **writer: Any) -> SampleStore:
    store = SampleStore(StoreSettings.from_uri(dsn), IDENTITY, WriterSettings(**writer))
    await store.open(evaluation("http://127.0.0.1:1/v1", 1), 0, 1, [])
    return store


async def test_a_batch_is_written_at_n_rows_or_within_about_a_second(
    server: PostgresServer,
) -> None:
    dsn = await create_database(server)
    store = await opened_store(dsn, batch_rows=50, flush_seconds=1.0)
    rows_before = metrics.STORE_ROWS._value.get()
    writes_before = write_count()
    buffered_before = metrics.STORE_BUFFERED._value.get()
    writer = asyncio.create_task(store.writer.run())
    try:
        store.writer.add(fake_row(0))
        lag = await eventually(lambda: has_rows(dsn, 1), "the lone row is written")
        assert 0.9 <= lag <= 1.6, f"a lone row was written {lag:.2f} s after it finished"

        for i in range(1, 51):
            store.writer.add(fake_row(i))
        lag = await eventually(lambda: has_rows(dsn, 51), "the full batch is written")
        assert lag < 0.5, "a full batch waits for nothing"
    finally:
        store.writer.finish()
        await writer
        await store.close()
    assert store.writer.written == 51 and store.writer.pending == 0
    assert metrics.STORE_ROWS._value.get() - rows_before == 51
    assert write_count() - writes_before == 2  # one batch of 1, one of 50
    assert metrics.STORE_BUFFERED._value.get() == buffered_before


async def test_a_batch_sent_again_adds_nothing(server: PostgresServer) -> None:
    dsn = await create_database(server)
    store = await opened_store(dsn)
    try:
        batch = [fake_row(i) for i in range(20)]
        assert await store.write_batch(batch) == 20
        # Its commit went through but the answer was lost: the writer sends it again whole.
        assert await store.write_batch(batch) == 0
        assert await store.write_batch([*batch, fake_row(20)]) == 1
    finally:
        await store.close()
    rows = await fetch(dsn, "SELECT sample_id FROM samples ORDER BY sample_id")
    assert [r["sample_id"] for r in rows] == list(range(21))


async def test_postgres_killed_and_restarted_mid_run_loses_and_duplicates_nothing(
    server: PostgresServer,
) -> None:
    n = 300
    async with ModelServer(faults=Faults(latency=0.05), wrong=["+ 3?"]) as model:
        clean = await run_shard(evaluation(model.base_url, n), 0, 1, None)
    assert 0 < clean.scores["exact_match"].sum < n  # some answers are wrong

    dsn = await create_database(server)
    flush_errors = metrics.STORE_FLUSH_ERRORS._value.get()
    store = SampleStore(StoreSettings.from_uri(dsn), IDENTITY)
    summary = ShardSummary()
    async with ModelServer(faults=Faults(latency=0.05), wrong=["+ 3?"]) as model:
        run = asyncio.create_task(
            run_shard(evaluation(model.base_url, n), 0, 1, None, store=store, summary=summary)
        )
        await eventually(lambda: done_at_least(summary, 120), "120 samples done")
        assert await count(dsn) > 0  # some batches made it before the store died
        await asyncio.to_thread(server.kill)
        killed_at = summary.completed
        await asyncio.sleep(1.5)
        assert summary.completed > killed_at, "the shard goes on while the store is down"
        await asyncio.to_thread(server.start)
        done = await asyncio.wait_for(run, 60)
        assert model.count == n
    assert done.state == "done"
    assert exact(done) == exact(clean)
    rows = await fetch(dsn, "SELECT sample_id, attempt, requests, scores FROM samples")
    assert len(rows) == n and {r["sample_id"] for r in rows} == set(range(n))
    assert {r["attempt"] for r in rows} == {1} and sum(r["requests"] for r in rows) == n
    correct = sum(1 for r in rows if r["scores"] == '{"numeric": 1.0, "exact_match": 1.0}')
    assert correct == clean.scores["exact_match"].sum
    assert metrics.STORE_FLUSH_ERRORS._value.get() > flush_errors


async def test_a_store_that_stays_down_stops_the_shard(server: PostgresServer) -> None:
    dsn = await create_database(server)
    store = SampleStore(
        StoreSettings.from_uri(dsn), IDENTITY, WriterSettings(unavailable_after_seconds=2)
    )
    summary = ShardSummary()
    async with ModelServer(faults=Faults(latency=0.05)) as model:
        run = asyncio.create_task(
            run_shard(evaluation(model.base_url, 1000), 0, 1, None, store=store, summary=summary)
        )
        await eventually(lambda: done_at_least(summary, 40), "40 samples done")
        await asyncio.to_thread(server.kill)
        killed = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            await asyncio.wait_for(run, 30)
        stopped_in = time.monotonic() - killed
        asked = model.count
    assert 2 <= stopped_in < 8, f"stopped {stopped_in:.1f} s after the store died"
    assert asked < 1000, "the asking stopped with the store"
    assert (summary.state, summary.reason) == ("error", "StoreUnavailable")
    message = summary.message or ""
    assert message == raised.value.message
    assert f"the store postgresql://postgres@127.0.0.1:{server.port}/" in message
    assert "(the bound is 2 s)" in message
    assert server.password not in message


async def test_a_store_unreachable_at_the_start_sends_no_request(server: PostgresServer) -> None:
    dsn = await create_database(server)
    server.stop()
    store = SampleStore(
        StoreSettings.from_uri(dsn), IDENTITY, WriterSettings(unavailable_after_seconds=1)
    )
    summary = ShardSummary()
    async with ModelServer() as model:
        with pytest.raises(StoreUnavailable):
            await run_shard(
                evaluation(model.base_url, 10), 0, 1, None, store=store, summary=summary
            )
        assert model.count == 0
    assert summary.reason == "StoreUnavailable"
    assert "while opening the run" in (summary.message or "")


async def test_refused_credentials_stop_the_shard_at_once(server: PostgresServer) -> None:
    dsn = await create_database(server)
    settings = StoreSettings.from_uri(dsn, password="not-the-password")
    store = SampleStore(settings, IDENTITY)  # the default bound: 120 s
    started = time.monotonic()
    with pytest.raises(PermanentError) as raised:
        await run_shard(evaluation("http://127.0.0.1:1/v1", 10), 0, 1, None, store=store)
    assert time.monotonic() - started < 10
    assert raised.value.reason == "StoreCredentialsRefused"
    assert "refused the credentials" in raised.value.message
    assert "not-the-password" not in raised.value.message
