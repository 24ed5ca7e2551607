"""`make bench` (its second part): the per-sample store and the response cache, measured.

    python bench/store.py [--rows 100000] [--batch-rows 500,2000,5000,10000] [--samples 5000]

PostgreSQL and Redis are real servers on loopback ports (tests/support/servers.py; `make
services` installs them), the model server a process of its own with a fixed latency, as in
bench/run.py; the runner's side runs in this process. Printed, in one run:

- store write throughput: --rows finished-sample rows (as the pipeline makes them: hashes,
  scores, usage) written by a shard's writer at each batch size (COPY into the session's
  staging table, then INSERT ... ON CONFLICT DO NOTHING, one transaction a batch), rows/s
  (goal >= 50,000 rows/s), and what building a row costs on the hot path;
- resume overhead: a clean run of --samples samples with the store, then the same run with
  90% of its samples already stored: the time before its first request (reading and checking
  the stored rows), its wall, and the ratio to the clean run (0.10 would be free);
- warm cache: a run with the cache, cold then warm (--cache-samples, --cache-latency: a model
  that answers in about half a second): the walls, their ratio (goal >= 50x), and the model
  requests of the warm run (goal 0).

Exit code 1 when a run's results differ from what they must be (rows lost, scores changed, a
warm run that asked the model).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "api"), str(ROOT / "runner"), str(ROOT / "operator"), str(ROOT)]

from tests.support.servers import PostgresServer, RedisServer  # noqa: E402
from tests.support.store_db import create_database, fetch  # noqa: E402

from eval_api.shard import ShardSummary  # noqa: E402
from eval_api.store import StoreSettings  # noqa: E402
from eval_api.v1alpha1 import Evaluation  # noqa: E402
from eval_runner.cache import ResponseCache  # noqa: E402
from eval_runner.client import Completion, Spend  # noqa: E402
from eval_runner.dataset import Sample  # noqa: E402
from eval_runner.pipeline import run_shard  # noqa: E402
from eval_runner.results import SampleResult  # noqa: E402
from eval_runner.runtime import run as run_async  # noqa: E402
from eval_runner.store import (  # noqa: E402
    RunIdentity,
    SampleStore,
    WriterSettings,
    sample_row,
)

sys.path.insert(0, str(ROOT / "bench"))
from run import Server, write_dataset  # noqa: E402

UID = "0b9a2c1e-0000-4000-8000-00000000be11"
MODEL = "bench-model"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/store.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows for the write test")
    parser.add_argument(
        "--batch-rows", default="500,2000,5000,10000", help="batch sizes to compare"
    )
    parser.add_argument("--samples", "-n", type=int, default=5000, help="N of the resume runs")
    parser.add_argument("--latency", type=float, default=0.05, help="L of the resume runs, s")
    parser.add_argument("--concurrency", "-c", type=int, default=64, help="C (maxConcurrency)")
    parser.add_argument("--cache-samples", type=int, default=2000, help="N of the cache runs")
    parser.add_argument("--cache-latency", type=float, default=0.5, help="L of the cache runs, s")
    return parser.parse_args(argv)


def evaluation(base_url: str, concurrency: int) -> Evaluation:
    return Evaluation.model_validate(
        {
            "metadata": {"name": "bench", "namespace": "bench"},
            "spec": {
                "model": {
                    "name": MODEL,
                    "baseURL": base_url,
                    "maxConcurrency": concurrency,
                    "timeoutSeconds": 10,
                    "parameters": {"temperature": "0", "maxTokens": 16},
                    "pricing": {"inputPerMillionUSD": "0.15", "outputPerMillionUSD": "0.60"},
                },
                "dataset": {"configMapRef": {"name": "bench", "key": "bench.jsonl"}},
                "task": {
                    "systemPrompt": "You are a careful calculator.",
                    "promptTemplate": "Answer with only the number. {{ input }}",
                    "scorers": [{"type": "exact_match"}, {"type": "numeric"}],
                },
            },
        }
    )


# --- write throughput ---------------------------------------------------------------------


def bench_row(i: int, identity: RunIdentity) -> tuple[Any, ...]:
    """The row of a sample as the pipeline makes it."""
    a, b = 17 * i % 1000, 31 * i % 997
    question = f"What is {a} + {b}?"
    sample = Sample(i, question, str(a + b), {"input": question, "target": str(a + b)})
    messages: Any = [
        {"role": "system", "content": "You are a careful calculator."},
        {"role": "user", "content": f"Answer with only the number. {question}"},
    ]
    completion = Completion(str(a + b), 24, 2, False, 0.051, Spend(1, 0, Decimal("0.0000048")))
    result = SampleResult(sample, messages, completion, {"exact_match": 1.0, "numeric": 1.0})
    return sample_row(result, identity, 0, 1, None)


async def write_throughput(server: PostgresServer, rows: int, batch: int) -> float:
    dsn = await create_database(server)
    identity = RunIdentity(UID, f"write-{batch}", "bench", "bench")
    store = SampleStore(StoreSettings.from_uri(dsn), identity, WriterSettings(batch_rows=batch))
    await store.open(evaluation("http://127.0.0.1:1/v1", 1), 0, 1, [])
    prepared = [bench_row(i, identity) for i in range(rows)]
    started = time.perf_counter()
    for row in prepared:
        store.writer.add(row)
    store.writer.finish()
    await store.writer.run()
    elapsed = time.perf_counter() - started
    await store.close()
    stored = (await fetch(dsn, "SELECT count(*) AS n FROM samples"))[0]["n"]
    if stored != rows:
        raise SystemExit(f"{stored} rows stored of {rows}")
    return rows / elapsed


def row_cost_us(rows: int) -> float:
    identity = RunIdentity(UID, "cost", "bench", "bench")
    started = time.perf_counter()
    for i in range(rows):
        bench_row(i, identity)
    return (time.perf_counter() - started) * 1e6 / rows


# --- runs -----------------------------------------------------------------------------------


async def timed_run(
    spec: Evaluation, dataset: Path, **kwargs: Any
) -> tuple[ShardSummary, float, float]:
    """A shard's summary, its wall and its start-up (call -> first request)."""
    ready: list[float] = []

    def progress(_: ShardSummary) -> None:
        if not ready:
            ready.append(time.perf_counter())

    started = time.perf_counter()
    summary = await run_shard(
        spec, 0, 1, None, dataset_file=dataset, on_progress=progress, **kwargs
    )
    return summary, time.perf_counter() - started, ready[0] - started


COPY_RUN = """
INSERT INTO runs (evaluation_uid, run, namespace, evaluation_name, suite, provider, model,
                  dataset_source, spec_hash, shards, scorers)
SELECT evaluation_uid, $2, namespace, evaluation_name, suite, provider, model, dataset_source,
       spec_hash, shards, scorers FROM runs WHERE run = $1
"""
COPY_90 = """
INSERT INTO samples SELECT evaluation_uid, $2, sample_id, shard, attempt, input_hash,
    prompt_hash, response, scores, requests, input_tokens, output_tokens, truncated, timed_out,
    cost_usd, cache_hit, cache_saved_usd, latency_ms, error_class, error_message, created_at
FROM samples WHERE run = $1 AND sample_id % 10 <> 0
"""


async def resume_overhead(args: argparse.Namespace, server: PostgresServer, dataset: Path) -> bool:
    dsn = await create_database(server)
    settings = StoreSettings.from_uri(dsn)
    model = Server(args.latency, [])
    try:
        spec = evaluation(f"http://127.0.0.1:{model.port}/v1", args.concurrency)
        clean_identity = RunIdentity(UID, "clean", "bench", "bench")
        clean, clean_wall, clean_ready = await timed_run(
            spec, dataset, store=SampleStore(settings, clean_identity)
        )
        asked = model.stats()["requests"]
        written = await fetch(dsn, "SELECT count(*) AS n FROM samples WHERE run = 'clean'")
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(COPY_RUN, "clean", "resumed")
            await conn.execute(COPY_90, "clean", "resumed")
        finally:
            await conn.close()
        resumed_identity = RunIdentity(UID, "resumed", "bench", "bench")
        resumed, wall, ready = await timed_run(
            spec, dataset, store=SampleStore(settings, resumed_identity)
        )
        asked_again = model.stats()["requests"] - asked
    finally:
        model.stop()
    n = args.samples
    stored = resumed.resumed.samples if resumed.resumed else 0
    print(
        f"resume overhead: N={n} L={args.latency * 1000:g} ms C={args.concurrency}, "
        f"{stored} of {n} samples already stored"
    )
    print(f"  clean run with the store: wall {clean_wall:.3f} s, start-up {clean_ready:.3f} s")
    print(
        f"  resumed run: wall {wall:.3f} s, start-up {ready:.3f} s "
        f"(+{(ready - clean_ready) * 1000:.0f} ms to read and check {stored} stored rows)"
    )
    print(f"  ratio resumed/clean wall: {wall / clean_wall:.3f} (0.10 would be free)")
    print(f"  model requests of the resumed run: {asked_again} (the {n - stored} not stored)")
    ok = (
        written[0]["n"] == n
        and asked_again == n - stored
        and resumed.scores == clean.scores
        and resumed.completed == clean.completed
    )
    print(f"  results identical to the clean run: {'yes' if ok else 'NO'}")
    return ok


BENCH_RUN = "bench/warm-cache"


async def warm_cache(args: argparse.Namespace, cache_server: RedisServer, dataset: Path) -> bool:
    model = Server(args.cache_latency, [])
    try:
        spec = evaluation(f"http://127.0.0.1:{model.port}/v1", args.concurrency)
        # The same run twice (a retried shard): answers are reused within a run by default.
        cold, cold_wall, _ = await timed_run(
            spec, dataset, cache=ResponseCache.from_url(cache_server.url(), run=BENCH_RUN)
        )
        asked = model.stats()["requests"]
        warm, warm_wall, warm_ready = await timed_run(
            spec, dataset, cache=ResponseCache.from_url(cache_server.url(), run=BENCH_RUN)
        )
        asked_warm = model.stats()["requests"] - asked
    finally:
        model.stop()
    n = args.cache_samples
    print(
        f"warm cache: N={n} L={args.cache_latency * 1000:g} ms C={args.concurrency}, the same "
        "run twice with the cache"
    )
    print(f"  cold: wall {cold_wall:.3f} s, {asked} model requests, cost ${cold.usage.cost_usd}")
    print(
        f"  warm: wall {warm_wall:.3f} s (start-up {warm_ready:.3f} s), {asked_warm} model "
        f"requests, {warm.usage.cache_hits} cache hits, cost ${warm.usage.cost_usd}, saved "
        f"${warm.usage.cache_saved_usd}"
    )
    print(f"  ratio cold/warm wall: {cold_wall / warm_wall:.1f}x")
    ok = (
        asked_warm == 0
        and warm.scores == cold.scores
        and warm.usage.cache_hits == n
        and Decimal(warm.usage.cache_saved_usd) == Decimal(cold.usage.cost_usd)
    )
    print(f"  scores identical, nothing asked, saving = the cold cost: {'yes' if ok else 'NO'}")
    return ok


async def main(args: argparse.Namespace) -> int:
    batches = [int(b) for b in args.batch_rows.split(",")]
    postgres, redis = PostgresServer(), RedisServer(maxmemory="512mb")
    try:
        print(f"store write throughput: {args.rows} rows into PostgreSQL on loopback")
        best = 0.0
        for batch in batches:
            rate = await write_throughput(postgres, args.rows, batch)
            best = max(best, rate)
            print(f"  batch {batch}: {rate:,.0f} rows/s")
        print(f"  best: {best:,.0f} rows/s (goal >= 50,000)")
        print(f"  building a row (hashes of record and prompt): {row_cost_us(5000):.1f} us")
        with tempfile.TemporaryDirectory(prefix="eval-bench-store-") as tmp:
            resume_data = Path(tmp) / "resume.jsonl"
            write_dataset(resume_data, args.samples)
            cache_data = Path(tmp) / "cache.jsonl"
            write_dataset(cache_data, args.cache_samples)
            ok = await resume_overhead(args, postgres, resume_data)
            ok = await warm_cache(args, redis, cache_data) and ok
    finally:
        postgres.close()
        redis.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_async(main(parse_args())))
