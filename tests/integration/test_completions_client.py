"""The runner's completions client against the deterministic completions server, held to what
lm-eval got from the same server (tests/parity/golden.jsonl): the generated text of every
generate_until request and the log-likelihood and greediness of every multiple-choice one, with
the server's tokenizer (token ids sent, as lm-eval's remote tokenizer does) and without it
(text sent, text offsets); and the chat client, asked the messages lm-eval's
local-chat-completions sent, gets the answers it got. An endpoint that gives no prompt
log-probabilities stops the shard with LogprobsUnsupported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from eval_api.shard import ShardUsage
from eval_api.v1alpha1.model import EndpointSpec
from eval_runner.client import EndpointFailed, HttpModelClient
from eval_runner.retry import RetryPolicy
from eval_runner.transport import open_transport
from tests.support.completions_server import CompletionsServer

pytestmark = pytest.mark.integration
GOLDEN = Path(__file__).resolve().parents[1] / "parity" / "golden.jsonl"
_, *ROWS = [json.loads(line) for line in GOLDEN.read_text().splitlines()]


def endpoint(base_url: str, **fields: Any) -> EndpointSpec:
    return EndpointSpec.model_validate({"name": "parity", "baseURL": base_url, **fields})


async def client_of(base_url: str, transport: Any, **fields: Any) -> HttpModelClient:
    return HttpModelClient(
        endpoint(base_url, **fields),
        None,
        transport,
        usage=ShardUsage(),
        retry=RetryPolicy(max_errors=1),
    )


def first_of_each_doc(api: str) -> list[dict[str, Any]]:
    """One row per task and doc (a task's other filters repeat the same requests)."""
    seen: set[tuple[str, int]] = set()
    found = []
    for row in ROWS:
        key = (row["task"], row["doc_id"])
        if row["api"] == api and key not in seen:
            seen.add(key)
            found.append(row)
    return found


@pytest.mark.parametrize("tokenizer", [True, False], ids=["token-ids", "text-offsets"])
async def test_the_same_answers_and_likelihoods_lm_eval_got(tokenizer: bool) -> None:
    async with CompletionsServer(tokenizer=tokenizer) as server, open_transport() as transport:
        client = await client_of(server.base_url, transport)
        generated = likelihoods = 0
        for row in first_of_each_doc("Completions"):
            for (context, second), response in zip(row["arguments"], row["resps"], strict=True):
                if isinstance(second, dict):  # generate_until
                    answer = await client.complete_prompt(
                        context, stop=second["until"], max_tokens=second.get("max_gen_toks", 256)
                    )
                    assert answer.text == response[0], (row["task"], row["doc_id"])
                    generated += 1
                else:
                    found = (await client.loglikelihood(context, second)).likelihood
                    expected, greedy = response[0]
                    assert found.loglikelihood == float(expected), (row["task"], row["doc_id"])
                    assert str(found.greedy) == greedy
                    likelihoods += 1
        assert (generated, likelihoods) == (30 + 25, 25 * 4 + 25 * 4 + 30 * 2)
        sent = [r for r in server.requests if r.get("echo")]
        assert all(isinstance(r["prompt"], list) == tokenizer for r in sent)


async def test_the_chat_client_gets_the_answers_lm_eval_got() -> None:
    async with CompletionsServer() as server, open_transport() as transport:
        asked = 0
        for row in first_of_each_doc("ChatCompletions"):
            ((messages, kwargs),) = row["arguments"]
            parameters = {
                "temperature": "0",
                "maxTokens": kwargs.get("max_gen_toks", 256),
                "stop": kwargs["until"][:4],  # as lm-eval sends them
            }
            client = await client_of(server.base_url, transport, parameters=parameters)
            answer = await client.complete(messages)
            assert answer.text == row["resps"][0][0], (row["task"], row["doc_id"])
            asked += 1
        assert asked == 30 + 25
        assert server.requests[-1]["messages"] == messages


async def test_an_endpoint_without_prompt_logprobs_stops_with_logprobs_unsupported() -> None:
    async def completions(request: web.Request) -> web.Response:
        # llama.cpp's server: text, and no echoed prompt log-probabilities.
        return web.json_response({"choices": [{"index": 0, "text": " A", "logprobs": None}]})

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with open_transport() as transport:
            client = await client_of(f"http://{host}:{port}/v1", transport)
            with pytest.raises(EndpointFailed) as refused:
                await client.loglikelihood("Question: which?\nAnswer:", " A")
        assert refused.value.reason == "LogprobsUnsupported"
        assert "/v1/completions" in refused.value.message
    finally:
        await runner.cleanup()
