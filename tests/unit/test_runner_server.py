"""The pod's progress server."""

from __future__ import annotations

import asyncio

import httpx

from eval_api.shard import ShardSummary
from eval_runner.metrics import SAMPLES
from eval_runner.server import ProgressServer


async def test_serves_the_live_summary_health_and_metrics() -> None:
    summary = ShardSummary(shard=1, shards=2, total=10)
    SAMPLES.labels("scored").inc(0)  # make sure the series exists
    async with ProgressServer(summary, host="127.0.0.1", port=0) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base) as http:
            first = ShardSummary.model_validate((await http.get("/progress")).json())
            summary.completed = 4
            second = ShardSummary.model_validate((await http.get("/progress?x=1")).json())
            health = await http.get("/healthz")
            metrics = await http.get("/metrics")
            missing = await http.get("/nope")
            wrong_method = await http.post("/progress")
    assert (first.shard, first.shards, first.state, first.completed) == (1, 2, "running", 0)
    assert second.completed == 4
    assert health.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'eval_runner_samples_total{result="scored"}' in metrics.text
    assert (missing.status_code, wrong_method.status_code) == (404, 405)


async def test_a_silent_client_does_not_block_others() -> None:
    async with ProgressServer(ShardSummary(), host="127.0.0.1", port=0) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)  # says nothing
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{server.port}/healthz", timeout=2)
        assert response.text == "ok\n"
        writer.close()
