"""The pod's progress server."""

from __future__ import annotations

import asyncio

import httpx

from eval_api.shard import ShardSummary
from eval_runner.metrics import SAMPLES
from eval_runner.server import ProgressServer
from eval_runner.stop import StopSignal


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


async def test_stop_is_taken_from_the_token_holder_only() -> None:
    stop = StopSignal()
    server = ProgressServer(
        ShardSummary(), host="127.0.0.1", port=0, stop=stop, stop_token="run-token-1"
    )
    async with server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        anonymous = await http.post("/stop", json={"reason": "VerdictKnown"})
        wrong = await http.post(
            "/stop", json={"reason": "VerdictKnown"}, headers={"Authorization": "Bearer nope"}
        )
        read = await http.get("/stop", headers={"Authorization": "Bearer run-token-1"})
        assert stop.reason is None
        bad_body = await http.post(
            "/stop", content=b"[1]", headers={"Authorization": "Bearer run-token-1"}
        )
        taken = await http.post(
            "/stop",
            json={"reason": "VerdictKnown"},
            headers={"Authorization": "Bearer run-token-1"},
        )
        again = await http.post(
            "/stop", json={"reason": "Other"}, headers={"Authorization": "Bearer run-token-1"}
        )
        progress = ShardSummary.model_validate((await http.get("/progress")).json())
    assert [r.status_code for r in (anonymous, wrong, read, bad_body)] == [401, 403, 405, 400]
    assert (taken.status_code, again.status_code) == (202, 202)
    assert stop.reason == "VerdictKnown"  # the first word stands
    assert progress.stopped == "VerdictKnown"  # and /progress says so at once


async def test_without_a_token_there_is_no_stop() -> None:
    stop = StopSignal()
    async with ProgressServer(ShardSummary(), host="127.0.0.1", port=0, stop=stop) as server:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"http://127.0.0.1:{server.port}/stop", headers={"Authorization": "Bearer x"}
            )
    assert response.status_code == 405 and stop.reason is None


async def test_odd_requests_get_an_answer_or_a_closed_connection() -> None:
    stop = StopSignal()
    server = ProgressServer(ShardSummary(), host="127.0.0.1", port=0, stop=stop, stop_token="t")
    async with server:

        async def raw(request: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request)
            await writer.drain()
            answer = await reader.read()
            writer.close()
            return answer

        odd_length = await raw(
            "POST /stop HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Length: ²\r\n\r\n".encode()
        )
        huge_header = await raw(b"GET /progress HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        get_with_body = await raw(b"GET /healthz HTTP/1.1\r\nContent-Length: 5000\r\n\r\n")
    assert odd_length.startswith(b"HTTP/1.1 400")
    assert huge_header == b""  # closed: the line is longer than a header may be
    assert get_with_body.startswith(b"HTTP/1.1 200")
    assert stop.reason is None
