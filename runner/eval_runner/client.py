"""Stage 3: chat messages go to the model; a Completion (or a classified failure) comes back.

`ModelClient` is the seam the pipeline depends on. `HttpModelClient` speaks the OpenAI chat
completions and Anthropic Messages APIs over one shared httpx.AsyncClient, bounds concurrency and
retries transient failures, so a rate limit is never mistaken for a wrong answer.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from eval_operator.api.v1alpha1 import ModelSpec
from eval_runner.metrics import REQUESTS
from eval_runner.prompt import Message
from eval_runner.tls import verify_context

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}
ANTHROPIC_VERSION = "2023-06-01"
# The Messages API requires max_tokens; this applies when parameters.maxTokens is unset.
ANTHROPIC_DEFAULT_MAX_TOKENS = 1024
# Request timeout, conflict and rate limiting are worth another try; other 4xx are our fault.
RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    attempts: int = 1  # HTTP requests it took, retries included


class RequestFailed(Exception):
    """A sample's request failed for good. `error_class` (http_429, timeout, connection,
    bad_response, ...) is what the shard summary counts."""

    def __init__(
        self,
        error_class: str,
        detail: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{error_class}: {detail}")
        self.error_class = error_class
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = attempts


class ModelClient(Protocol):
    async def complete(self, messages: list[Message]) -> Completion:
        """The model's answer, or RequestFailed."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        # Jitter, so that requests throttled together do not all come back together.
        return backoff / 2 + random.uniform(0, backoff / 2)


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


def openai_request(model: ModelSpec, api_key: str | None, messages: list[Message]) -> _Request:
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


def openai_parse(data: Any) -> tuple[str, int, int]:
    message = data["choices"][0]["message"]
    usage = data.get("usage") or {}  # some OpenAI-compatible servers omit usage
    return (
        message.get("content") or "",
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )


def anthropic_request(model: ModelSpec, api_key: str | None, messages: list[Message]) -> _Request:
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


def anthropic_parse(data: Any) -> tuple[str, int, int]:
    text = "".join(block["text"] for block in data["content"] if block.get("type") == "text")
    usage = data.get("usage") or {}
    return text, int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)


RequestBuilder = Callable[[ModelSpec, str | None, list[Message]], _Request]
ResponseParser = Callable[[Any], tuple[str, int, int]]
PROVIDERS: dict[str, tuple[RequestBuilder, ResponseParser]] = {
    "openai": (openai_request, openai_parse),
    "anthropic": (anthropic_request, anthropic_parse),
}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff
    return seconds if seconds is not None and seconds >= 0 else None


class HttpModelClient:
    """A ModelClient over a shared httpx.AsyncClient."""

    def __init__(
        self,
        model: ModelSpec,
        api_key: str | None,
        http: httpx.AsyncClient,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._model = model
        self._api_key = api_key
        self._http = http
        self._retry = retry or RetryPolicy()
        self._build, self._parse = PROVIDERS[model.provider]
        self._slots = asyncio.Semaphore(model.max_concurrency)

    async def complete(self, messages: list[Message]) -> Completion:
        request = self._build(self._model, self._api_key, messages)
        attempt = 0
        while True:
            attempt += 1
            try:
                # The slot is held for the request only, not for the backoff sleep.
                async with self._slots:
                    text, input_tokens, output_tokens = await self._send(request)
            except RequestFailed as err:
                REQUESTS.labels(err.error_class).inc()
                if not err.retryable or attempt >= self._retry.attempts:
                    err.attempts = attempt
                    raise
                await asyncio.sleep(self._retry.delay(attempt, err.retry_after))
                continue
            REQUESTS.labels("ok").inc()
            return Completion(text, input_tokens, output_tokens, attempts=attempt)

    async def _send(self, request: _Request) -> tuple[str, int, int]:
        try:
            response = await self._http.post(
                request.url, headers=request.headers, json=request.body
            )
        except httpx.TimeoutException as err:
            raise RequestFailed("timeout", repr(err), retryable=True) from err
        except httpx.TransportError as err:
            raise RequestFailed("connection", repr(err), retryable=True) from err
        if not response.is_success:
            status = response.status_code
            raise RequestFailed(
                f"http_{status}",
                response.text[:200],
                retryable=status in RETRYABLE_STATUS or status >= 500,
                retry_after=_retry_after(response),
            )
        try:
            return self._parse(response.json())
        except (ValueError, LookupError, TypeError, AttributeError) as err:
            raise RequestFailed("bad_response", f"{type(err).__name__}: {err}") from err


@asynccontextmanager
async def open_model_client(
    model: ModelSpec,
    api_key: str | None,
    *,
    ca_bundle: Path | None = None,
    retry: RetryPolicy | None = None,
) -> AsyncIterator[HttpModelClient]:
    """One HTTP client for the whole process: connections are reused across samples."""
    timeout = httpx.Timeout(float(model.timeout_seconds))
    limits = httpx.Limits(
        max_connections=model.max_concurrency, max_keepalive_connections=model.max_concurrency
    )
    async with httpx.AsyncClient(
        timeout=timeout, limits=limits, verify=verify_context(ca_bundle)
    ) as http:
        yield HttpModelClient(model, api_key, http, retry)
