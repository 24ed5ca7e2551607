"""The HTTP layer under the model client: one shared session per process.

Three implementations of one small interface, so `make bench` can compare them on equal terms
(`bench/run.py --client lean|aiohttp|httpx`); the runner uses the lean HTTP/1.1 client of
http1.py (see the README's "Design choices" for the measured figures).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import aiohttp
import httpx

from eval_runner.errors import PermanentError
from eval_runner.tls import default_ssl_context, verify_context

TransportKind = Literal["lean", "aiohttp", "httpx"]
TRANSPORTS: tuple[TransportKind, ...] = ("lean", "aiohttp", "httpx")
# The runner's switch between them; aiohttp is the choice behind an HTTP(S) proxy.
TRANSPORT_ENV = "EVAL_HTTP_CLIENT"


def transport_from_env(environ: Mapping[str, str] | None = None) -> TransportKind:
    """EVAL_HTTP_CLIENT: lean (default, fastest), aiohttp (honours HTTPS_PROXY/NO_PROXY) or
    httpx."""
    value = (os.environ if environ is None else environ).get(TRANSPORT_ENV) or "lean"
    for kind in TRANSPORTS:
        if value == kind:
            return kind
    raise PermanentError(
        "ConfigInvalid", f"{TRANSPORT_ENV}={value!r} is not one of {', '.join(TRANSPORTS)}"
    )


_JSON = {"Content-Type": "application/json"}


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes
    retry_after: str | None  # the Retry-After header, the only one the client reads


class TransportTimeout(Exception):
    """No complete answer within the request's timeout."""


class TransportError(Exception):
    """The connection failed: refused, reset, or closed in the middle of a body."""


class Transport(Protocol):
    async def post(
        self, url: str, headers: dict[str, str], body: bytes, timeout_seconds: float
    ) -> HttpResponse:
        """POST a JSON body; raises TransportTimeout or TransportError."""
        ...


class AiohttpTransport:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, timeout_seconds: float
    ) -> HttpResponse:
        limit = self._timeouts.get(timeout_seconds)
        if limit is None:
            limit = self._timeouts[timeout_seconds] = aiohttp.ClientTimeout(total=timeout_seconds)
        try:
            async with self._session.post(
                url, data=body, headers={**_JSON, **headers}, timeout=limit
            ) as response:
                data = await response.read()
                return HttpResponse(response.status, data, response.headers.get("Retry-After"))
        except TimeoutError as err:
            raise TransportTimeout(f"no answer within {timeout_seconds:g}s") from err
        except (aiohttp.ClientError, OSError) as err:
            raise TransportError(f"{type(err).__name__}: {err}") from err


class HttpxTransport:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, timeout_seconds: float
    ) -> HttpResponse:
        try:
            response = await self._client.post(
                url, content=body, headers={**_JSON, **headers}, timeout=timeout_seconds
            )
        except httpx.TimeoutException as err:
            raise TransportTimeout(f"no answer within {timeout_seconds:g}s") from err
        except httpx.TransportError as err:
            raise TransportError(f"{type(err).__name__}: {err}") from err
        return HttpResponse(
            response.status_code, response.content, response.headers.get("Retry-After")
        )


@asynccontextmanager
async def open_transport(
    kind: TransportKind = "lean",
    *,
    ca_bundle: Path | None = None,
    max_connections: int = 100,
) -> AsyncIterator[Transport]:
    """The process's one HTTP session: connections are reused across samples and endpoints.
    Concurrency is bounded above it by each endpoint's adaptive limiter; `max_connections` is
    their sum."""
    verify = verify_context(ca_bundle)
    if kind == "lean":
        from eval_runner.http1 import LeanTransport  # it imports this module's types

        lean = LeanTransport(
            verify if isinstance(verify, ssl.SSLContext) else default_ssl_context(),
            max_idle=max_connections,
        )
        try:
            yield lean
        finally:
            await lean.close()
    elif kind == "aiohttp":
        connector = aiohttp.TCPConnector(
            limit=max_connections, ssl=verify if verify is not True else True
        )
        # trust_env: HTTP(S)_PROXY and NO_PROXY apply, for endpoints behind a corporate proxy.
        async with aiohttp.ClientSession(connector=connector, trust_env=True) as session:
            yield AiohttpTransport(session)
            # Let the connector close its sockets before the loop goes away.
        await asyncio.sleep(0)
    elif kind == "httpx":
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        async with httpx.AsyncClient(limits=limits, verify=verify) as client:
            yield HttpxTransport(client)
    else:
        raise ValueError(f"unknown transport {kind!r}; known: {', '.join(TRANSPORTS)}")
