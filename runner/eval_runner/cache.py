"""The response cache (Redis): exactly the same request, asked before, is answered from the
cache instead of the model.

The contract: an evaluation measures the model as it is now. By default (the spec's
execution.cache.reuse WithinRun) an answer is reused only within the run that asked for it: a
retried or resumed shard, a prompt asked twice. Every new run (a re-run, a suite's scheduled
run) asks the model again. With reuse AcrossRuns the answers of earlier runs are reused too.

The key is the sha256 of the request's identity as canonical JSON: the provider, the whole
base URL (scheme, host, port, path: two models behind one path-routed gateway are two
endpoints), the model name, every generation parameter, the rendered messages, the sample's
repeat index (0: a run asks each sample once) and, under WithinRun, the run (evaluation uid
and run id). The value is the answer's text, its token usage and whether it was cut at
maxTokens, kept for CACHE_TTL_SECONDS (7 days unless set). Only real answers are cached: a
failed request raises before anything is written, and an empty answer or one the provider's
content filter withheld is never kept (it may well be different when asked again).

A hit sends nothing: it counts in usage.cacheHits, its price at the model's pricing in
usage.cacheSavedUSD, and nothing in costUSD or the budget. The lookups of the workers that
ask in the same event-loop turn go to Redis as one MGET, and the writes as one pipeline, so
a warm re-run costs a round trip per batch, not per sample.

The cache is never what stops a run: when Redis is down, refuses the password or is out of
memory, the sample goes to the model, nothing is sent to Redis for RETRY_AFTER_SECONDS after
the failure (no hot loop), and `unavailable` says why, for the shard summary
(cacheUnavailable) and the local report. The URL's password is registered for redaction and
never shown: messages name the cache by its URL without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as redis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from eval_api.shard import ShardUsage
from eval_api.v1alpha1.execution import CACHE_ACROSS_RUNS
from eval_api.v1alpha1.model import EndpointSpec
from eval_runner import metrics
from eval_runner.client import DEFAULT_BASE_URLS, Completion, ModelClient
from eval_runner.prompt import Message
from eval_runner.secrets import SECRETS

DEFAULT_TTL_SECONDS = 7 * 24 * 3600
# After a failure, how long the cache is left alone: a dead Redis costs one timeout per
# this long, not one per sample.
RETRY_AFTER_SECONDS = 30.0
# A Redis that does not answer within this long counts as down; the model's own timeout is
# usually far longer.
SOCKET_TIMEOUT_SECONDS = 2.0
# How long the end of a run waits for the writes still queued.
CLOSE_TIMEOUT_SECONDS = 5.0
# v2: the whole base URL and the run are in the key.
KEY_PREFIX = "evals:response:v2:"
URL_SCHEMES = ("redis", "rediss")
DEFAULT_PORTS = {"http": 80, "https": 443}

log = structlog.get_logger()


class CacheSettingsError(ValueError):
    """The cache URL is unusable; the message never holds the URL's password."""


def endpoint_url(model: EndpointSpec) -> str:
    """The base URL as the key holds it: scheme, host, port, path and query, spelled one way
    (host in lower case, the default port written out, no trailing slash); never the user
    info, which is a credential, not the endpoint."""
    parts = urlsplit(model.base_url or DEFAULT_BASE_URLS[model.provider])
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6
    port = parts.port or DEFAULT_PORTS.get(scheme)
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{host}:{port}{parts.path.rstrip('/')}{query}"


def cache_key(
    model: EndpointSpec, messages: list[Message], repeat: int = 0, *, run: str | None
) -> str:
    """The key of one request: equal keys mean the model would be asked exactly the same, in
    the same run (`run`), or in any run when `run` is None (reuse AcrossRuns)."""
    identity = {
        "provider": model.provider,
        "url": endpoint_url(model),
        "model": model.name,
        # Every parameter, set or not: a parameter added later changes no existing key.
        "parameters": model.parameters.model_dump(mode="json", by_alias=True),
        "messages": messages,
        "repeat": repeat,
        "run": run,
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return KEY_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    text: str
    input_tokens: int
    output_tokens: int
    truncated: bool

    def encode(self) -> bytes:
        value = {
            "text": self.text,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "truncated": self.truncated,
        }
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def decode(cls, raw: bytes) -> CachedAnswer | None:
        """The answer in a cached value; None (a miss) for anything unreadable."""
        try:
            value = json.loads(raw)
            return cls(
                str(value["text"]),
                int(value["inputTokens"]),
                int(value["outputTokens"]),
                bool(value["truncated"]),
            )
        except (ValueError, TypeError, KeyError):
            return None


def tls_url(url: str, ca_file: str | None) -> tuple[str, dict[str, Any]]:
    """The URL and redis-py's TLS options for a server whose certificate `ca_file` signed."""
    if not ca_file:
        return url, {}
    if url.startswith("redis://"):
        url = "rediss://" + url.removeprefix("redis://")
    return url, {"ssl_ca_certs": ca_file, "ssl_cert_reqs": "required", "ssl_check_hostname": True}


def redacted_url(url: str) -> str:
    """The cache URL as messages show it: without its password (and validated)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CacheSettingsError(
            "the cache URL is not a valid URL (its value is not shown)"
        ) from None
    if parts.scheme not in URL_SCHEMES or not parts.hostname:
        raise CacheSettingsError(
            "the cache URL must be redis://[:password@]host[:port][/db] or rediss://... "
            "(its value is not shown)"
        )
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{parts.hostname}:{port or 6379}{parts.path or '/0'}"


class ResponseCache:
    """The cache of one run: `run` (evaluation uid and run id) scopes the keys of a run whose
    spec reuses answers only within it."""

    def __init__(
        self,
        client: Any,  # redis.asyncio.Redis
        *,
        run: str,
        where: str,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        retry_after_seconds: float = RETRY_AFTER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run = run
        self.where = where
        self.ttl_seconds = ttl_seconds
        self.unavailable: str | None = None  # why, once the cache failed
        self._client = client
        self._retry_after = retry_after_seconds
        self._clock = clock
        self._paused_until: float | None = None
        self._lookups: list[tuple[str, asyncio.Future[CachedAnswer | None]]] = []
        self._writes: list[tuple[str, bytes]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._hits = metrics.CACHE_LOOKUPS.labels("hit")
        self._misses = metrics.CACHE_LOOKUPS.labels("miss")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        run: str,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        max_connections: int = 16,
        ca_file: str | None = None,
    ) -> ResponseCache:
        """`ca_file`: the server's certificate is verified against this CA (its name too), the
        URL taken as rediss:// (an EvalSuite's managed cache with spec.tls)."""
        SECRETS.add_url(url)
        where = redacted_url(url)
        url, tls = tls_url(url, ca_file)
        # A blocking pool: a batch waits for a free connection rather than failing (with more
        # batches in flight than connections, redis-py's default pool raises).
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=SOCKET_TIMEOUT_SECONDS,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
            # No retries inside redis-py: a failure pauses the cache instead (see _failed).
            retry=Retry(NoBackoff(), 0),
            **tls,
        )
        return cls(redis.Redis(connection_pool=pool), run=run, where=where, ttl_seconds=ttl_seconds)

    def usable(self) -> bool:
        return self._paused_until is None or self._clock() >= self._paused_until

    async def get(self, key: str) -> CachedAnswer | None:
        """The cached answer, or None: a miss, or the cache unavailable (then nothing is
        asked of Redis)."""
        if not self.usable():
            metrics.CACHE_LOOKUPS.labels("skipped").inc()
            return None
        future: asyncio.Future[CachedAnswer | None] = asyncio.get_running_loop().create_future()
        self._lookups.append((key, future))
        if len(self._lookups) == 1:
            self._spawn(self._lookup_batch())
        return await future

    def put(self, key: str, completion: Completion) -> None:
        """Keep the model's answer (written with the others of this event-loop turn); not an
        empty or filtered one: asked again, the model may well answer."""
        if not self.usable() or not completion.text.strip() or completion.filtered:
            return
        answer = CachedAnswer(
            completion.text, completion.input_tokens, completion.output_tokens, completion.truncated
        )
        self._writes.append((key, answer.encode()))
        if len(self._writes) == 1:
            self._spawn(self._write_batch())

    async def close(self) -> None:
        """Wait (boundedly) for the writes still queued, then close the connections."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CLOSE_TIMEOUT_SECONDS)
        for task in set(self._tasks):
            task.cancel()
        try:
            await self._client.aclose()
            await self._client.connection_pool.disconnect()
        except (RedisError, OSError):
            pass  # closing a connection to a dead server

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lookup_batch(self) -> None:
        await asyncio.sleep(0)  # every worker of this turn adds its key first
        batch, self._lookups = self._lookups, []
        values: list[bytes | None] = [None] * len(batch)
        failed = True
        try:
            values = await self._client.mget([key for key, _ in batch])
            failed = False
        except (RedisError, OSError, TimeoutError) as err:
            self._failed(err, "get")
        finally:
            # Every waiting worker gets an answer, whatever happened (a miss at worst).
            for (_, future), raw in zip(batch, values, strict=True):
                answer = CachedAnswer.decode(raw) if raw is not None else None
                if not failed:
                    (self._hits if answer is not None else self._misses).inc()
                if not future.done():
                    future.set_result(answer)

    async def _write_batch(self) -> None:
        await asyncio.sleep(0)
        batch, self._writes = self._writes, []
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in batch:
                    pipe.set(key, value, ex=self.ttl_seconds)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as err:
            self._failed(err, "set")

    def _failed(self, err: BaseException, operation: str) -> None:
        metrics.CACHE_ERRORS.labels(operation).inc()
        self._paused_until = self._clock() + self._retry_after
        detail = SECRETS.redact(f"{type(err).__name__}: {err}")
        if self.unavailable is None:
            log.warning(
                "the response cache is unavailable; going on without it",
                cache=self.where,
                error=detail,
                retry_after_seconds=self._retry_after,
            )
        self.unavailable = (
            f"the response cache {self.where} was unavailable ({detail}); the run went on "
            f"without it, trying it again {self._retry_after:g} s after each failure"
        )


class CachedModelClient:
    """A ModelClient that asks the cache first and keeps what the model answers; `reuse` is
    the spec's execution.cache.reuse."""

    def __init__(
        self,
        model: ModelClient,
        cache: ResponseCache,
        spec: EndpointSpec,
        usage: ShardUsage,
        reuse: str,
    ) -> None:
        self._model = model
        self._cache = cache
        self._spec = spec
        self._usage = usage
        self._saved = Decimal(usage.cache_saved_usd)
        self._run = None if reuse == CACHE_ACROSS_RUNS else cache.run

    async def complete(self, messages: list[Message]) -> Completion:
        key = cache_key(self._spec, messages, run=self._run)
        return await self._cached(key, lambda: self._model.complete(messages))

    async def complete_prompt(self, prompt: str, *, stop: list[str], max_tokens: int) -> Completion:
        """The completions API's answer (an lm-eval generate_until task), cached like a chat
        answer: the key holds the prompt, its stop sequences and output bound."""
        request: Any = [{"completions": prompt, "stop": stop, "max_tokens": max_tokens}]
        key = cache_key(self._spec, request, run=self._run)
        model: Any = self._model
        return await self._cached(
            key, lambda: model.complete_prompt(prompt, stop=stop, max_tokens=max_tokens)
        )

    async def loglikelihood(self, context: str, continuation: str) -> Any:
        """Log-likelihoods are asked every time: the cache keeps answers' text, not
        log-probabilities."""
        model: Any = self._model
        return await model.loglikelihood(context, continuation)

    async def loglikelihoods(self, context: str, continuations: list[str]) -> Any:
        model: Any = self._model
        return await model.loglikelihoods(context, continuations)

    async def _cached(self, key: str, ask: Callable[[], Awaitable[Completion]]) -> Completion:
        started = time.perf_counter()
        cached = await self._cache.get(key)
        if cached is None:
            completion = await ask()
            self._cache.put(key, completion)
            return completion
        usage = self._usage
        usage.cache_hits += 1
        if cached.truncated:
            usage.truncated += 1
        if self._spec.pricing is not None:
            self._saved += self._spec.pricing.cost(cached.input_tokens, cached.output_tokens)
            usage.cache_saved_usd = format(self._saved.normalize(), "f")
        return Completion(
            cached.text,
            cached.input_tokens,
            cached.output_tokens,
            cached.truncated,
            time.perf_counter() - started,
            cache_hit=True,
        )
