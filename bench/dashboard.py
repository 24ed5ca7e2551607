"""`make bench-dashboard`: the results dashboard over a million stored samples.

    python bench/dashboard.py [--rows 1000000] [--seconds 10] [--concurrency 32]

A real PostgreSQL server (tests/support/servers.py) holds --rows sample rows of one suite
(models x tasks cells, several suite runs each; tests/support/results_seed.py, written by COPY
as shards write them) and the dashboard runs as its own process (`eval-runner dashboard`, the
read-only role, uvloop) with the per-client rate limit raised out of the way (the token bucket
still runs on every request). A load generator in this process (aiohttp, keep-alive
connections, one client address) measures every request's latency. Printed, in one run:

- leaderboard: the first answer (cold: every cell's newest run summarised from its rows), then
  requests/s and p50/p95/p99 under load (goal >= 1,000 requests/s with p95 < 200 ms), and the
  same with the answer cache off (--response-seconds 0: only the kept run summaries);
- per-sample paging: pages of 50 at random depths of random runs, with and without the
  wrong-only filter (goal p99 < 2 s);
- the suite's HTML page under load.

Exit code 1 when an answer is wrong (a leaderboard whose numbers are not the seeded ones, a
page that is not the rows asked for) or a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "api"), str(ROOT / "runner"), str(ROOT / "operator"), str(ROOT)]

from tests.support.dashboard_process import (  # noqa: E402
    READER,
    READER_PASSWORD,
    spawn_dashboard,
)
from tests.support.results_seed import seed_suite  # noqa: E402
from tests.support.servers import PostgresServer, postgres_server  # noqa: E402
from tests.support.store_db import create_database  # noqa: E402

from eval_api.store.migrate import migrate  # noqa: E402
from eval_api.store.reader import ensure_reader_role  # noqa: E402
from eval_runner.dashboard.queries import encode_cursor  # noqa: E402

SAMPLES_PER_RUN = 5000
SUITE_RUNS = 4
LEADERBOARD_RPS_GOAL, LEADERBOARD_P95_GOAL, PAGING_P99_GOAL = 1000.0, 0.200, 2.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def shape(rows: int) -> tuple[dict[str, int], list[str]]:
    """Models x tasks so that cells x SUITE_RUNS x SAMPLES_PER_RUN is about `rows`."""
    cells = max(1, round(rows / (SUITE_RUNS * SAMPLES_PER_RUN)))
    tasks = [f"task{t}" for t in range(min(5, cells))]
    n_models = max(1, cells // len(tasks))
    models = {f"model{m:02d}": 30 + (m * 37) % 65 for m in range(n_models)}
    return models, tasks


async def seed(dsn: str, rows: int) -> Any:
    models, tasks = shape(rows)
    samples = max(1, rows // (len(models) * len(tasks) * SUITE_RUNS))
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        started = time.perf_counter()
        seeded = await seed_suite(
            conn,
            models=models,
            tasks=tasks,
            suite_runs=SUITE_RUNS,
            samples=samples,
            errored_every=50,
        )
        await conn.execute("ANALYZE")
        total = await conn.fetchval("SELECT count(*) FROM samples")
        print(
            f"seeded {total:,} sample rows ({len(models)} models x {len(tasks)} tasks x "
            f"{SUITE_RUNS} runs x {samples} samples) in {time.perf_counter() - started:.1f} s"
        )
        await ensure_reader_role(conn, READER, READER_PASSWORD)
        return seeded
    finally:
        await conn.close()


def start_dashboard(pg: PostgresServer, dbname: str, *args: str) -> tuple[subprocess.Popen, str]:
    # The rate limit raised out of the way: the token bucket still runs on every request.
    process, port = spawn_dashboard(
        pg.port, dbname, "--rate", "1000000", "--burst", "1000000", *args
    )
    return process, f"http://127.0.0.1:{port}"


async def wait_up(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"{base}/healthz") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the dashboard did not start")


async def load(
    base: str, paths: Any, seconds: float, concurrency: int
) -> tuple[float, list[float], int]:
    """`concurrency` keep-alive clients asking paths() for `seconds`: (rps, latencies, errors)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.get(base + paths()) as answer:
                    await answer.read()
                    if answer.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies, errors


def report(name: str, rps: float, latencies: list[float], errors: int) -> dict[str, float]:
    figures = {
        "rps": rps,
        "p50": percentile(latencies, 0.50),
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
    }
    print(
        f"  {name:<44} {rps:8.0f} req/s   p50 {figures['p50'] * 1000:7.1f} ms   "
        f"p95 {figures['p95'] * 1000:7.1f} ms   p99 {figures['p99'] * 1000:7.1f} ms"
        + (f"   {errors} errors" if errors else "")
    )
    return figures


async def check_leaderboard(base: str, seeded: Any) -> float:
    """The first (cold) answer, checked against the seeded numbers; its time."""
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.get(f"{base}/api/v1/suites/team-a/nightly/leaderboard") as answer:
            board = await answer.json()
        cold = time.perf_counter() - started
    for task in board["tasks"]:
        for entry in task["entries"]:
            model = entry["model"]
            latest = seeded.latest(model, task["task"])
            expected = latest.right / (latest.samples - latest.errored)
            if entry["run"] != latest.run or abs(entry["score"] - expected) > 1e-6:
                raise SystemExit(f"wrong leaderboard entry {model}/{task['task']}: {entry}")
    return cold


async def main_async(args: argparse.Namespace) -> int:
    failed = False
    with postgres_server() as pg:
        dsn = await create_database(pg)
        seeded = await seed(dsn, args.rows)
        dbname = dsn.rsplit("/", 1)[1]
        runs = seeded.runs
        rng = random.Random(7)
        leaderboard = "/api/v1/suites/team-a/nightly/leaderboard"

        def page_path(wrong: bool) -> str:
            run = rng.choice(runs)
            after = rng.randrange(0, run.samples)
            cursor = encode_cursor(after)
            path = f"/api/v1/runs/{run.evaluation_uid}/{run.run}/samples?limit=50&cursor={cursor}"
            return path + ("&scorer=exact_match&wrong=true" if wrong else "")

        for label, extra in (
            ("answer cache on (2 s)", ()),
            ("answer cache off", ("--response-seconds", "0")),
        ):
            process, base = start_dashboard(pg, dbname, *extra)
            try:
                await wait_up(base)
                cold = await check_leaderboard(base, seeded)
                print(f"dashboard, {label}: first leaderboard answer (cold) {cold * 1000:.0f} ms")
                await load(base, lambda: leaderboard, 2, args.concurrency)  # warm-up
                figures = report(
                    "leaderboard",
                    *await load(base, lambda: leaderboard, args.seconds, args.concurrency),
                )
                if extra == ():
                    if (
                        figures["rps"] < LEADERBOARD_RPS_GOAL
                        or figures["p95"] > LEADERBOARD_P95_GOAL
                    ):
                        print("  ^ misses the goal (>= 1,000 req/s, p95 < 200 ms)")
                        failed = True
                    for wrong in (False, True):
                        name = "samples page of 50" + (" (wrong only)" if wrong else "")
                        paging = report(
                            name,
                            *await load(
                                base, lambda w=wrong: page_path(w), args.seconds, args.concurrency
                            ),
                        )
                        if paging["p99"] > PAGING_P99_GOAL:
                            print("  ^ misses the goal (p99 < 2 s)")
                            failed = True
                    report(
                        "suite page (HTML)",
                        *await load(
                            base, lambda: "/suites/team-a/nightly", args.seconds, args.concurrency
                        ),
                    )
            finally:
                process.terminate()
                process.wait(timeout=10)
    return 1 if failed and args.goals else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--goals",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="exit 1 when a goal is missed (--no-goals: only when an answer is wrong)",
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
