"""The model client: request mapping per provider, response parsing, retry classification.

Parsing and classification use httpx.MockTransport; talking to a real server is covered by the
integration tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from eval_operator.api.v1alpha1 import ModelSpec
from eval_runner.client import (
    HttpModelClient,
    RequestFailed,
    RetryPolicy,
    anthropic_request,
    openai_request,
)
from eval_runner.prompt import Message

MESSAGES: list[Message] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "1 + 1"},
    {"role": "assistant", "content": "2"},
    {"role": "user", "content": "2 + 2"},
]
PARAMETERS = {"temperature": "0.5", "topP": "0.9", "maxTokens": 64, "stop": ["\n"], "seed": 7}
OPENAI_OK = {
    "choices": [{"message": {"content": "4"}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1},
}
NO_WAIT = RetryPolicy(attempts=3, base_delay=0.0)
KEY = "sk-test-secret"


def model(**fields: Any) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", **fields})


def test_openai_request() -> None:
    request = openai_request(
        model(baseURL="http://vllm:8000/v1/", parameters=PARAMETERS), "sk-1", MESSAGES
    )
    assert request.url == "http://vllm:8000/v1/chat/completions"
    assert request.headers == {"Authorization": "Bearer sk-1"}
    assert request.body == {
        "model": "m",
        "messages": MESSAGES,
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["\n"],
        "seed": 7,
    }


def test_openai_defaults_send_no_parameters_and_no_key() -> None:
    request = openai_request(model(), None, MESSAGES)
    assert request.url == "https://api.openai.com/v1/chat/completions"
    assert request.headers == {}
    assert request.body == {"model": "m", "messages": MESSAGES}


def test_anthropic_request() -> None:
    request = anthropic_request(model(provider="anthropic", parameters=PARAMETERS), "ak", MESSAGES)
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert request.headers == {"x-api-key": "ak", "anthropic-version": "2023-06-01"}
    assert request.body == {
        "model": "m",
        "system": "Be brief.",
        "messages": MESSAGES[1:],
        "max_tokens": 64,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["\n"],
    }


def test_anthropic_defaults_max_tokens_and_omits_an_absent_system() -> None:
    request = anthropic_request(model(provider="anthropic"), None, MESSAGES[1:])
    assert request.body == {"model": "m", "messages": MESSAGES[1:], "max_tokens": 1024}
    assert "x-api-key" not in request.headers


def client_for(
    handler: Callable[[httpx.Request], httpx.Response], **fields: Any
) -> tuple[HttpModelClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(record))
    return HttpModelClient(model(baseURL="http://model/v1", **fields), KEY, http, NO_WAIT), seen


async def test_parses_openai_and_anthropic_answers() -> None:
    openai, _ = client_for(lambda r: httpx.Response(200, json=OPENAI_OK))
    anthropic_body = {
        "content": [{"type": "text", "text": "4"}, {"type": "text", "text": "!"}],
        "usage": {"input_tokens": 9, "output_tokens": 2},
    }
    anthropic, _ = client_for(
        lambda r: httpx.Response(200, json=anthropic_body), provider="anthropic"
    )
    first = await openai.complete(MESSAGES)
    second = await anthropic.complete(MESSAGES)
    assert (first.text, first.input_tokens, first.output_tokens, first.attempts) == ("4", 9, 1, 1)
    assert (second.text, second.input_tokens, second.output_tokens) == ("4!", 9, 2)


async def test_missing_usage_counts_zero_tokens() -> None:
    client, _ = client_for(
        lambda r: httpx.Response(200, json={"choices": [{"message": {"content": None}}]})
    )
    completion = await client.complete(MESSAGES)
    assert (completion.text, completion.input_tokens, completion.output_tokens) == ("", 0, 0)


def answers(*responses: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler


async def test_transient_failures_are_retried_until_success() -> None:
    client, seen = client_for(
        answers(
            httpx.Response(429, headers={"Retry-After": "0"}),
            httpx.Response(503),
            httpx.Response(200, json=OPENAI_OK),
        )
    )
    completion = await client.complete(MESSAGES)
    assert completion.text == "4" and completion.attempts == 3
    assert len(seen) == 3


@pytest.mark.parametrize(
    ("failure", "error_class", "attempts"),
    [
        (httpx.Response(429), "http_429", 3),
        (httpx.Response(500, text="boom"), "http_500", 3),
        (httpx.Response(408), "http_408", 3),
        (httpx.ReadTimeout("slow"), "timeout", 3),
        (httpx.ConnectError("refused"), "connection", 3),
        (httpx.Response(400, json={"error": "bad"}), "http_400", 1),
        (httpx.Response(401), "http_401", 1),
        (httpx.Response(404), "http_404", 1),
        (httpx.Response(200, text="not json"), "bad_response", 1),
        (httpx.Response(200, json={"choices": []}), "bad_response", 1),
    ],
)
async def test_failures_are_classified(
    failure: httpx.Response | Exception, error_class: str, attempts: int
) -> None:
    client, seen = client_for(answers(failure))
    with pytest.raises(RequestFailed) as caught:
        await client.complete(MESSAGES)
    assert caught.value.error_class == error_class
    assert caught.value.attempts == attempts == len(seen)


async def test_the_key_is_sent_only_in_its_header() -> None:
    client, seen = client_for(answers(httpx.Response(401, text="no")))
    with pytest.raises(RequestFailed) as caught:
        await client.complete(MESSAGES)
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert KEY.encode() not in seen[0].content
    assert KEY not in str(caught.value)


def test_retry_delay_honours_retry_after_and_backs_off_with_jitter() -> None:
    policy = RetryPolicy(attempts=5, base_delay=1.0, max_delay=8.0)
    assert policy.delay(1, retry_after=2.5) == 2.5
    assert policy.delay(1, retry_after=100.0) == 8.0  # capped
    for attempt, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0)]:
        delays = [policy.delay(attempt, None) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1
