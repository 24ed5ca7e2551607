"""Stage 3: chat messages go to the model; a Completion (or a classified failure) comes back.

`ModelClient` is the seam the pipeline depends on. `HttpModelClient` speaks the OpenAI chat
completions and Anthropic Messages APIs over the process's shared transport, and is where a
request meets the machinery that keeps a run honest under fire: the circuit breaker, the
request and token rate limits, the provider's own rate-limit headers, the adaptive concurrency
limit, the budget, per-request timeouts, and retries with backoff that honour Retry-After.

A request that fails for good raises RequestFailed with its error class, and the sample is
counted as errored, never scored (a 429 is never a wrong answer). What no retry can fix (a
refused key, a missing model, a redirect, an endpoint unreachable for too long) raises
EndpointFailed, which stops the shard at once.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from typing import Any, Protocol

import structlog
from yarl import URL

from eval_api.shard import ShardUsage
from eval_api.v1alpha1.model import EndpointSpec
from eval_runner import metrics
from eval_runner.breaker import HALF_OPEN, OPEN, CircuitBreaker
from eval_runner.budget import Budget, max_input_tokens, worst_case_cost
from eval_runner.completions import (
    Likelihood,
    LogprobsUnsupported,
    completion_text,
    completions_body,
    likelihood_body,
    likelihood_of,
    split_whitespace,
    window,
)
from eval_runner.errors import PermanentError
from eval_runner.limits import AdaptiveLimiter, Clock, TokenBucket
from eval_runner.pacing import Costs, ProviderPacer
from eval_runner.prompt import Message
from eval_runner.retry import RETRYABLE_STATUS, THROTTLE_STATUS, RetryPolicy, parse_retry_after
from eval_runner.secrets import SECRETS
from eval_runner.transport import ConnectFailed, Transport, TransportError, TransportTimeout

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}
ANTHROPIC_VERSION = "2023-06-01"
# The Messages API requires max_tokens; this applies when parameters.maxTokens is unset.
ANTHROPIC_DEFAULT_MAX_TOKENS = 1024
# Rough characters per token (OpenAI's rule of thumb, rounded up), for what the rate limits are
# charged up front; the spec's token bucket is corrected to the reported usage afterwards.
CHARS_PER_TOKEN = 4
# An error body is shown cut to this, on one line, with the key redacted.
ERROR_SNIPPET_CHARS = 160
_SPACE = re.compile(r"\s+")

log = structlog.get_logger()


@dataclass(slots=True)
class Spend:
    """What the requests for one sample used, retries included: what the store keeps per
    sample, so that a resumed shard knows what its stored samples cost."""

    requests: int = 0
    timed_out: int = 0
    cost: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    truncated: bool = False  # cut at maxTokens (finish_reason length, stop_reason max_tokens)
    latency: float = 0.0  # seconds from the first attempt to the answer, retries included
    spend: Spend = field(default_factory=Spend)
    cache_hit: bool = False  # served by the response cache: nothing was sent
    # The provider's content filter withheld the answer (OpenAI finish_reason content_filter,
    # Anthropic stop_reason refusal): scored as it is, never kept in the response cache.
    filtered: bool = False


@dataclass(frozen=True, slots=True)
class LikelihoodAnswer:
    """A log-likelihood request's answer, with what it used."""

    likelihood: Likelihood
    spend: Spend
    input_tokens: int
    output_tokens: int
    latency: float


class RequestFailed(Exception):
    """A request failed. Raised out of `complete` only once it failed for good: `error_class`
    (http_429, http_500, timeout, connection, invalid_json, bad_response, ...) is what the
    shard summary counts."""

    def __init__(
        self,
        error_class: str,
        detail: str,
        *,
        url: str = "",
        retryable: bool = False,
        retry_after: float | None = None,
        breaker_failure: bool = False,
    ) -> None:
        super().__init__(f"{error_class}: {detail}")
        self.error_class = error_class
        self.detail = detail
        self.url = url
        self.retryable = retryable
        self.retry_after = retry_after
        self.breaker_failure = breaker_failure  # does it say the endpoint is unwell?
        # Set when it is raised out of `complete`: every attempt failed to connect or lost its
        # connection, so the sample is worth another go once the endpoint is back.
        self.only_connection = False
        # Set there too: what the sample's failed attempts used.
        self.spend = Spend()


class EndpointFailed(PermanentError):
    """The endpoint cannot serve this run as configured: AuthenticationFailed, ModelNotFound,
    EndpointRedirected or EndpointUnreachable. The shard stops at once (exit code 3)."""


class ModelClient(Protocol):
    async def complete(self, messages: list[Message]) -> Completion:
        """The model's answer, or RequestFailed (or BudgetExceeded: nothing was sent; or
        EndpointFailed: nothing more will be)."""
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
    truncated: bool = False
    filtered: bool = False
    likelihood: Likelihood | None = None  # a log-likelihood request's (completions.py)


def _completion_answer(data: Any) -> Answer:
    """A completions-API answer (choices[0].text)."""
    text, finish = completion_text(data)
    usage = data.get("usage") or {}
    return Answer(
        text,
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        truncated=finish == "length",
    )


def openai_parse(data: Any) -> Answer:
    choice = data["choices"][0]
    usage = data.get("usage") or {}  # some OpenAI-compatible servers omit usage
    details = usage.get("prompt_tokens_details") or {}
    return Answer(
        choice["message"].get("content") or "",
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        int(details.get("cached_tokens") or 0),
        choice.get("finish_reason") == "length",
        choice.get("finish_reason") == "content_filter",
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
    return Answer(
        text,
        input_tokens,
        int(usage.get("output_tokens") or 0),
        cached,
        data.get("stop_reason") == "max_tokens",
        data.get("stop_reason") == "refusal",
    )


PROVIDERS = {
    "openai": (openai_request, openai_parse),
    "anthropic": (anthropic_request, anthropic_parse),
}


def max_output_tokens(model: EndpointSpec) -> int | None:
    if model.parameters.max_tokens is not None:
        return model.parameters.max_tokens
    return ANTHROPIC_DEFAULT_MAX_TOKENS if model.provider == "anthropic" else None


def snippet(body: bytes) -> str:
    """The start of an error body on one line, the key redacted (before it is cut: a cut could
    leave part of the key behind)."""
    text = SECRETS.redact(_SPACE.sub(" ", body.decode(errors="replace")).strip())
    return text if len(text) <= ERROR_SNIPPET_CHARS else text[:ERROR_SNIPPET_CHARS] + "..."


class UsageMeter:
    """Adds requests to a ShardUsage (live: the progress server serves it) and to the metrics.
    Cost is priced per answer; Decimal sums of exact products stay exact."""

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
        self._prompt_cache = metrics.PROMPT_CACHE_TOKENS.labels(*labels)
        self._truncated = metrics.TRUNCATED.labels(*labels)

    def request(self) -> None:
        self.usage.requests += 1

    def answered(self, answer: Answer) -> Decimal:
        usage = self.usage
        usage.input_tokens += answer.input_tokens
        usage.output_tokens += answer.output_tokens
        self._input.inc(answer.input_tokens)
        self._output.inc(answer.output_tokens)
        if answer.cached_tokens:
            usage.prompt_cache_tokens += answer.cached_tokens
            self._prompt_cache.inc(answer.cached_tokens)
        if answer.truncated:
            usage.truncated += 1
            self._truncated.inc()
        cost = self._input_price * answer.input_tokens + self._output_price * answer.output_tokens
        self._add_cost(cost)
        return cost

    def unanswered(self, worst: Decimal) -> None:
        """A request sent whose answer never came (timed out, or abandoned when the shard
        stopped): the provider may have processed and billed it, so it costs its worst case."""
        self.usage.timed_out += 1
        self._add_cost(worst)

    def _add_cost(self, cost: Decimal) -> None:
        if self.pricing is None or not cost:
            return
        self.cost += cost
        self.usage.cost_usd = format(self.cost.normalize(), "f")
        self._cost.inc(float(cost))


# How long an endpoint that has not answered once in this shard may refuse connections (or not
# resolve, or fail its TLS handshake), counted from its first request: a baseURL that nothing
# ever answered is a typo or a missing Service, not an outage, and stops the shard well within
# 15 s rather than after unreachableAfterSeconds (120 s by default). 10 s still lets a few tries
# through (retries back off 0.5, 1, 2, 4 s; the breaker probes after 5 s), so a blip at the very
# start (a model pod being replaced) is ridden out; a smaller unreachableAfterSeconds wins.
NEVER_ANSWERED_SECONDS = 10.0


class Reachability:
    """How long the endpoint has been impossible to connect to, and when the shard gives up
    (EndpointUnreachable).

    An endpoint that answered before (a connection made: an error status, a timeout or a reset
    all say that something is there) has `after_seconds` (spec unreachableAfterSeconds) from
    the first failed connect with no connection made since: an outage, worth waiting for. One
    that never answered, only refused (refused, an unknown name, a failed TLS handshake), has
    `NEVER_ANSWERED_SECONDS` at most from the first request sent, once no request is left in
    flight (one in flight may yet be answered): a wrong URL. A connect that timed out is no
    refusal (a slow network, a firewall dropping packets for a while), and an
    unreachableAfterSeconds the spec sets is the user's patience from the start (a model
    server still loading, deployed in the same sync): both keep `after_seconds`.

    "Answered before" is this process's own experience, or `answered` when the shard resumes
    samples an earlier attempt stored: a pod restarted while its endpoint is away keeps the
    outage's patience rather than failing the shard for good on its first refusals. A shard
    retried without stored samples (no store) starts over like a new run, and is judged as one.
    """

    def __init__(
        self,
        after_seconds: float,
        where: str,
        clock: Clock = time.monotonic,
        *,
        answered: bool = False,
        explicit: bool = False,
        base_url: str = "",
    ) -> None:
        self.after_seconds = after_seconds
        self.answered = answered
        self.explicit = explicit
        self.only_refused = True
        self.since: float | None = None
        self.failure: ConnectFailed | None = None
        self._where = where
        self._base_url = base_url
        self._clock = clock
        self._first_sent: float | None = None
        self._in_flight = 0

    @property
    def bound(self) -> float:
        """Seconds without a connection before the shard stops."""
        if self.answered or self.explicit or not self.only_refused:
            return self.after_seconds
        return min(self.after_seconds, NEVER_ANSWERED_SECONDS)

    @contextmanager
    def asking(self) -> Iterator[None]:
        """Around each request sent: the first one's time, and how many are in flight."""
        if self._first_sent is None:
            self._first_sent = self._clock()
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    def failed(self, err: ConnectFailed) -> None:
        if err.timed_out:
            self.only_refused = False
        if self.since is None:
            now = self._clock()
            # An endpoint never answered counts from the first request: a connect that timed
            # out took its time already.
            self.since = now if self.answered or self._first_sent is None else self._first_sent
            # Said once, so that a run waiting on a dead endpoint does not look hung.
            log.warning(
                f"the {self._where} is unreachable, retrying",
                error=str(err),
                gives_up_after_seconds=self.bound,
                answered_before=self.answered,
            )
        self.failure = err

    def connected(self) -> None:
        """A connection was made (whatever became of the request): the endpoint is there."""
        self.since = self.failure = None
        self.answered = True

    def remaining(self) -> float | None:
        """Seconds left before the bound, or None while the endpoint answers (or, never
        answered, while a request is in flight: it may yet be, and then not all were refused)."""
        if self.since is None or (not self.answered and self._in_flight):
            return None
        return self.since + self.bound - self._clock()

    def check(self) -> None:
        remaining = self.remaining()
        if remaining is None or remaining > 0 or self.failure is None:
            return
        if self.answered:
            said = (
                f"{self._where}: no connection for {self.after_seconds:g}s, unreachableAfterSeconds"
            )
        else:
            said = (
                f"the {self._where} never answered: no connection in the {self.bound:g}s since "
                f"the first request; check baseURL {self._base_url}"
            )
        raise EndpointFailed("EndpointUnreachable", f"{self.failure} ({said})")


def shown_url(url: str) -> str:
    """`url` fit for a message: no userinfo (a password), no query or fragment (a key)."""
    try:
        parsed = URL(url)
        return str(parsed.with_user(None).with_query(None).with_fragment(None))
    except ValueError:
        return "(unparsable)"


class HttpModelClient:
    """A ModelClient for one endpoint (the model under evaluation, or a judge).

    Each attempt: wait while the circuit breaker is open (waiting is not a failed try); take
    from the request and token buckets of the spec; take a slot of the adaptive concurrency
    limit; wait for the provider's buckets (rate-limit headers); count the request against the
    budget and reserve its worst-case cost (BudgetExceeded: nothing is sent); send with the
    endpoint's timeout. Retryable failures go round again after a backoff, within the retry
    policy's budget.

    `answered_before`: an earlier attempt of the shard had answers from this endpoint (it
    stored samples), so connections refused now are an outage, not a wrong URL (Reachability).
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
        pacer: ProviderPacer | None = None,
        answered_before: bool = False,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._model = model
        self._clock = clock
        self._sleep = sleep
        self._api_key = api_key
        self._transport = transport
        self._retry = retry or RetryPolicy()
        self._build, self._parse = PROVIDERS[model.provider]
        self._timeout = float(model.timeout_seconds)
        self._budget = budget or Budget()
        self._meter = UsageMeter(usage if usage is not None else ShardUsage(), model, role)
        self._max_output = max_output_tokens(model)
        self._where = f"{role} endpoint"
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
        self.reachability = Reachability(
            model.unreachable_after_seconds,
            self._where,
            clock,
            answered=answered_before,
            explicit="unreachable_after_seconds" in model.model_fields_set,
            base_url=shown_url(model.base_url or DEFAULT_BASE_URLS[model.provider]),
        )
        self.pacer = pacer or ProviderPacer(clock=clock, sleep=sleep)
        self._rpm = (
            TokenBucket.per_minute(model.requests_per_minute) if model.requests_per_minute else None
        )
        self._tpm = (
            TokenBucket.per_minute(model.tokens_per_minute) if model.tokens_per_minute else None
        )
        self._ok = metrics.REQUESTS.labels(*labels, "ok")
        self._duration = metrics.REQUEST_DURATION.labels(*labels)
        self._in_flight = metrics.IN_FLIGHT.labels(*labels)
        self._tokenizer: bool | None = None  # whether the server tokenizes (unknown yet)

    @property
    def usage(self) -> ShardUsage:
        return self._meter.usage

    async def complete(self, messages: list[Message]) -> Completion:
        request = self._build(self._model, self._api_key, messages)
        # The worst case prices a request whose outcome is unknown, and bounds the budget. The
        # output of a request without maxTokens has no bound: its worst case is its prompt
        # (budget.maxCostUSD demands maxTokens, so no budget relies on that).
        worst = worst_case_cost(self._model.pricing, max_input_tokens(messages), self._max_output)
        prompt_chars = sum(len(m["content"]) for m in messages)
        answer, latency, spend = await self._ask(request, worst, prompt_chars, self._max_output)
        return Completion(
            answer.text,
            answer.input_tokens,
            answer.output_tokens,
            answer.truncated,
            latency,
            spend,
            filtered=answer.filtered,
        )

    async def complete_prompt(self, prompt: str, *, stop: list[str], max_tokens: int) -> Completion:
        """The completions API's text for `prompt`, greedy (temperature 0), cut by the
        endpoint at the first of `stop` (as lm-eval's local-completions leaves it to do)."""
        body = completions_body(self._model, prompt, stop=stop, max_tokens=max_tokens)
        request = _Request(self._completions_url(), self._auth_headers(), body)
        worst = worst_case_cost(self._model.pricing, len(prompt.encode()), max_tokens)
        answer, latency, spend = await self._ask(
            request, worst, len(prompt), max_tokens, parse=_completion_answer
        )
        return Completion(
            answer.text,
            answer.input_tokens,
            answer.output_tokens,
            answer.truncated,
            latency,
            spend,
        )

    async def loglikelihood(self, context: str, continuation: str) -> LikelihoodAnswer:
        """log P(continuation | context) and whether it is the greedy continuation, from the
        endpoint's prompt log-probabilities (see eval_runner.completions); EndpointFailed
        LogprobsUnsupported when the endpoint gives none."""
        (found,) = await self.loglikelihoods(context, [continuation])
        return found

    async def loglikelihoods(
        self, context: str, continuations: list[str]
    ) -> list[LikelihoodAnswer]:
        """loglikelihood of each continuation after one context (a multiple-choice sample's
        choices): the context is tokenized once, the continuations asked side by side."""
        context_ids = await self._tokenize(split_whitespace(context, "")[0])
        return list(
            await asyncio.gather(
                *(self._likelihood(context, c, context_ids) for c in continuations)
            )
        )

    async def _likelihood(
        self, context: str, continuation: str, context_ids: list[int] | None
    ) -> LikelihoodAnswer:
        context, continuation = split_whitespace(context, continuation)
        prompt: str | list[int]
        context_tokens: int | None = None
        if context_ids is not None:
            whole = await self._tokenize(context + continuation) or []
            prompt, context_tokens = window(context_ids, whole)
        else:
            prompt = context + continuation

        def parse(data: Any) -> Answer:
            try:
                found = likelihood_of(
                    data, context_tokens=context_tokens, context_chars=len(context)
                )
            except LogprobsUnsupported as err:
                raise EndpointFailed(
                    "LogprobsUnsupported",
                    f"{self._where} {shown_url(self._completions_url())}: {err}; multiple "
                    "choice and log-likelihood tasks need an endpoint that returns them "
                    "(vLLM's /v1/completions); a chat model can run the generative variant",
                ) from None
            usage = data.get("usage") or {}
            return Answer(
                "",
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
                likelihood=found,
            )

        body = likelihood_body(self._model, prompt)
        request = _Request(self._completions_url(), self._auth_headers(), body)
        size = len(context.encode()) + len(continuation.encode())
        worst = worst_case_cost(self._model.pricing, size, 1)
        answer, latency, spend = await self._ask(request, worst, size, 1, parse=parse)
        assert answer.likelihood is not None
        return LikelihoodAnswer(
            answer.likelihood, spend, answer.input_tokens, answer.output_tokens, latency
        )

    def _completions_url(self) -> str:
        return f"{(self._model.base_url or DEFAULT_BASE_URLS['openai']).rstrip('/')}/completions"

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def _tokenize(self, text: str) -> list[int] | None:
        """The server's token ids of `text` (vLLM's POST /tokenize beside /v1), or None when
        it has no tokenizer endpoint: then text is sent and offsets find the continuation."""
        if self._tokenizer is False:
            return None
        base = (self._model.base_url or "").rstrip("/")
        root = base.removesuffix("/v1")
        body = json.dumps({"prompt": text, "add_special_tokens": False}).encode()
        tokens = None
        try:
            response = await self._transport.post(
                f"{root}/tokenize", self._auth_headers(), body, self._timeout
            )
            if response.status == 200:
                tokens = json.loads(response.body).get("tokens")
        except (TransportError, TransportTimeout, ValueError, AttributeError):
            tokens = None
        if not (isinstance(tokens, list) and all(isinstance(t, int) for t in tokens)):
            if self._tokenizer is None:
                self._tokenizer = False
                return None
            raise RequestFailed(
                "bad_response", "the tokenizer endpoint stopped answering", retryable=True
            )
        self._tokenizer = True
        return tokens

    async def _ask(
        self,
        request: _Request,
        worst: Decimal,
        prompt_chars: int,
        output_bound: int | None,
        *,
        parse: Callable[[Any], Answer] | None = None,
    ) -> tuple[Answer, float, Spend]:
        """One request, retried within the retry policy: its answer, the latency from the
        first attempt, and what all attempts used."""
        started = self._clock()
        body = json.dumps(request.body, separators=(",", ":")).encode()
        prompt_tokens = -(-prompt_chars // CHARS_PER_TOKEN)
        output_bound = output_bound or 0
        costs: Costs = {
            "requests": 1,
            "tokens": prompt_tokens + output_bound,
            "input-tokens": prompt_tokens,
            "output-tokens": output_bound,
        }
        errors = throttled = 0
        only_connection = True
        spend = Spend()
        while True:
            try:
                answer = await self._attempt(request, body, worst, costs, spend, parse)
                return answer, self._clock() - started, spend
            except RequestFailed as err:
                only_connection = only_connection and err.error_class == "connection"
                if err.error_class == "http_429":
                    throttled += 1
                    gave_up = throttled >= self._retry.max_throttled
                else:
                    errors += 1
                    gave_up = errors >= self._retry.max_errors
                if not err.retryable or gave_up:
                    err.only_connection = only_connection
                    err.spend = spend
                    raise
                metrics.RETRIES.labels(*self._labels, err.error_class).inc()
                delay = self._retry.delay(errors + throttled, err.retry_after)
                remaining = self.reachability.remaining()
                if remaining is not None:  # an unreachable endpoint's bound ends any wait
                    delay = min(delay, max(remaining, 0.0))
                await self._sleep(delay)

    async def _wait_for_breaker(self) -> bool:
        """Wait until the breaker lets a request through; True when it is the probe. Waiting
        is not a try: only requests sent use up a sample's retries. An endpoint unreachable
        for longer than its bound stops the wait (EndpointUnreachable)."""
        while (allowed := self.breaker.allow()) is not True:
            wait = float(allowed)
            remaining = self.reachability.remaining()
            if remaining is not None:
                self.reachability.check()
                wait = min(wait, max(remaining, 0.0))
            await self._sleep(wait)
        return self.breaker.state == HALF_OPEN

    async def _attempt(
        self,
        request: _Request,
        body: bytes,
        worst: Decimal,
        costs: Costs,
        spend: Spend,
        parse: Callable[[Any], Answer] | None = None,
    ) -> Answer:
        probe = await self._wait_for_breaker()
        try:
            if self._rpm is not None:
                await self._rpm.take(1)
            if self._tpm is not None:
                await self._tpm.take(costs["tokens"])
            await self.limiter.acquire()
        except BaseException:
            if probe:
                self.breaker.abandon()
            raise
        try:
            try:
                number = await self.pacer.acquire(costs)
                reservation = self._budget.begin(worst)
            except BaseException:
                if probe:
                    self.breaker.abandon()
                raise
            self._meter.request()
            self._budget.sent()
            spend.requests += 1
            # Until an answer says otherwise, the request costs its worst case: one that times
            # out or is abandoned (the shard stops) may still be billed.
            charged = reservation
            try:
                answer = await self._send(request, body, number, parse)
                charged = self._meter.answered(answer)
            except RequestFailed as err:
                if err.error_class == "timeout":
                    self._meter.unanswered(reservation)
                    spend.timed_out += 1
                else:
                    charged = Decimal(0)
                raise
            except asyncio.CancelledError:
                self._meter.unanswered(reservation)
                raise
            except BaseException:
                charged = Decimal(0)  # an answer arrived: a 401, 404 or redirect is not billed
                raise
            finally:
                self._budget.end(reservation, charged)
                spend.cost += charged
        except RequestFailed as err:
            self.breaker.record(not err.breaker_failure)
            if self._tpm is not None and err.error_class != "timeout":
                self._tpm.adjust(-costs["tokens"])
            raise
        finally:
            self.limiter.release()
        self.breaker.record(True)
        self.limiter.on_success()
        if self._tpm is not None:
            self._tpm.adjust(answer.input_tokens + answer.output_tokens - costs["tokens"])
        return answer

    async def _send(
        self,
        request: _Request,
        body: bytes,
        number: int,
        parse: Callable[[Any], Answer] | None = None,
    ) -> Answer:
        in_flight = self._in_flight
        in_flight.inc()
        started = time.perf_counter()
        url = request.url
        try:
            with self.reachability.asking():
                response = await self._transport.post(url, request.headers, body, self._timeout)
        except TransportTimeout as err:
            self._failed("timeout")
            self.reachability.connected()
            raise RequestFailed(
                "timeout", SECRETS.redact(str(err)), url=url, retryable=True, breaker_failure=True
            ) from err
        except ConnectFailed as err:
            self._failed("connection")
            self.reachability.failed(err)
            self.reachability.check()
            raise RequestFailed(
                "connection",
                SECRETS.redact(str(err)),
                url=url,
                retryable=True,
                breaker_failure=True,
            ) from err
        except TransportError as err:
            self._failed("connection")
            self.reachability.connected()
            raise RequestFailed(
                "connection",
                SECRETS.redact(str(err)),
                url=url,
                retryable=True,
                breaker_failure=True,
            ) from err
        finally:
            self._duration.observe(time.perf_counter() - started)
            in_flight.dec()
        self.reachability.connected()
        status = response.status
        headers = response.headers
        retry_after = parse_retry_after(headers.get("Retry-After"))
        self.pacer.update(number, headers, retry_after)
        if not 200 <= status < 300:
            error_class = f"http_{status}"
            self._failed(error_class)
            self._refuse(status, url, response.body, headers.get("Location"))
            if (
                status in THROTTLE_STATUS
                and not (status == 429 and self.pacer.active)
                and self.limiter.on_throttled()
            ):
                # AIMD for endpoints that do not say their limits; the pacer handles the rest.
                self._cuts.inc()
            raise RequestFailed(
                error_class,
                snippet(response.body),
                url=url,
                retryable=status in RETRYABLE_STATUS or status >= 500,
                retry_after=retry_after,
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
                url=url,
                retryable=True,
                breaker_failure=True,
            ) from err
        try:
            answer = (parse or self._parse)(data)
        except (LookupError, TypeError, AttributeError, ValueError) as err:
            self._failed("bad_response")
            raise RequestFailed(
                "bad_response", f"unexpected answer shape: {type(err).__name__}: {err}", url=url
            ) from err
        self._ok.inc()
        return answer

    def _refuse(self, status: int, url: str, body: bytes, location: str | None) -> None:
        """Answers no retry can change stop the shard: they name the endpoint, never the key."""
        phrase = _phrase(status)
        detail = snippet(body)
        said = f": {detail}" if detail else ""
        if 300 <= status < 400:
            reason = "EndpointRedirected"
            message = (
                f"the {self._where} POST {url} answered {status} {phrase}, redirecting to "
                f"{location or '(no Location)'}; the runner follows no redirect (it would "
                "carry the API key elsewhere): set baseURL to the final URL"
            )
        elif status in (401, 403):
            reason = "AuthenticationFailed"
            message = (
                f"the {self._where} POST {url} answered {status} {phrase}: the API key was "
                f"refused or lacks access to model {self._model.name!r}{said}"
            )
        elif status == 404:
            reason = "ModelNotFound"
            message = (
                f"the {self._where} POST {url} answered 404 Not Found: no model "
                f"{self._model.name!r} there, or baseURL is wrong{said}"
            )
        else:
            return
        raise EndpointFailed(reason, SECRETS.redact(message))

    def _failed(self, outcome: str) -> None:
        metrics.REQUESTS.labels(*self._labels, outcome).inc()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
