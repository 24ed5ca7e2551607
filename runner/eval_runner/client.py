"""Stage 3: chat messages go to the model; a Completion (or a classified failure) comes back.

`ModelClient` is the seam the pipeline depends on. `HttpModelClient` speaks the OpenAI chat
completions and Anthropic Messages APIs over the process's shared transport, and is where a
request meets the machinery that keeps a run honest under fire: the circuit breaker, the
request and token rate limits, the adaptive concurrency limit, the budget, per-request
timeouts, and retries with backoff that honour Retry-After. A 429 is never a wrong answer: a
request that fails for good raises RequestFailed with its error class, and the sample is
counted as errored, never scored.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from eval_api.shard import ShardUsage
from eval_api.v1alpha1 import EndpointSpec
from eval_runner import metrics
from eval_runner.breaker import HALF_OPEN, OPEN, CircuitBreaker
from eval_runner.budget import Budget, BudgetExceeded, max_input_tokens, worst_case_cost
from eval_runner.limits import AdaptiveLimiter, TokenBucket
from eval_runner.prompt import Message
from eval_runner.retry import RETRYABLE_STATUS, THROTTLE_STATUS, RetryPolicy, parse_retry_after
from eval_runner.transport import Transport, TransportError, TransportTimeout

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}
ANTHROPIC_VERSION = "2023-06-01"
# The Messages API requires max_tokens; this applies when parameters.maxTokens is unset.
ANTHROPIC_DEFAULT_MAX_TOKENS = 1024
# Rough characters per token, for the token bucket's up-front charge (corrected afterwards).
CHARS_PER_TOKEN = 4
ERROR_DETAIL_CHARS = 200
REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int


class RequestFailed(Exception):
    """A request failed. Raised out of `complete` only once it failed for good: `error_class`
    (http_429, http_500, timeout, connection, invalid_json, bad_response, circuit_open, ...)
    is what the shard summary counts."""

    def __init__(
        self,
        error_class: str,
        detail: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        breaker_failure: bool = False,
    ) -> None:
        super().__init__(f"{error_class}: {detail}")
        self.error_class = error_class
        self.retryable = retryable
        self.retry_after = retry_after
        self.breaker_failure = breaker_failure  # does it say the endpoint is unwell?


class ModelClient(Protocol):
    async def complete(self, messages: list[Message]) -> Completion:
        """The model's answer, or RequestFailed (or BudgetExceeded: nothing was sent)."""
        ...


@dataclass(frozen=True)
class _Request:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


def _decimal(value: str | None) -> float | None:
    # The API keeps decimals as strings; the providers want JSON numbers.
    return None if value is None else float(value)


def _without_none(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if value is not None}


def openai_request(model: EndpointSpec, api_key: str | None, messages: list[Message]) -> _Request:
    base_url = (model.base_url or DEFAULT_BASE_URLS["openai"]).rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    p = model.parameters
    body = _without_none(
        {
            "model": model.name,
            "messages": messages,
            "temperature": _decimal(p.temperature),
            "top_p": _decimal(p.top_p),
            "max_tokens": p.max_tokens,
            "stop": p.stop,
            "seed": p.seed,
        }
    )
    return _Request(f"{base_url}/chat/completions", headers, body)


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0


def openai_parse(data: Any) -> Answer:
    message = data["choices"][0]["message"]
    usage = data.get("usage") or {}  # some OpenAI-compatible servers omit usage
    details = usage.get("prompt_tokens_details") or {}
    return Answer(
        message.get("content") or "",
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        int(details.get("cached_tokens") or 0),
    )


def anthropic_request(
    model: EndpointSpec, api_key: str | None, messages: list[Message]
) -> _Request:
    base_url = (model.base_url or DEFAULT_BASE_URLS["anthropic"]).rstrip("/")
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    if api_key:
        headers["x-api-key"] = api_key
    p = model.parameters
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    body = _without_none(
        {
            "model": model.name,
            # The Messages API takes the system prompt as a top-level field, not a turn.
            "system": system or None,
            "messages": [m for m in messages if m["role"] != "system"],
            "max_tokens": p.max_tokens or ANTHROPIC_DEFAULT_MAX_TOKENS,
            "temperature": _decimal(p.temperature),
            "top_p": _decimal(p.top_p),
            "stop_sequences": p.stop,
        }
    )
    # seed has no Anthropic equivalent and is not sent.
    return _Request(f"{base_url}/messages", headers, body)


def anthropic_parse(data: Any) -> Answer:
    text = "".join(block["text"] for block in data["content"] if block.get("type") == "text")
    usage = data.get("usage") or {}
    cached = int(usage.get("cache_read_input_tokens") or 0)
    # Anthropic reports cache reads and writes apart from input_tokens; all are input.
    input_tokens = (
        int(usage.get("input_tokens") or 0)
        + cached
        + int(usage.get("cache_creation_input_tokens") or 0)
    )
    return Answer(text, input_tokens, int(usage.get("output_tokens") or 0), cached)


PROVIDERS = {
    "openai": (openai_request, openai_parse),
    "anthropic": (anthropic_request, anthropic_parse),
}


def max_output_tokens(model: EndpointSpec) -> int | None:
    if model.parameters.max_tokens is not None:
        return model.parameters.max_tokens
    return ANTHROPIC_DEFAULT_MAX_TOKENS if model.provider == "anthropic" else None


class UsageMeter:
    """Adds answered requests to a ShardUsage (live: the progress server serves it) and to the
    metrics. Cost is priced per answer; Decimal sums of exact products stay exact."""

    def __init__(self, usage: ShardUsage, model: EndpointSpec, role: str) -> None:
        self.usage = usage
        self.pricing = model.pricing
        self.cost = Decimal(usage.cost_usd)
        # Prices per token, parsed once: exact (a division by 10**6 of a short decimal).
        self._input_price = self._output_price = Decimal(0)
        if model.pricing is not None:
            self._input_price = Decimal(model.pricing.input_per_million_usd) / 1_000_000
            self._output_price = Decimal(model.pricing.output_per_million_usd) / 1_000_000
        labels = (role, model.name)
        self._input = metrics.TOKENS.labels(*labels, "input")
        self._output = metrics.TOKENS.labels(*labels, "output")
        self._cost = metrics.COST.labels(*labels)
        self._cache_hits = metrics.CACHE_HITS.labels(*labels)

    def request(self) -> None:
        self.usage.requests += 1

    def answered(self, answer: Answer) -> Decimal:
        usage = self.usage
        usage.input_tokens += answer.input_tokens
        usage.output_tokens += answer.output_tokens
        self._input.inc(answer.input_tokens)
        self._output.inc(answer.output_tokens)
        if answer.cached_tokens:
            usage.cache_hits += 1
            self._cache_hits.inc()
        if self.pricing is None:
            return Decimal(0)
        cost = self._input_price * answer.input_tokens + self._output_price * answer.output_tokens
        self.cost += cost
        usage.cost_usd = format(self.cost.normalize(), "f")
        self._cost.inc(float(cost))
        return cost


class HttpModelClient:
    """A ModelClient for one endpoint (the model under evaluation, or a judge).

    Each attempt: wait while the circuit breaker is open; take from the request and token
    buckets; take a slot of the adaptive concurrency limit; count the request against the
    budget and reserve its worst-case cost (BudgetExceeded: nothing is sent); send with the
    endpoint's timeout. Retryable failures go round again after a backoff, within the retry
    policy's budget.
    """

    def __init__(
        self,
        model: EndpointSpec,
        api_key: str | None,
        transport: Transport,
        *,
        role: str = "model",
        usage: ShardUsage | None = None,
        budget: Budget | None = None,
        retry: RetryPolicy | None = None,
        limiter: AdaptiveLimiter | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._model = model
        self._sleep = sleep
        self._api_key = api_key
        self._transport = transport
        self._retry = retry or RetryPolicy()
        self._build, self._parse = PROVIDERS[model.provider]
        self._timeout = float(model.timeout_seconds)
        self._budget = budget or Budget()
        self._meter = UsageMeter(usage if usage is not None else ShardUsage(), model, role)
        self._max_output = max_output_tokens(model)
        labels = (role, model.name)
        self._labels = labels
        concurrency = metrics.CONCURRENCY.labels(*labels)
        cuts = metrics.CONCURRENCY_CUTS.labels(*labels)

        def limit_changed(limit: int) -> None:
            concurrency.set(limit)

        self.limiter = limiter or AdaptiveLimiter(model.max_concurrency, on_change=limit_changed)
        concurrency.set(self.limiter.limit)
        self._cuts = cuts
        breaker_state = metrics.BREAKER_STATE.labels(*labels)
        breaker_opens = metrics.BREAKER_OPENS.labels(*labels)

        def breaker_changed(state: int) -> None:
            breaker_state.set(state)
            if state == OPEN:
                breaker_opens.inc()

        self.breaker = breaker or CircuitBreaker(on_change=breaker_changed)
        breaker_state.set(self.breaker.state)
        self._rpm = (
            TokenBucket.per_minute(model.requests_per_minute) if model.requests_per_minute else None
        )
        self._tpm = (
            TokenBucket.per_minute(model.tokens_per_minute) if model.tokens_per_minute else None
        )
        self._ok = metrics.REQUESTS.labels(*labels, "ok")
        self._duration = metrics.REQUEST_DURATION.labels(*labels)
        self._in_flight = metrics.IN_FLIGHT.labels(*labels)

    @property
    def usage(self) -> ShardUsage:
        return self._meter.usage

    async def complete(self, messages: list[Message]) -> Completion:
        request = self._build(self._model, self._api_key, messages)
        body = json.dumps(request.body, separators=(",", ":")).encode()
        budget = self._budget
        worst = Decimal(0)
        if budget.max_cost is not None:
            worst = worst_case_cost(
                self._model.pricing, max_input_tokens(messages), self._max_output
            )
        token_estimate = 0
        if self._tpm is not None:
            prompt_chars = sum(len(m["content"]) for m in messages)
            token_estimate = prompt_chars // CHARS_PER_TOKEN + (self._max_output or 0)
        errors = throttled = 0
        while True:
            try:
                return await self._attempt(request, body, worst, token_estimate)
            except RequestFailed as err:
                if err.error_class == "http_429":
                    throttled += 1
                    gave_up = throttled >= self._retry.max_throttled
                else:
                    errors += 1
                    gave_up = errors >= self._retry.max_errors
                if not err.retryable or gave_up:
                    raise
                metrics.RETRIES.labels(*self._labels, err.error_class).inc()
                await self._sleep(self._retry.delay(errors + throttled, err.retry_after))

    async def _attempt(
        self, request: _Request, body: bytes, worst: Decimal, token_estimate: int
    ) -> Completion:
        allowed = self.breaker.allow()
        if allowed is not True:
            raise RequestFailed(
                "circuit_open",
                "the endpoint's circuit breaker is open after sustained failures",
                retryable=True,
                retry_after=float(allowed),
            )
        probe = self.breaker.state == HALF_OPEN  # this request is the breaker's probe
        try:
            if self._rpm is not None:
                await self._rpm.take(1)
            if self._tpm is not None:
                await self._tpm.take(token_estimate)
            await self.limiter.acquire()
        except BaseException:
            if probe:
                self.breaker.abandon()
            raise
        try:
            try:
                reservation = self._budget.begin(worst)
            except BudgetExceeded:
                if probe:
                    self.breaker.abandon()
                raise
            self._meter.request()
            cost = Decimal(0)
            try:
                answer = await self._send(request, body)
                cost = self._meter.answered(answer)
            finally:
                self._budget.end(reservation, cost)
        except RequestFailed as err:
            self.breaker.record(not err.breaker_failure)
            if self._tpm is not None:
                self._tpm.adjust(-token_estimate)
            raise
        finally:
            self.limiter.release()
        self.breaker.record(True)
        self.limiter.on_success()
        if self._tpm is not None:
            self._tpm.adjust(answer.input_tokens + answer.output_tokens - token_estimate)
        return Completion(answer.text, answer.input_tokens, answer.output_tokens)

    async def _send(self, request: _Request, body: bytes) -> Answer:
        in_flight = self._in_flight
        in_flight.inc()
        started = time.perf_counter()
        try:
            response = await self._transport.post(request.url, request.headers, body, self._timeout)
        except TransportTimeout as err:
            self._failed("timeout")
            raise RequestFailed(
                "timeout", self._redact(str(err)), retryable=True, breaker_failure=True
            ) from err
        except TransportError as err:
            self._failed("connection")
            raise RequestFailed(
                "connection", self._redact(str(err)), retryable=True, breaker_failure=True
            ) from err
        finally:
            self._duration.observe(time.perf_counter() - started)
            in_flight.dec()
        status = response.status
        if not 200 <= status < 300:
            error_class = f"http_{status}"
            self._failed(error_class)
            if status in THROTTLE_STATUS and self.limiter.on_throttled():
                self._cuts.inc()
            raise RequestFailed(
                error_class,
                # Redacted before it is cut: a cut could leave part of the key behind.
                self._redact(response.body.decode(errors="replace"))[:ERROR_DETAIL_CHARS],
                retryable=status in RETRYABLE_STATUS or status >= 500,
                retry_after=parse_retry_after(response.retry_after),
                breaker_failure=status >= 500,
            )
        try:
            data = json.loads(response.body)
        except ValueError as err:
            # A truncated or garbled body: the next attempt may well come through whole.
            self._failed("invalid_json")
            raise RequestFailed(
                "invalid_json",
                f"the answer is not JSON: {err}",
                retryable=True,
                breaker_failure=True,
            ) from err
        try:
            answer = self._parse(data)
        except (LookupError, TypeError, AttributeError, ValueError) as err:
            self._failed("bad_response")
            raise RequestFailed(
                "bad_response", f"unexpected answer shape: {type(err).__name__}: {err}"
            ) from err
        self._ok.inc()
        return answer

    def _failed(self, outcome: str) -> None:
        metrics.REQUESTS.labels(*self._labels, outcome).inc()

    def _redact(self, text: str) -> str:
        # An endpoint may echo the request's headers in an error body; the key stays secret.
        return text.replace(self._api_key, REDACTED) if self._api_key else text
