"""The HTTP layer under the model client: one aiohttp session per process, on uvloop.

aiohttp rather than a client of our own: its parser (llhttp) rejects what a real server,
proxy or load balancer can get wrong (conflicting Content-Length, malformed chunk sizes, a
body cut by a reset), it honours `Connection: close` in any form, encodes IDN hosts, speaks
gzip, and goes through HTTP(S) proxies. The README's "Design choices" has the measured cost.

`Transport` is the seam the model client depends on (its unit tests script it);
`AiohttpTransport` is the only implementation.
"""

from __future__ import annotations

import asyncio
import base64
import errno as errnos
import os
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
from yarl import URL

from eval_runner.tls import ssl_context

# Idle keep-alive connections are closed after this long: below uvicorn's default of 5 s (vLLM,
# LiteLLM), nginx's 75 s and the 60-350 s of cloud load balancers, so the far end never drops a
# connection the runner is about to reuse (a load balancer that forgets an idle flow answers it
# with nothing at all, which would cost a whole timeoutSeconds).
IDLE_SECONDS = 4.0
# Connecting is bounded apart from the whole request (at most half of it): a host that drops
# SYNs fails in this time, not after timeoutSeconds.
CONNECT_SECONDS = 10.0
USER_AGENT = "eval-runner (aiohttp)"
_JSON = {"Content-Type": "application/json"}
# How a kept-alive connection that the server closed shows when it is reused (a failed
# connect is a ClientConnectorError, a subclass of ClientOSError, and is told apart below).
_STALE = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientConnectionResetError,
    aiohttp.ClientOSError,
)


@dataclass(frozen=True, slots=True)
class Proxy:
    """How to reach an origin: the proxy, if any, and where its credentials go (in the request
    itself through a plain HTTP proxy, in the CONNECT request of an HTTPS tunnel)."""

    url: URL | None = None
    request_headers: Mapping[str, str] = field(default_factory=dict)
    connect_headers: Mapping[str, str] | None = None


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes
    # Case-insensitive: Retry-After, Location and the providers' rate-limit headers are read.
    headers: Mapping[str, str]


class TransportTimeout(Exception):
    """No complete answer within the request's timeout: the server may have processed it."""


class TransportError(Exception):
    """The exchange failed: reset, closed early, or an answer that is not valid HTTP."""


class ConnectFailed(TransportError):
    """No connection could be made (refused, unresolvable, TLS handshake failed, connect
    timeout): nothing was sent."""

    def __init__(self, target: str, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(f"cannot connect to {target}: {reason}")
        self.target = target  # host:port
        self.reason = reason
        # No answer at all within the connect bound (dropped SYNs, a slow network), as
        # opposed to a refusal, an unknown name or a failed handshake: answers that say no.
        self.timed_out = timed_out


class Transport(Protocol):
    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_seconds: float
    ) -> HttpResponse:
        """POST a JSON body; raises TransportTimeout, ConnectFailed or TransportError.
        Redirects are returned as they are, never followed."""
        ...


def proxy_for(url: URL) -> Proxy:
    """The proxy for `url` from HTTP_PROXY / HTTPS_PROXY / NO_PROXY (as curl and requests read
    them), with a Proxy-Authorization header when the proxy URL carries credentials."""
    host = url.raw_host or ""
    if urllib.request.proxy_bypass(host):
        return Proxy()
    proxy = urllib.request.getproxies().get(url.scheme)
    if not proxy:
        return Proxy()
    proxy_url = URL(proxy)
    if proxy_url.user is None:
        return Proxy(proxy_url)
    credentials = f"{proxy_url.user}:{proxy_url.password or ''}".encode()
    auth = {"Proxy-Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}
    if url.scheme == "https":
        return Proxy(proxy_url.with_user(None), connect_headers=auth)
    return Proxy(proxy_url.with_user(None), request_headers=auth)


def connect_reason(err: aiohttp.ClientConnectorError) -> str:
    if isinstance(err, aiohttp.ClientConnectorDNSError):
        return "the host name does not resolve"
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate verification failed ({err.certificate_error})"
    if isinstance(err, aiohttp.ClientSSLError):
        return f"TLS handshake failed ({err.os_error})"
    code = err.os_error.errno
    if code in errnos.errorcode:
        return os.strerror(code).lower()
    return str(err.os_error) or type(err.os_error).__name__


class AiohttpTransport:
    """POSTs through one aiohttp session. A request whose connection the server closed or
    reset before any answer (a kept-alive connection the server timed out just as it was
    reused) is sent again at once on a fresh connection, once: RFC 9112 §9.3.1 allows it for
    a request that was never processed, and it says nothing about the endpoint's health."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        # Parsed once per URL (a run posts to one or two): the URL, its proxy, its headers.
        self._targets: dict[str, tuple[URL, Proxy, dict[str, str]]] = {}

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_seconds: float
    ) -> HttpResponse:
        target = self._targets.get(url)
        if target is None:
            parsed = URL(url)
            proxy = proxy_for(parsed)
            target = self._targets[url] = (parsed, proxy, {**_JSON, **proxy.request_headers})
        parsed, proxy, base_headers = target
        limits = self._timeouts.get(timeout_seconds)
        if limits is None:
            # Connecting ends well before the whole request may: a failed connect is then
            # always told apart from an answer that never came (which may be billed).
            limits = self._timeouts[timeout_seconds] = aiohttp.ClientTimeout(
                total=timeout_seconds, connect=min(timeout_seconds / 2, CONNECT_SECONDS)
            )
        for attempt in (1, 2):
            try:
                return await self._post(parsed, {**base_headers, **headers}, body, limits, proxy)
            except _STALE as err:
                if isinstance(err, aiohttp.ClientConnectorError):
                    raise ConnectFailed(f"{err.host}:{err.port}", connect_reason(err)) from err
                if attempt == 2:
                    raise TransportError(_describe(err)) from err
            except aiohttp.ConnectionTimeoutError as err:
                where = f"{parsed.host}:{parsed.port}"
                raise ConnectFailed(
                    where, f"no connection within {limits.connect:g}s", timed_out=True
                ) from err
            except TimeoutError as err:
                raise TransportTimeout(f"no answer within {timeout_seconds:g}s") from err
            except aiohttp.ClientError as err:
                raise TransportError(_describe(err)) from err
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _post(
        self,
        url: URL,
        headers: Mapping[str, str],
        body: bytes,
        limits: aiohttp.ClientTimeout,
        proxy: Proxy,
    ) -> HttpResponse:
        async with self._session.post(
            url,
            data=body,
            headers=headers,
            timeout=limits,
            allow_redirects=False,
            proxy=proxy.url,
            proxy_headers=proxy.connect_headers,
        ) as response:
            closed = _closed_future(response)
            body = await response.read()
            if closed is not None and closed.done() and closed.exception() is not None:
                raise TransportError(
                    "the connection was reset before the end of an answer framed by its close"
                )
            return HttpResponse(response.status, body, response.headers)


def _closed_future(response: aiohttp.ClientResponse) -> asyncio.Future[None] | None:
    """For an answer without Content-Length or chunked coding (its end is the connection's
    close), the future of that close: aiohttp takes a reset for the end of such a body, and
    only the close's outcome tells a cut answer from a whole one."""
    framed = response.content_length is not None or "chunked" in response.headers.get(
        "Transfer-Encoding", ""
    )
    if framed or response.connection is None:
        return None
    closed = response.connection.protocol.closed  # type: ignore[union-attr]
    if closed is not None:
        # Read in every case, so that a reset after we are done is never reported as unread.
        closed.add_done_callback(lambda future: future.cancelled() or future.exception())
    return closed


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def session(
    *, ca_bundle: Path | None = None, max_connections: int = 100, idle_seconds: float = IDLE_SECONDS
) -> aiohttp.ClientSession:
    """The tuned session: a pool of `max_connections` (the sum of the endpoints' concurrency
    limits, so no request waits for a socket), idle connections closed after `idle_seconds`,
    no cookie jar (an API client must not carry state from one request to the next), gzip
    accepted, and proxies resolved once per origin by the transport (aiohttp's trust_env would
    read the environment and ~/.netrc in a thread on every request)."""
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,
        keepalive_timeout=idle_seconds,
        ssl=ssl_context(ca_bundle),
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
        auto_decompress=True,
        trust_env=False,
    )


@asynccontextmanager
async def open_transport(
    *, ca_bundle: Path | None = None, max_connections: int = 100, idle_seconds: float = IDLE_SECONDS
) -> AsyncIterator[Transport]:
    """The process's one HTTP session: connections are reused across samples and endpoints.
    Concurrency is bounded above it by each endpoint's adaptive limiter."""
    async with session(
        ca_bundle=ca_bundle, max_connections=max_connections, idle_seconds=idle_seconds
    ) as http:
        yield AiohttpTransport(http)
    # Let the connector close its sockets before the loop goes away.
    await asyncio.sleep(0)
