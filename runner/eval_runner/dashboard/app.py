"""The dashboard's HTTP server (aiohttp.web): routes, rate limiting, metrics, health, TLS.

- `/healthz`: the process answers. `/readyz`: the store (and the cache, when there is one)
  answer, per component, as JSON; 503 otherwise, so a replica that lost the store leaves the
  Service. `/metrics`: Prometheus text. These three are never rate limited (probes, scrapes).
- `/api/v1/...`: the JSON API (eval_runner.dashboard.openapi describes it, at
  `/api/v1/openapi.json`); errors are a Problem JSON with a CamelCase reason.
- `/`, `/suites/...`, `/runs/...`, `/compare`: the HTML pages, plots drawn on the server.

The store is read through a pool whose sessions are read-only (default_transaction_read_only)
with the read-only role's credentials the operator gives the pod. A leaderboard or history
answer is kept for `response_seconds` (one computation per interval however many clients ask:
concurrent requests for the same page wait for the one in flight), on top of the kept
summaries of finished runs (eval_runner.dashboard.queries.Summaries).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as redis
from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from eval_api.store.settings import StoreSettings, StoreSettingsError
from eval_runner.cache import tls_url
from eval_runner.dashboard import models, openapi, queries, svg
from eval_runner.dashboard.ratelimit import Network, TokenBuckets, client_address
from eval_runner.secrets import SECRETS

STORE_TIMEOUT_SECONDS = 5.0
CACHE_TIMEOUT_SECONDS = 2.0
STATS_INTERVAL_SECONDS = 60.0
CERT_CHECK_SECONDS = 30.0
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
DURATION_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
# No script runs on these pages; styles and SVG are inline.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
STATS = """
SELECT
  (SELECT count(*) FROM runs r
   WHERE r.succeeded_at IS NULL AND r.started_at > now() - interval '1 day'
     AND EXISTS (SELECT 1 FROM samples s WHERE s.evaluation_uid = r.evaluation_uid
                 AND s.run = r.run AND s.created_at > now() - interval '5 minutes')) AS active,
  (SELECT array_agg(extract(epoch FROM succeeded_at - started_at)::float8) FROM runs
   WHERE succeeded_at > now() - interval '1 day') AS durations,
  (SELECT avg(s.cache_hit::int)::float8 FROM runs r
   JOIN samples s ON s.evaluation_uid = r.evaluation_uid AND s.run = r.run
   WHERE r.started_at > now() - interval '1 hour') AS cache_hit_ratio
"""


@dataclass(frozen=True)
class DashboardConfig:
    store: StoreSettings
    # The cache, for /readyz only: a URL, or host:port without a password (the dashboard
    # of a suite holds none; a NOAUTH answer counts as the server answering).
    cache_url: str | None = None
    cache_ca_file: str | None = None  # the cache's TLS (rediss), verified against this CA
    namespace: str | None = None  # the suite this dashboard was deployed for: the home page
    suite: str | None = None
    rate: float = 20.0  # requests a second per client, after a burst of `burst`
    burst: int = 40
    # Peers whose X-Forwarded-For names the client (an ingress): see ratelimit.client_address.
    trusted_proxies: tuple[Network, ...] = ()
    response_seconds: float = 2.0
    pool_size: int = 10
    tls_cert: str | None = None
    tls_key: str | None = None


class StoreUnavailable(Exception):
    pass


class Store:
    """The read-only pool, made on first use (a dashboard starts before its store is up)."""

    def __init__(self, settings: StoreSettings, size: int) -> None:
        self.settings = settings
        self.size = size
        self.pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def _pool(self) -> asyncpg.Pool:
        if self.pool is not None:
            return self.pool
        async with self._lock:
            if self.pool is None:
                try:
                    self.pool = await asyncpg.create_pool(
                        **self.settings.connect_kwargs(),
                        min_size=1,
                        max_size=self.size,
                        timeout=STORE_TIMEOUT_SECONDS,
                        command_timeout=30,
                        server_settings={
                            "default_transaction_read_only": "on",
                            "application_name": "eval-dashboard",
                        },
                    )
                except (OSError, TimeoutError, asyncpg.PostgresError, ssl.SSLError) as err:
                    raise StoreUnavailable(_why(self.settings, err)) from None
                except StoreSettingsError as err:  # a CA file that is not there (yet)
                    raise StoreUnavailable(SECRETS.redact(str(err))) from None
        return self.pool

    @contextlib.asynccontextmanager
    async def connection(self) -> Any:
        pool = await self._pool()
        try:
            async with pool.acquire(timeout=STORE_TIMEOUT_SECONDS) as conn:
                yield conn
        except (
            OSError,
            TimeoutError,
            asyncpg.InterfaceError,
            asyncpg.PostgresConnectionError,
        ) as err:
            raise StoreUnavailable(_why(self.settings, err)) from None

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


def _why(settings: StoreSettings, err: BaseException) -> str:
    detail = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return SECRETS.redact(f"{settings.display()}: {type(err).__name__}: {detail}")


class ResponseCache:
    """Answers kept for `ttl` seconds by path and query; one computation at a time per key."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._kept: dict[str, tuple[float, bytes, str, str]] = {}
        self._flying: dict[str, asyncio.Future[tuple[bytes, str, str]]] = {}

    async def get(
        self, key: str, make: Callable[[], Awaitable[tuple[bytes, str]]]
    ) -> tuple[bytes, str, str]:
        now = time.monotonic()
        kept = self._kept.get(key)
        if kept is not None and kept[0] > now:
            return kept[1], kept[2], kept[3]
        flying = self._flying.get(key)
        if flying is not None:
            return await asyncio.shield(flying)
        future: asyncio.Future[tuple[bytes, str, str]] = asyncio.get_running_loop().create_future()
        self._flying[key] = future
        try:
            body, content_type = await make()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            if self.ttl > 0:
                self._kept[key] = (time.monotonic() + self.ttl, body, content_type, etag)
                if len(self._kept) > 1000:
                    self._kept = {k: v for k, v in self._kept.items() if v[0] > now}
            future.set_result((body, content_type, etag))
            return body, content_type, etag
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: waiters get it, nobody logs it as unhandled
            raise
        finally:
            del self._flying[key]


class StoreStats:
    """What the store says about the evaluations (active, durations, cache hits), refreshed
    every STATS_INTERVAL_SECONDS by one query, shown on /metrics without touching the store.
    Every replica shows the same numbers: aggregate them with max(), not sum()."""

    def __init__(self) -> None:
        self.active: float | None = None
        self.durations: list[float] = []
        self.cache_hit_ratio: float | None = None

    async def refresh(self, store: Store) -> None:
        async with store.connection() as conn:
            row = await conn.fetchrow(STATS)
        self.active = float(row["active"])
        self.durations = list(row["durations"] or [])
        self.cache_hit_ratio = row["cache_hit_ratio"]


class _Collector:
    """Gauges read at scrape time: the pool's connections and the store's last StoreStats."""

    def __init__(self, store: Store, stats: StoreStats) -> None:
        self.store, self.stats = store, stats

    def collect(self) -> Any:
        pool = self.store.pool
        connections = GaugeMetricFamily(
            "eval_dashboard_db_pool_connections",
            "The dashboard's store connections by state (max is the pool's bound).",
            labels=["state"],
        )
        size = pool.get_size() if pool is not None else 0
        idle = pool.get_idle_size() if pool is not None else 0
        connections.add_metric(["in_use"], size - idle)
        connections.add_metric(["idle"], idle)
        connections.add_metric(["max"], self.store.size)
        yield connections
        if self.stats.active is not None:
            yield GaugeMetricFamily(
                "eval_active_evaluations",
                "Runs not yet succeeded that stored a sample in the last 5 minutes.",
                value=self.stats.active,
            )
        if self.stats.cache_hit_ratio is not None:
            yield GaugeMetricFamily(
                "eval_cache_hit_ratio",
                "Share of the last hour's samples answered from the response cache.",
                value=self.stats.cache_hit_ratio,
            )
        buckets, total = [], 0.0
        for bound in DURATION_BUCKETS:
            buckets.append((str(bound), sum(1 for d in self.stats.durations if d <= bound)))
        buckets.append(("+Inf", len(self.stats.durations)))
        total = sum(self.stats.durations)
        yield HistogramMetricFamily(
            "eval_evaluation_duration_seconds",
            "Start to success of the runs that succeeded in the last day.",
            buckets=buckets,
            sum_value=total,
        )


def _cache_client(where: str, ca_file: str | None) -> redis.Redis:
    if "://" not in where:
        where = f"redis://{where}"  # host:port, no password
    url, tls = tls_url(where, ca_file)
    return redis.Redis.from_url(
        url,
        socket_timeout=CACHE_TIMEOUT_SECONDS,
        socket_connect_timeout=CACHE_TIMEOUT_SECONDS,
        **tls,
    )


def _problem(status: int, reason: str, message: str, **headers: str) -> web.Response:
    body = models.Problem(status=status, reason=reason, message=message).to_json()
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _bool(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise queries.BadRequest(f"{name} must be true or false")
    return value in ("true", "1")


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise queries.BadRequest(f"{name} must be a number") from None
    if not low <= value <= high:
        raise queries.BadRequest(f"{name} must be between {low:g} and {high:g}")
    return value


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise queries.BadRequest(f"{name} must be a whole number between {low} and {high}")
    return int(text)


def _required(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise queries.BadRequest(f"{name} is required")
    return value


class Dashboard:
    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.store = Store(config.store, config.pool_size)
        self.cache = (
            _cache_client(config.cache_url, config.cache_ca_file) if config.cache_url else None
        )
        self.summaries = queries.Summaries()
        self.responses = ResponseCache(config.response_seconds)
        self.buckets = TokenBuckets(config.rate, config.burst)
        self.stats = StoreStats()
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "Requests answered, by method, route and status code.",
            ["method", "route", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer a request, by route.",
            ["route"],
            registry=self.registry,
        )
        self.registry.register(_Collector(self.store, self.stats))
        self.templates = Environment(
            loader=PackageLoader("eval_runner.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(
            leaderboard_chart=svg.leaderboard_chart,
            history_chart=svg.history_chart,
            changes_chart=svg.changes_chart,
        )
        self.templates.filters["num"] = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
        self._tasks: list[asyncio.Task[None]] = []

    # --- the application ------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._measure, self._limit, self._errors])
        get = [
            ("/healthz", self.healthz),
            ("/readyz", self.readyz),
            ("/metrics", self.metrics),
            ("/api/v1/openapi.json", self.openapi),
            ("/api/v1/suites", self.api_suites),
            ("/api/v1/suites/{namespace}/{suite}/leaderboard", self.api_leaderboard),
            ("/api/v1/suites/{namespace}/{suite}/history", self.api_history),
            ("/api/v1/evaluations", self.api_evaluations),
            ("/api/v1/evaluations/{namespace}/{name}/runs", self.api_runs),
            ("/api/v1/runs/{uid}/{run}", self.api_run),
            ("/api/v1/runs/{uid}/{run}/samples", self.api_samples),
            ("/api/v1/compare", self.api_compare),
            ("/", self.page_home),
            ("/suites/{namespace}/{suite}", self.page_suite),
            ("/runs/{uid}/{run}", self.page_run),
            ("/compare", self.page_compare),
        ]
        for path, handler in get:
            app.router.add_get(path, handler, allow_head=True)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        self._tasks.append(asyncio.create_task(self._refresh_stats()))

    async def _stop(self, app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()
        if self.cache is not None:
            await self.cache.aclose()

    async def _refresh_stats(self) -> None:
        while True:
            # Whatever stops a refresh (the store down, its settings wrong) stops only that
            # refresh: /readyz says what is wrong, /metrics keeps the last figures.
            with contextlib.suppress(Exception):
                await self.stats.refresh(self.store)
            await asyncio.sleep(STATS_INTERVAL_SECONDS)

    @web.middleware
    async def _measure(self, request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route.resource
        template = route.canonical if route is not None else "unmatched"
        code = 500
        try:
            response = await handler(request)
            code = response.status
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response
        except web.HTTPException as err:
            code = err.status
            raise
        finally:
            self.requests.labels(request.method, template, str(code)).inc()
            self.duration.labels(template).observe(time.perf_counter() - started)

    @web.middleware
    async def _limit(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in UNLIMITED_PATHS:
            return await handler(request)
        client = client_address(
            request.remote,
            request.headers.getall("X-Forwarded-For", []),
            self.config.trusted_proxies,
        )
        wait = self.buckets.take(client)
        if wait > 0:
            return _problem(
                429,
                "TooManyRequests",
                f"at most {self.buckets.rate:g} requests a second per client "
                f"(bursts of {self.buckets.burst}); retry later",
                **{"Retry-After": self.buckets.retry_after(wait)},
            )
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except queries.BadRequest as err:
            return _problem(400, "BadRequest", str(err))
        except queries.NotFound as err:
            return _problem(404, "NotFound", str(err))
        except StoreUnavailable as err:
            return _problem(503, "StoreUnavailable", f"the store does not answer: {err}")
        except asyncpg.PostgresError as err:
            message = SECRETS.redact(f"{type(err).__name__}: {err}")
            return _problem(503, "StoreError", message)

    # --- health ----------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _component(
        self, check: Callable[[], Awaitable[Any]], *, required: bool
    ) -> models.ComponentHealth:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(check(), STORE_TIMEOUT_SECONDS)
        except Exception as err:  # any failure is this component's, told by class and text
            detail = SECRETS.redact(str(err) or type(err).__name__)
            return models.ComponentHealth(status="error", required=required, message=detail)
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return models.ComponentHealth(status="ok", required=required, latency_ms=elapsed)

    async def _ping_cache(self) -> None:
        assert self.cache is not None
        try:
            await self.cache.ping()
        except redis.AuthenticationError:
            pass  # it answered: without a password this is as far as the dashboard goes
        except redis.ResponseError as err:
            if not str(err).startswith("NOAUTH"):
                raise

    async def readyz(self, request: web.Request) -> web.Response:
        """503 when the store does not answer (every page needs it); a cache that does not
        answer makes the answer degraded, not unready: no page needs the cache."""

        async def store() -> None:
            async with self.store.connection() as conn:
                await conn.fetchval("SELECT 1")

        components = {"store": await self._component(store, required=True)}
        if self.cache is not None:
            components["cache"] = await self._component(self._ping_cache, required=False)
        else:
            components["cache"] = models.ComponentHealth(status="disabled", required=False)
        failed = [c for c in components.values() if c.status == "error"]
        status = "error" if any(c.required for c in failed) else "degraded" if failed else "ok"
        body = models.Readiness(status=status, components=components)
        return web.Response(
            status=503 if status == "error" else 200,
            body=body.to_json(),
            content_type="application/json",
        )

    async def metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi.document())

    # --- the JSON API ----------------------------------------------------------------------

    async def _kept(
        self, request: web.Request, make: Callable[[], Awaitable[tuple[bytes, str]]]
    ) -> web.Response:
        body, content_type, etag = await self.responses.get(request.path_qs, make)
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        response = web.Response(body=body, headers={"ETag": etag})
        response.headers["Content-Type"] = content_type
        return response

    async def _json(self, make: Callable[[Any], Awaitable[models.Wire]]) -> tuple[bytes, str]:
        async with self.store.connection() as conn:
            found = await make(conn)
        return found.to_json(), "application/json"

    async def api_suites(self, request: web.Request) -> web.Response:
        return await self._kept(request, lambda: self._json(queries.suites))

    async def api_leaderboard(self, request: web.Request) -> web.Response:
        ns, suite = request.match_info["namespace"], request.match_info["suite"]
        return await self._kept(
            request,
            lambda: self._json(lambda c: queries.leaderboard(c, self.summaries, ns, suite)),
        )

    async def api_history(self, request: web.Request) -> web.Response:
        ns, suite = request.match_info["namespace"], request.match_info["suite"]
        cell = request.query.get("cell")
        limit = _int(request, "limit", 30, 1, 500)
        return await self._kept(
            request,
            lambda: self._json(
                lambda c: queries.history(c, self.summaries, ns, suite, cell, limit)
            ),
        )

    async def api_evaluations(self, request: web.Request) -> web.Response:
        ns, suite = request.query.get("namespace"), request.query.get("suite")
        return await self._kept(
            request, lambda: self._json(lambda c: queries.evaluations(c, ns, suite))
        )

    async def api_runs(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        limit = _int(request, "limit", 20, 1, 200)
        body, content_type = await self._json(
            lambda c: queries.runs_of_evaluation(c, self.summaries, ns, name, limit)
        )
        return web.Response(body=body, content_type="application/json")

    async def api_run(self, request: web.Request) -> web.Response:
        uid, run = request.match_info["uid"], request.match_info["run"]
        body, _ = await self._json(lambda c: queries.run(c, self.summaries, uid, run))
        return web.Response(body=body, content_type="application/json")

    def _sample_query(self, request: web.Request) -> dict[str, Any]:
        return {
            "cursor": request.query.get("cursor"),
            "limit": _int(request, "limit", 50, 1, queries.MAX_PAGE),
            "scorer": request.query.get("scorer"),
            "wrong": _bool(request, "wrong"),
            "errored": _bool(request, "errored"),
            "below": _number(request, "below", queries.RIGHT_AT, 0.0, 1.0),
        }

    async def api_samples(self, request: web.Request) -> web.Response:
        uid, run = request.match_info["uid"], request.match_info["run"]
        options = self._sample_query(request)
        body, _ = await self._json(lambda c: queries.samples(c, uid, run, **options))
        return web.Response(body=body, content_type="application/json")

    def _comparison_query(self, request: web.Request) -> dict[str, Any]:
        return {
            "baseline": (_required(request, "baselineUid"), _required(request, "baselineRun")),
            "candidate": (
                _required(request, "candidateUid"),
                _required(request, "candidateRun"),
            ),
            "alpha": _number(request, "alpha", 0.05, 1e-9, 0.999999),
            "max_drop": _number(request, "maxDrop", 0.0, 0.0, 1.0),
        }

    async def api_compare(self, request: web.Request) -> web.Response:
        options = self._comparison_query(request)
        return await self._kept(
            request, lambda: self._json(lambda c: queries.compare(c, **options))
        )

    # --- the pages -------------------------------------------------------------------------

    def _page(self, template: str, **context: Any) -> tuple[bytes, str]:
        html = self.templates.get_template(template).render(**context)
        return html.encode(), "text/html; charset=utf-8"

    async def page_home(self, request: web.Request) -> web.Response:
        if self.config.namespace and self.config.suite:
            raise web.HTTPFound(f"/suites/{self.config.namespace}/{self.config.suite}")

        async def make() -> tuple[bytes, str]:
            async with self.store.connection() as conn:
                found = await queries.suites(conn)
                evaluations = await queries.evaluations(conn, None, None)
            return self._page("home.html", suites=found.items, evaluations=evaluations.items)

        return await self._kept(request, make)

    async def page_suite(self, request: web.Request) -> web.Response:
        ns, suite = request.match_info["namespace"], request.match_info["suite"]

        async def make() -> tuple[bytes, str]:
            async with self.store.connection() as conn:
                board = await queries.leaderboard(conn, self.summaries, ns, suite)
                past = await queries.history(conn, self.summaries, ns, suite, None, 30)
            previous = {cell.cell: cell.points[-2] for cell in past.cells if len(cell.points) > 1}
            return self._page("suite.html", board=board, history=past, previous=previous)

        return await self._kept(request, make)

    async def page_run(self, request: web.Request) -> web.Response:
        uid, run = request.match_info["uid"], request.match_info["run"]
        options = self._sample_query(request)
        async with self.store.connection() as conn:
            summary = await queries.run(conn, self.summaries, uid, run)
            scorer = options["scorer"] or summary.main_scorer
            worst = await queries.worst(conn, uid, run, scorer or "", 10) if scorer else []
            page = await queries.samples(conn, uid, run, **options)
        body, content_type = self._page(
            "run.html", run=summary, worst=worst, page=page, options=options
        )
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def page_compare(self, request: web.Request) -> web.Response:
        options = self._comparison_query(request)

        async def make() -> tuple[bytes, str]:
            async with self.store.connection() as conn:
                found = await queries.compare(conn, **options)
                base = await queries.run(conn, self.summaries, *options["baseline"])
                cand = await queries.run(conn, self.summaries, *options["candidate"])
            return self._page("compare.html", comparison=found, base=base, cand=cand)

        return await self._kept(request, make)


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


async def _reload_certificate(context: ssl.SSLContext, cert: str, key: str) -> None:
    """cert-manager renews the certificate in the mounted Secret: new handshakes use the new
    one, without a restart."""
    seen = os.stat(cert).st_mtime_ns
    while True:
        await asyncio.sleep(CERT_CHECK_SECONDS)
        with contextlib.suppress(OSError, ssl.SSLError):
            mtime = os.stat(cert).st_mtime_ns
            if mtime != seen:
                context.load_cert_chain(cert, key)
                seen = mtime


async def serve(config: DashboardConfig, host: str | None, port: int) -> None:
    dashboard = Dashboard(config)
    runner = web.AppRunner(dashboard.app(), access_log=None)
    await runner.setup()
    context = None
    reload: asyncio.Task[None] | None = None
    if config.tls_cert and config.tls_key:
        context = server_tls(config.tls_cert, config.tls_key)
        reload = asyncio.create_task(_reload_certificate(context, config.tls_cert, config.tls_key))
    site = web.TCPSite(runner, host, port, ssl_context=context)
    await site.start()
    scheme = "https" if context else "http"
    print(f"dashboard listening on {scheme}://{host or '*'}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        if reload is not None:
            reload.cancel()
        await runner.cleanup()
