"""The model client: request mapping per provider, response parsing, retry classification,
usage and budget accounting, and the key's secrecy.

These use a scripted Transport; talking to a real server is covered by the integration tests.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from multidict import CIMultiDict

from eval_api.shard import ShardUsage
from eval_api.v1alpha1 import ModelSpec
from eval_runner.breaker import CLOSED, CircuitBreaker
from eval_runner.budget import Budget, BudgetExceeded
from eval_runner.client import (
    NEVER_ANSWERED_SECONDS,
    EndpointFailed,
    HttpModelClient,
    RequestFailed,
    anthropic_request,
    openai_request,
)
from eval_runner.prompt import Message
from eval_runner.retry import RetryPolicy
from eval_runner.secrets import SECRETS
from eval_runner.transport import ConnectFailed, HttpResponse, TransportError, TransportTimeout

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
NO_WAIT = RetryPolicy(max_errors=3, max_throttled=4, base_delay=0.0)
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


Answer = HttpResponse | Exception


def ok(payload: Any = OPENAI_OK) -> HttpResponse:
    return HttpResponse(200, json.dumps(payload).encode(), CIMultiDict())


def status(code: int, body: bytes = b"", retry_after: str | None = None) -> HttpResponse:
    headers = CIMultiDict({"Retry-After": retry_after} if retry_after is not None else {})
    return HttpResponse(code, body, headers)


class ScriptedTransport:
    """Answers with the scripted responses in order, repeating the last one."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, dict[str, str], bytes, float]] = []

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, timeout_seconds: float
    ) -> HttpResponse:
        self.sent.append((url, headers, body, timeout_seconds))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def client_for(
    *answers: Answer, budget: Budget | None = None, **fields: Any
) -> tuple[HttpModelClient, ScriptedTransport]:
    transport = ScriptedTransport(*answers)
    client = HttpModelClient(
        model(baseURL="http://model/v1", **fields),
        KEY,
        transport,
        usage=ShardUsage(),
        budget=budget,
        retry=NO_WAIT,
    )
    return client, transport


async def test_parses_answers_and_meters_usage_and_cost() -> None:
    pricing = {"inputPerMillionUSD": "1", "outputPerMillionUSD": "2"}
    openai, sent = client_for(ok(), pricing=pricing, timeoutSeconds=7)
    cached = {
        **OPENAI_OK,
        "usage": {**OPENAI_OK["usage"], "prompt_tokens_details": {"cached_tokens": 4}},
    }
    anthropic_body = {
        "content": [{"type": "text", "text": "4"}, {"type": "text", "text": "!"}],
        "usage": {"input_tokens": 9, "output_tokens": 2, "cache_read_input_tokens": 3},
    }
    anthropic, _ = client_for(ok(anthropic_body), provider="anthropic")
    first = await openai.complete(MESSAGES)
    second = await anthropic.complete(MESSAGES)
    assert (first.text, first.input_tokens, first.output_tokens) == ("4", 9, 1)
    # Anthropic reports cache reads apart from input_tokens: all of it is input.
    assert (second.text, second.input_tokens, second.output_tokens) == ("4!", 12, 2)
    assert sent.sent[0][3] == 7.0  # the endpoint's timeout, per request
    assert (openai.usage.requests, openai.usage.cost_usd, openai.usage.prompt_cache_tokens) == (
        1,
        "0.000011",
        0,
    )
    # The provider's prompt cache is counted in tokens, never as "cache hits" (that is the
    # EvalSuite's response cache).
    assert (anthropic.usage.prompt_cache_tokens, anthropic.usage.cache_hits) == (3, 0)
    openai_cached, _ = client_for(ok(cached))
    await openai_cached.complete(MESSAGES)
    assert (openai_cached.usage.prompt_cache_tokens, openai_cached.usage.cache_hits) == (4, 0)


async def test_missing_usage_counts_zero_tokens() -> None:
    client, _ = client_for(ok({"choices": [{"message": {"content": None}}]}))
    completion = await client.complete(MESSAGES)
    assert (completion.text, completion.input_tokens, completion.output_tokens) == ("", 0, 0)


async def test_transient_failures_are_retried_until_success() -> None:
    client, transport = client_for(
        status(429, retry_after="0"), status(503), TransportTimeout("slow"), ok()
    )
    completion = await client.complete(MESSAGES)
    assert completion.text == "4"
    assert len(transport.sent) == 4 and client.usage.requests == 4
    assert client.usage.input_tokens == 9  # only the answer is billed


@pytest.mark.parametrize(
    ("failure", "error_class", "attempts"),
    [
        (status(429), "http_429", 4),  # throttling has its own, larger budget
        (status(500, b"boom"), "http_500", 3),
        (status(503), "http_503", 3),
        (status(408), "http_408", 3),
        (status(409), "http_409", 3),
        (TransportTimeout("slow"), "timeout", 3),
        (TransportError("refused"), "connection", 3),
        (ok(None), "bad_response", 1),  # JSON, but not an answer
        (HttpResponse(200, b'{"choices": [{"mess', CIMultiDict()), "invalid_json", 3),  # cut
        (status(400, b'{"error": "bad"}'), "http_400", 1),
        (status(422), "http_422", 1),
        (ok({"choices": []}), "bad_response", 1),
    ],
)
async def test_failures_are_classified_and_only_transient_ones_retried(
    failure: Answer, error_class: str, attempts: int
) -> None:
    client, transport = client_for(failure)
    with pytest.raises(RequestFailed) as caught:
        await client.complete(MESSAGES)
    assert caught.value.error_class == error_class
    assert len(transport.sent) == attempts == client.usage.requests


async def test_the_key_is_sent_only_in_its_header_and_redacted_from_errors() -> None:
    SECRETS.add(KEY)  # as reading it from the environment does
    echo = f'{{"error": "bad", "headers": {{"authorization": "Bearer {KEY}"}}}}'.encode()
    client, transport = client_for(status(400, echo))
    with pytest.raises(RequestFailed) as caught:
        await client.complete(MESSAGES)
    url, headers, body, _ = transport.sent[0]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert KEY.encode() not in body and KEY not in url
    assert KEY not in str(caught.value) and "[redacted]" in str(caught.value)


@pytest.mark.parametrize(
    ("code", "reason", "words"),
    [
        (401, "AuthenticationFailed", "answered 401 Unauthorized: the API key was refused"),
        (403, "AuthenticationFailed", "answered 403 Forbidden: the API key was refused"),
        (404, "ModelNotFound", "answered 404 Not Found: no model 'm' there, or baseURL is wrong"),
    ],
)
async def test_a_refused_key_or_a_missing_model_stops_at_once(
    code: int, reason: str, words: str
) -> None:
    SECRETS.add(KEY)
    echo = f'{{"error": "invalid key {KEY}"}}'.encode()
    client, transport = client_for(status(code, echo))
    with pytest.raises(EndpointFailed) as caught:
        await client.complete(MESSAGES)
    assert caught.value.reason == reason and len(transport.sent) == 1  # never retried
    message = caught.value.message
    assert words in message and "POST http://model/v1/chat/completions" in message
    assert KEY not in message and "invalid key [redacted]" in message


async def test_throttling_cuts_the_concurrency_limit() -> None:
    client, _ = client_for(status(429, retry_after="0"), ok(), maxConcurrency=16)
    await client.complete(MESSAGES)
    assert client.limiter.limit == 8 and client.limiter.cuts == 1


async def test_max_requests_stops_before_sending() -> None:
    budget = Budget(max_requests=3)
    client, transport = client_for(status(500), budget=budget)
    with pytest.raises(RequestFailed):
        await client.complete(MESSAGES)  # 3 attempts: the whole share
    with pytest.raises(BudgetExceeded, match="all 3 requests"):
        await client.complete(MESSAGES)
    assert len(transport.sent) == 3 and budget.requests == 3


async def test_max_cost_reserves_the_worst_case_before_each_request() -> None:
    pricing = {"inputPerMillionUSD": "1000000", "outputPerMillionUSD": "1000000"}
    messages: list[Message] = [{"role": "user", "content": "2 + 2"}]
    # Worst case: 5 bytes + 8 per message + 16 per request input tokens, 10 output: $39.
    budget = Budget(max_cost=Decimal("80"))
    client, transport = client_for(
        ok(), budget=budget, pricing=pricing, parameters={"maxTokens": 10}
    )
    for _ in range(5):  # spent 0, 10, 20, 30, 40: each + 39 reserved stays within 80
        await client.complete(messages)
    with pytest.raises(BudgetExceeded, match=r"could cost up to \$39"):
        await client.complete(messages)  # 50 + 39 > 80: not sent
    assert len(transport.sent) == 5
    assert budget.spent == Decimal(50) <= budget.max_cost and budget.reserved == 0


async def test_an_open_breaker_sends_nothing_until_its_probe() -> None:
    now = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # time passes without waiting
        waits.append(seconds)
        now[0] += seconds

    breaker = CircuitBreaker(window=4, min_calls=2, open_seconds=5, clock=lambda: now[0])
    transport = ScriptedTransport(status(500), status(500), ok())
    client = HttpModelClient(
        model(baseURL="http://model/v1"),
        KEY,
        transport,
        retry=RetryPolicy(max_errors=4, base_delay=0.0),
        breaker=breaker,
        sleep=sleep,
    )
    # Two 500s open the breaker; the third attempt is refused without sending and waits for
    # the open period; the fourth is the half-open probe, and its success closes the breaker.
    completion = await client.complete(MESSAGES)
    assert completion.text == "4" and len(transport.sent) == 3
    assert 5.0 <= waits[2] <= 5.5  # the open period, plus at most 10% jitter
    assert breaker.state == CLOSED and breaker.opened == 1


async def test_breaker_refusals_use_none_of_a_samples_retries() -> None:
    """Two 500s open the breaker; while it is open the sample waits (nothing is sent, nothing
    is counted against it), and the half-open probe's success answers it: 2 of its 3 tries
    were used, not 3 plus every refusal."""
    now = [0.0]

    async def sleep(seconds: float) -> None:  # time passes without waiting
        now[0] += seconds

    breaker = CircuitBreaker(window=4, min_calls=2, open_seconds=5, clock=lambda: now[0])
    transport = ScriptedTransport(status(500), status(500), ok())
    client = HttpModelClient(
        model(baseURL="http://model/v1"),
        KEY,
        transport,
        retry=RetryPolicy(max_errors=3, base_delay=0.0),
        breaker=breaker,
        sleep=sleep,
    )
    completion = await client.complete(MESSAGES)
    assert completion.text == "4" and len(transport.sent) == 3
    assert now[0] >= 5.0  # it waited for the breaker's open period


def refusing_client(
    *answers: Answer,
    now: list[float],
    answered_before: bool = False,
    transport: ScriptedTransport | None = None,
    **fields: Any,
) -> tuple[HttpModelClient, ScriptedTransport]:
    """A client on a clock that only its sleeps move, with retries enough to outlast any
    bound: what stops it is the endpoint's reachability."""

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)  # let the other samples' requests run

    transport = transport or ScriptedTransport(*answers)
    client = HttpModelClient(
        model(**{"baseURL": "http://model/v1", **fields}),
        KEY,
        transport,
        retry=RetryPolicy(max_errors=1000, base_delay=1.0),
        breaker=CircuitBreaker(clock=lambda: now[0]),
        answered_before=answered_before,
        clock=lambda: now[0],
        sleep=sleep,
    )
    return client, transport


REFUSED = ConnectFailed("model:80", "connection refused")


async def test_an_endpoint_that_answered_then_refuses_connections_stops_after_its_bound() -> None:
    now = [0.0]
    client, transport = refusing_client(ok(), REFUSED, now=now, unreachableAfterSeconds=30)
    await client.complete(MESSAGES)  # it answered once: what follows is an outage
    with pytest.raises(EndpointFailed) as caught:
        await client.complete(MESSAGES)
    assert caught.value.reason == "EndpointUnreachable"
    assert caught.value.message == (
        "cannot connect to model:80: connection refused "
        "(model endpoint: no connection for 30s, unreachableAfterSeconds)"
    )
    assert 30 <= now[0] < 31  # stopped at the bound, not at the breaker's next probe
    assert len(transport.sent) < 40  # the open breaker held the requests back meanwhile


async def test_an_endpoint_that_never_answered_stops_after_the_short_bound() -> None:
    """Refused from the first request: a wrong baseURL, not an outage. The shard stops
    NEVER_ANSWERED_SECONDS after the first request, not unreachableAfterSeconds, and says
    where it tried (without the URL's password or query)."""
    now = [0.0]
    client, _ = refusing_client(REFUSED, now=now, baseURL="http://user:pw@model/v1?key=k")
    with pytest.raises(EndpointFailed) as caught:
        await client.complete(MESSAGES)
    assert caught.value.reason == "EndpointUnreachable"
    assert caught.value.message == (
        "cannot connect to model:80: connection refused (the model endpoint never answered: "
        f"no connection in the {NEVER_ANSWERED_SECONDS:g}s since the first request; "
        "check baseURL http://model/v1)"
    )
    assert NEVER_ANSWERED_SECONDS <= now[0] < NEVER_ANSWERED_SECONDS + 1


async def test_a_connect_that_timed_out_is_no_refusal_and_keeps_the_outage_bound() -> None:
    """A host that drops the SYNs may be a slow network or a firewall settling, not a wrong
    URL: the shard keeps unreachableAfterSeconds (the default 120 s), counted from the first
    request, and does not stop at NEVER_ANSWERED_SECONDS."""
    now = [0.0]

    class Blackhole(ScriptedTransport):
        async def post(
            self, url: str, headers: dict[str, str], body: bytes, timeout_seconds: float
        ) -> HttpResponse:
            self.sent.append((url, headers, body, timeout_seconds))
            now[0] += NEVER_ANSWERED_SECONDS  # the transport's connect bound
            raise ConnectFailed(
                "model:80", f"no connection within {NEVER_ANSWERED_SECONDS:g}s", timed_out=True
            )

    client, transport = refusing_client(now=now, transport=Blackhole(REFUSED))
    with pytest.raises(EndpointFailed) as caught:
        await client.complete(MESSAGES)
    assert "never answered: no connection in the 120s since the first request" in (
        caught.value.message
    )
    assert 120 <= now[0] < 140 and len(transport.sent) > 3


async def test_an_unreachable_bound_the_spec_sets_is_the_patience_from_the_start() -> None:
    """A model server deployed in the same sync as the Evaluation refuses connections until
    it has loaded: a user who set unreachableAfterSeconds asked to wait that long."""
    now = [0.0]
    client, _ = refusing_client(REFUSED, now=now, unreachableAfterSeconds=60)
    with pytest.raises(EndpointFailed) as caught:
        await client.complete(MESSAGES)
    assert "no connection in the 60s since the first request" in caught.value.message
    assert 60 <= now[0] < 61


async def test_a_smaller_unreachable_bound_wins_over_the_short_one() -> None:
    now = [0.0]
    client, _ = refusing_client(REFUSED, now=now, unreachableAfterSeconds=3)
    with pytest.raises(EndpointFailed) as caught:
        await client.complete(MESSAGES)
    assert "never answered: no connection in the 3s since the first request" in (
        caught.value.message
    )
    assert 3 <= now[0] < 4


async def test_a_shard_resumed_from_stored_answers_keeps_the_long_bound() -> None:
    """A pod restarted during an outage: its endpoint answered the earlier attempt (stored
    samples), so its first refusals are an outage, waited for unreachableAfterSeconds."""
    now = [0.0]
    client, _ = refusing_client(REFUSED, now=now, answered_before=True, unreachableAfterSeconds=30)
    with pytest.raises(EndpointFailed) as caught:
        await client.complete(MESSAGES)
    assert "(model endpoint: no connection for 30s, unreachableAfterSeconds)" in (
        caught.value.message
    )
    assert 30 <= now[0] < 31


class SlowFirstTransport(ScriptedTransport):
    """The first request waits for `answer` (connected, being answered); every other one is
    refused."""

    def __init__(self) -> None:
        super().__init__(REFUSED)
        self.answer = asyncio.Event()

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, timeout_seconds: float
    ) -> HttpResponse:
        if not self.sent:
            self.sent.append((url, headers, body, timeout_seconds))
            await self.answer.wait()
            return ok()
        return await super().post(url, headers, body, timeout_seconds)


async def test_a_request_in_flight_holds_the_short_bound() -> None:
    """While one of the first requests is still in flight, they were not all refused: it may
    yet be answered (a slow model behind a Service one of whose pods refuses). The short bound
    waits for it; once it is answered, the endpoint has the outage's patience."""
    now = [0.0]
    client, transport = refusing_client(
        now=now, transport=SlowFirstTransport(), unreachableAfterSeconds=30
    )
    assert isinstance(transport, SlowFirstTransport)
    slow = asyncio.create_task(client.complete(MESSAGES))
    refused = asyncio.create_task(client.complete(MESSAGES))
    while now[0] < 3 * NEVER_ANSWERED_SECONDS:
        assert not refused.done(), refused  # the short bound is long past, and it waits
        await asyncio.sleep(0)
    answered_at = now[0]
    transport.answer.set()
    assert (await slow).text == "4"
    with pytest.raises(EndpointFailed) as caught:
        await refused
    assert "(model endpoint: no connection for 30s, unreachableAfterSeconds)" in (
        caught.value.message
    )
    assert now[0] >= answered_at + 30


async def test_a_timed_out_request_costs_its_worst_case_and_is_counted() -> None:
    pricing = {"inputPerMillionUSD": "1000000", "outputPerMillionUSD": "1000000"}
    messages: list[Message] = [{"role": "user", "content": "2 + 2"}]
    budget = Budget(max_cost=Decimal("130"))
    client, transport = client_for(
        TransportTimeout("slow"),
        TransportTimeout("slow"),
        ok(),
        budget=budget,
        pricing=pricing,
        parameters={"maxTokens": 10},
    )
    await client.complete(messages)
    # Worst case $39 (see above) for each of the 2 timeouts, then the answer's $10.
    assert (client.usage.requests, client.usage.timed_out) == (3, 2)
    assert client.usage.cost_usd == "88" and budget.spent == Decimal(88)
    assert (client.usage.input_tokens, client.usage.output_tokens) == (9, 1)  # as reported


async def test_truncated_answers_are_counted() -> None:
    cut = {**OPENAI_OK, "choices": [{"message": {"content": "4"}, "finish_reason": "length"}]}
    openai, _ = client_for(ok(cut))
    completion = await openai.complete(MESSAGES)
    assert completion.truncated and openai.usage.truncated == 1
    anthropic_body = {
        "content": [{"type": "text", "text": "4"}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 9, "output_tokens": 2},
    }
    anthropic, _ = client_for(ok(anthropic_body), provider="anthropic")
    assert (await anthropic.complete(MESSAGES)).truncated and anthropic.usage.truncated == 1
