"""The response cache against a real Redis. Its contract: answers are reused within a run (a
retried shard is answered from the cache), every new run asks the model again, unless the spec
asks for reuse AcrossRuns (then a warm re-run asks nothing and reports what it saved); two
models behind one path-routed gateway never share answers; empty answers are never kept. A
Redis that dies, refuses the password or is out of memory never stops a run, is not retried
in a hot loop, and is reported without its password."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml
from aiohttp import web

from eval_api.shard import ShardSummary
from eval_api.v1alpha1 import Evaluation
from eval_runner import metrics
from eval_runner.cache import ResponseCache
from eval_runner.demo_server import arithmetic_answer, last_user_message, response_body
from eval_runner.pipeline import run_shard
from tests.integration.test_runner_cli import runner_env
from tests.support.model_server import Faults, ModelServer
from tests.support.ports import free_port
from tests.support.servers import PostgresServer, RedisServer, postgres_server, redis_server
from tests.support.store_db import create_database, eventually, fetch_now

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
N = 60
WRONG_PASSWORD = "cache-canary-3f9e1d-wrong"  # noqa: S105 - what the test refuses


def spec(base_url: str, n: int = N) -> dict[str, Any]:
    return {
        "model": {
            "name": "m",
            "baseURL": base_url,
            "maxConcurrency": 4,
            "parameters": {"maxTokens": 16, "temperature": "0"},
            "pricing": {"inputPerMillionUSD": "0.15", "outputPerMillionUSD": "0.60"},
        },
        "dataset": {
            "inline": [{"input": f"What is {i} * 3?", "target": str(3 * i)} for i in range(n)]
        },
        "task": {"scorers": [{"type": "exact_match"}, {"type": "numeric"}]},
    }


def write_manifest(path: Path, base_url: str, **extra: Any) -> Path:
    manifest = {
        "apiVersion": "evals.io/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": "cached", "namespace": "team"},
        "spec": {**spec(base_url), **extra},
    }
    path.write_text(yaml.safe_dump(manifest))
    return path


def local_run(manifest: Path, *flags: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, "-m", "eval_runner", "run", str(manifest), "--output", "json", *flags],
        capture_output=True,
        text=True,
        env=runner_env(),
        cwd=ROOT,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr


@pytest.fixture
def cache_server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@pytest.fixture(scope="module")
def store_server() -> Iterator[PostgresServer]:
    with postgres_server() as running:
        yield running


ACROSS_RUNS = {"execution": {"cache": {"reuse": "AcrossRuns"}}}


def test_a_rerun_asks_the_model_again_by_default(
    cache_server: RedisServer, store_server: PostgresServer, tmp_path: Path
) -> None:
    """The model redeployed under the same URL and name between two runs: the second run
    measures the new model, not the first run's answers."""
    dsn = asyncio.run(create_database(store_server))
    with ModelServer(faults=Faults(latency=0.02)).in_thread() as model:
        manifest = write_manifest(tmp_path / "e.yaml", model.base_url)
        flags = ("--cache", cache_server.url(), "--store", dsn)
        code, first, err = local_run(manifest, *flags)
        assert code == 0, err
        model.wrong = ["What is 1"]  # redeployed: now wrong on 11 of the 60 (1, 10-19)
        code, second, err = local_run(manifest, *flags)
        assert code == 0, err
        assert model.count == 2 * N, "the re-run asked the model again"
    assert first["results"][0]["value"] == 1.0
    assert second["results"][0]["value"] == pytest.approx((N - 11) / N)
    assert second["usage"]["cacheHits"] == 0 and second["usage"]["requests"] == N


async def test_a_retried_shard_is_answered_from_its_runs_cache(cache_server: RedisServer) -> None:
    """A pod retried by the Job (the same run) gets the answers its earlier attempt was given
    (those not yet stored when it died, here all of them: no store); a re-run does not."""
    async with ModelServer() as model:
        for run in ("uid/run-1", "uid/run-1", "uid/run-2"):
            cache = ResponseCache.from_url(cache_server.url(), run=run)
            summary = await run_cached(model.base_url, cache, ShardSummary())
            assert summary.completed == 200
        assert model.count == 2 * 200, "the retry sent nothing, the re-run all"
    assert summary.usage.cache_hits == 0


def test_across_runs_a_warm_rerun_asks_the_model_nothing_and_reports_what_it_saved(
    cache_server: RedisServer, store_server: PostgresServer, tmp_path: Path
) -> None:
    dsn = asyncio.run(create_database(store_server))
    with ModelServer(wrong=["What is 7 * 3?"], faults=Faults(latency=0.02)).in_thread() as model:
        manifest = write_manifest(tmp_path / "e.yaml", model.base_url, **ACROSS_RUNS)
        flags = ("--cache", cache_server.url(), "--store", dsn)
        code, cold, err = local_run(manifest, *flags)
        assert code == 0, err
        assert model.count == N
        code, warm, err = local_run(manifest, *flags)
        assert code == 0, err
        assert model.count == N, "the warm run sent nothing"
    assert warm["results"] == cold["results"] and warm["progress"] == cold["progress"]
    assert cold["results"][0]["value"] == pytest.approx((N - 1) / N)  # one wrong answer
    assert (cold["usage"]["cacheHits"], cold["usage"]["requests"]) == (0, N)
    assert Decimal(cold["usage"]["costUSD"]) > 0
    usage = warm["usage"]
    assert (usage["cacheHits"], usage["requests"], usage["costUSD"]) == (N, 0, "0")
    assert usage["cacheSavedUSD"] == cold["usage"]["costUSD"]
    assert "cacheUnavailable" not in warm
    # Each run is its own run in the store; the warm one's rows say they came from the cache.
    rows = fetch_now(
        dsn,
        "SELECT run, count(*) FILTER (WHERE cache_hit) AS hits, sum(cost_usd) AS cost, "
        "sum(cache_saved_usd) AS saved, sum(requests) AS requests FROM samples GROUP BY run",
    )
    by_run = {r["run"]: r for r in rows}
    warm_row, cold_row = by_run[warm["store"]["run"]], by_run[cold["store"]["run"]]
    assert (warm_row["hits"], warm_row["cost"], warm_row["requests"]) == (N, 0, 0)
    assert warm_row["saved"] == cold_row["cost"] == Decimal(cold["usage"]["costUSD"])


async def run_cached(
    base_url: str, cache: ResponseCache, summary: ShardSummary, n: int = 200, **extra: Any
) -> ShardSummary:
    evaluation = Evaluation.model_validate(
        {
            "metadata": {"name": "cached", "namespace": "team"},
            "spec": {**spec(base_url, n), **extra},
        }
    )
    return await run_shard(evaluation, 0, 1, None, cache=cache, summary=summary)


class Gateway:
    """One host, two models routed by path, as an API gateway does: /good/v1 answers right,
    /bad/v1 answers 0 to everything."""

    def __init__(self) -> None:
        self.port = free_port()
        self.asked = {"good": 0, "bad": 0}
        self._runner: web.AppRunner | None = None

    def base_url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.port}/{route}/v1"

    async def _chat(self, request: web.Request) -> web.Response:
        route = request.match_info["route"]
        self.asked[route] += 1
        body = await request.json()
        question = last_user_message(body)
        answer = (arithmetic_answer(question) or "") if route == "good" else "0"
        return web.json_response(response_body("openai", body["model"], answer, 10))

    async def __aenter__(self) -> Gateway:
        app = web.Application()
        app.router.add_post("/{route}/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_two_models_behind_one_gateway_share_no_answers(cache_server: RedisServer) -> None:
    async with Gateway() as gateway:
        for route in ("good", "bad"):
            cache = ResponseCache.from_url(cache_server.url(), run="uid/run-1")
            summary = await run_cached(gateway.base_url(route), cache, ShardSummary(), 20)
            assert summary.usage.cache_hits == 0, route
            assert summary.scores["exact_match"].sum == (20 if route == "good" else 1)
    assert gateway.asked == {"good": 20, "bad": 20}


async def test_empty_answers_are_never_cached(cache_server: RedisServer) -> None:
    async with ModelServer(answers={"What is 5 * 3?": ""}) as model:
        for _ in range(2):
            cache = ResponseCache.from_url(cache_server.url(), run="uid/run-1")
            summary = await run_cached(model.base_url, cache, ShardSummary(), 10, **ACROSS_RUNS)
        assert model.count == 10 + 1, "the empty answer was asked again"
    assert summary.usage.cache_hits == 9


async def test_a_warm_shard_in_process_counts_hits_and_misses(cache_server: RedisServer) -> None:
    def lookups(result: str) -> float:
        return metrics.CACHE_LOOKUPS.labels(result)._value.get()

    hits, misses = lookups("hit"), lookups("miss")
    async with ModelServer() as model:
        cold = await run_cached(
            model.base_url, ResponseCache.from_url(cache_server.url(), run="uid/r"), ShardSummary()
        )
        assert (lookups("hit") - hits, lookups("miss") - misses) == (0, 200)
        warm = await run_cached(
            model.base_url, ResponseCache.from_url(cache_server.url(), run="uid/r"), ShardSummary()
        )
        assert model.count == 200
    assert (lookups("hit") - hits, lookups("miss") - misses) == (200, 200)
    assert warm.scores == cold.scores and warm.usage.cache_hits == 200
    assert warm.usage.cache_saved_usd == cold.usage.cost_usd != "0"


def errors() -> float:
    return sum(metrics.CACHE_ERRORS.labels(op)._value.get() for op in ("get", "set"))


async def test_redis_killed_mid_run(cache_server: RedisServer) -> None:
    summary = ShardSummary()
    errors_before = errors()
    skipped_before = metrics.CACHE_LOOKUPS.labels("skipped")._value.get()
    async with ModelServer(faults=Faults(latency=0.02)) as model:
        cache = ResponseCache.from_url(cache_server.url(), run="uid/r")
        run = asyncio.create_task(run_cached(model.base_url, cache, summary))

        async def fifty_done() -> bool:
            return summary.completed >= 50

        await eventually(fifty_done, "50 samples done")
        await asyncio.to_thread(cache_server.kill)
        done = await asyncio.wait_for(run, 60)
        assert model.count == 200  # every sample asked: nothing was cached before
    assert done.state == "done" and done.completed == 200
    message = done.cache_unavailable or ""
    assert message.startswith(f"the response cache redis://127.0.0.1:{cache_server.port}/0 was")
    assert "ConnectionError" in message and "went on without it" in message
    assert cache_server.password not in message
    # No hot loop: a few batches failed together, then the cache was left alone.
    assert 1 <= errors() - errors_before <= 8
    assert metrics.CACHE_LOOKUPS.labels("skipped")._value.get() - skipped_before > 100


async def test_redis_out_of_memory(cache_server: RedisServer) -> None:
    admin = aioredis.Redis.from_url(cache_server.url())
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", "1")
    summary = ShardSummary()
    try:
        async with ModelServer() as model:
            done = await run_cached(
                model.base_url, ResponseCache.from_url(cache_server.url(), run="uid/r"), summary
            )
            assert model.count == 200
        assert done.state == "done" and done.completed == 200
        message = done.cache_unavailable or ""
        assert "OutOfMemoryError" in message and "used memory > 'maxmemory'" in message
        assert await admin.dbsize() == 0
    finally:
        await admin.aclose()


def test_a_refused_password_is_reported_without_it(
    cache_server: RedisServer, tmp_path: Path
) -> None:
    async def connections() -> int:
        admin = aioredis.Redis.from_url(cache_server.url())
        try:
            return int((await admin.info("stats"))["total_connections_received"])
        finally:
            await admin.aclose()

    before = asyncio.run(connections())
    with ModelServer().in_thread() as model:
        manifest = write_manifest(tmp_path / "e.yaml", model.base_url)
        code, report, err = local_run(
            manifest, "--cache", cache_server.url(password=WRONG_PASSWORD)
        )
        assert model.count == N
    assert code == 0, err
    assert report["progress"]["completed"] == N
    message = report["cacheUnavailable"]
    assert "AuthenticationError" in message or "invalid username-password" in message
    assert f"warning: {message}" in err
    # One refused connection, then the cache was left alone for the rest of the run (the
    # admin connections of this test are the other two).
    assert asyncio.run(connections()) - before <= 4
    for text in (json.dumps(report), err):
        assert WRONG_PASSWORD not in text and WRONG_PASSWORD[:12] not in text
