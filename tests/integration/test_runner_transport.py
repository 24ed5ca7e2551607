"""The runner's HTTP transport (aiohttp) against scripted servers on 127.0.0.1: framing,
keep-alive reuse and its limits, what adversarial servers, proxies and load balancers send,
redirects, gzip, timeouts and TLS."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trustme

from eval_api.shard import ShardUsage
from eval_api.v1alpha1 import ModelSpec
from eval_runner.client import HttpModelClient
from eval_runner.errors import PermanentError
from eval_runner.metrics import REQUESTS, RETRIES
from eval_runner.transport import (
    ConnectFailed,
    HttpResponse,
    Transport,
    TransportError,
    TransportTimeout,
    open_transport,
)

pytestmark = pytest.mark.integration

BODY = b'{"choices": [{"message": {"content": "4"}}]}'
RESET = object()  # in a script: abort the connection with a TCP reset
# A script answers one request: the pieces to write, each flushed on its own. None closes the
# connection, RESET resets it, a float sleeps that long.
Piece = bytes | float | object | None
Script = Callable[[bytes, int], list[Piece]]  # (request, its number on its connection)


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for number in range(1, 1000):
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                for piece in self.script(request, number):
                    if piece is None:
                        writer.close()
                        return
                    if piece is RESET:
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        writer.transport.abort()
                        return
                    if isinstance(piece, float):
                        await asyncio.sleep(piece)
                        continue
                    assert isinstance(piece, bytes)
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.001)  # a segment of its own
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(
    script: Script, tls: ssl.SSLContext | None = None
) -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(script)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


def bytewise(message: bytes) -> list[Piece]:
    return [message[i : i + 1] for i in range(len(message))]


def ok(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def url(port: int, scheme: str = "http", host: str = "127.0.0.1") -> str:
    return f"{scheme}://{host}:{port}/v1/chat/completions?x=1"


async def post(
    transport: Transport, port: int, scheme: str = "http", timeout_seconds: float = 5
) -> HttpResponse:
    return await transport.post(
        url(port, scheme), {"Authorization": "Bearer k"}, b'{"model": "m"}', timeout_seconds
    )


def outcomes(model: str) -> dict[str, float]:
    """The model's requests by outcome, and its retries by class, as a scrape sees them."""
    seen: dict[str, float] = {}
    for family in (*REQUESTS.collect(), *RETRIES.collect()):
        for sample in family.samples:
            if sample.labels.get("model") == model and sample.name.endswith("_total"):
                key = sample.labels.get("outcome") or f"retry_{sample.labels['error_class']}"
                seen[key] = seen.get(key, 0) + sample.value
    return seen


# --- framing and keep-alive -------------------------------------------------------------------


async def test_content_length_split_at_every_byte_on_one_kept_alive_connection() -> None:
    # The server sets a cookie: an API client has no cookie jar, so it never comes back.
    answer = ok(extra=b"Set-Cookie: session=abc; Path=/\r\n")
    async with serving(lambda request, n: bytewise(answer)) as server:
        async with open_transport() as transport:
            answers = [await post(transport, server.port) for _ in range(3)]
    assert [(a.status, a.body) for a in answers] == [(200, BODY)] * 3
    assert server.connections == 1
    request = server.requests[0]
    assert request.startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in request
    assert b"Authorization: Bearer k\r\n" in request and request.endswith(b'{"model": "m"}')
    assert b"Content-Length: 14\r\n" in request and b"Content-Type: application/json" in request
    assert not any(b"Cookie" in r for r in server.requests)


async def test_chunked_answers_with_extensions_and_trailers() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\n" + BODY[:5] + b"\r\n"
        b"%x\r\n" % (len(BODY) - 5) + BODY[5:] + b"\r\n"
        b"0\r\nX-Trailer: yes\r\n\r\n"
    )
    plain = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    scripts = iter([bytewise(chunked), [plain], [chunked]])
    async with serving(lambda request, n: next(scripts)) as server:
        async with open_transport() as transport:
            answers = [await post(transport, server.port) for _ in range(3)]
    assert [a.body for a in answers] == [BODY, b"ok", BODY]
    assert server.connections == 1


async def test_informational_answers_are_skipped_and_headers_are_read() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"slow down", b"Retry-After: 7\r\n").replace(
        b"200 OK", b"429 Too Many Requests"
    )
    async with serving(lambda request, n: [answer]) as server:
        async with open_transport() as transport:
            response = await post(transport, server.port)
    assert (response.status, response.body, response.headers["retry-after"]) == (
        429,
        b"slow down",
        "7",
    )


async def test_answers_framed_by_close_and_connection_close_are_not_reused() -> None:
    scripts = iter(
        [
            [b"HTTP/1.0 200 OK\r\n\r\n", BODY, None],
            [ok(extra=b"Connection: close\r\n")],
            [ok()],
        ]
    )
    async with serving(lambda request, n: next(scripts)) as server:
        async with open_transport() as transport:
            answers = [await post(transport, server.port) for _ in range(3)]
    assert [a.body for a in answers] == [BODY] * 3
    assert server.connections == 3


async def test_connection_keep_alive_close_is_not_reused() -> None:
    """`Connection: keep-alive, close` means close: the server ignores a second request on that
    connection and drops it a little later."""

    def script(request: bytes, number: int) -> list[Piece]:
        if number == 1:
            return [ok(extra=b"Connection: keep-alive, close\r\n"), 0.5, None]
        return [None]

    async with serving(script) as server:
        async with open_transport() as transport:
            first = await post(transport, server.port)
            started = time.monotonic()
            second = await post(transport, server.port, timeout_seconds=3)
    assert first.body == second.body == BODY
    assert server.connections == 2 and time.monotonic() - started < 0.4


async def test_an_idle_connection_is_not_reused_after_the_idle_bound() -> None:
    """A load balancer that forgot an idle flow answers nothing on it, ever: the runner must
    not reuse a connection idle for longer than its bound."""

    def script(request: bytes, number: int) -> list[Piece]:
        return [ok()] if number == 1 else [30.0]  # a black hole after the first answer

    async with serving(script) as server:
        async with open_transport(idle_seconds=0.2) as transport:
            await post(transport, server.port)
            await asyncio.sleep(0.4)
            started = time.monotonic()
            second = await post(transport, server.port, timeout_seconds=3)
    assert second.body == BODY and server.connections == 2
    assert time.monotonic() - started < 1


async def test_a_reused_connection_the_server_closed_is_retried_at_once() -> None:
    """The server times a kept-alive connection out just as it is reused: the request goes
    again at once on a new connection, without a retry or a failure the breaker would see."""

    def script(request: bytes, number: int) -> list[Piece]:
        return [ok()] if number == 1 else [None]  # closes when the second request arrives

    model = ModelSpec.model_validate({"name": "stale-reuse", "maxConcurrency": 1})
    async with serving(script) as server:
        model.base_url = f"http://127.0.0.1:{server.port}/v1"
        async with open_transport() as transport:
            client = HttpModelClient(model, "k", transport, usage=ShardUsage())
            messages = [{"role": "user", "content": "2 + 2"}]
            await client.complete(messages)  # type: ignore[list-item]
            started = time.monotonic()
            completion = await client.complete(messages)  # type: ignore[list-item]
    assert completion.text == "4" and time.monotonic() - started < 0.3
    assert server.connections == 2 and len(server.requests) == 3
    # Two requests, both answered: no failed attempt, no retry, nothing for the breaker.
    assert outcomes("stale-reuse") == {"ok": 2}
    assert client.breaker.failures == 0


# --- adversarial answers ----------------------------------------------------------------------


async def test_conflicting_content_lengths_fail_at_once() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: %d\r\n\r\n%s" % (
        len(BODY),
        BODY,
    )
    async with serving(lambda request, n: [answer, 30.0]) as server:
        async with open_transport() as transport:
            started = time.monotonic()
            with pytest.raises(TransportError, match="Content-Length"):
                await post(transport, server.port, timeout_seconds=5)
    assert time.monotonic() - started < 1


async def test_a_reset_in_the_middle_of_an_unframed_body_is_an_error() -> None:
    """Without Content-Length or chunking the body ends when the connection closes cleanly;
    a reset is a failure, never a complete answer."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
    async with serving(lambda request, n: [head, BODY[:10], 0.05, RESET]) as server:
        async with open_transport() as transport:
            with pytest.raises(TransportError):
                await post(transport, server.port)


@pytest.mark.parametrize(
    "chunks",
    [b"0x2\r\nok\r\n0\r\n\r\n", b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n", b"2\r\nok0\r\n\r\n"],
    ids=["hex-prefix", "underscore", "missing-crlf"],
)
async def test_malformed_chunk_sizes_are_errors(chunks: bytes) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    async with serving(lambda request, n: [answer, 30.0]) as server:
        async with open_transport() as transport:
            started = time.monotonic()
            with pytest.raises(TransportError):
                await post(transport, server.port)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    ("pieces", "message"),
    [
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{", None], "Payload"),
        ([b"SSH-2.0-OpenSSH\r\n\r\n"], "Bad"),
    ],
)
async def test_broken_answers_are_transport_errors(pieces: list[Piece], message: str) -> None:
    async with serving(lambda request, n: pieces) as server:
        async with open_transport() as transport:
            with pytest.raises(TransportError, match=message):
                await post(transport, server.port)


async def test_gzip_answers_are_accepted_and_decoded() -> None:
    packed = gzip.compress(BODY)
    async with serving(lambda request, n: [ok(packed, b"Content-Encoding: gzip\r\n")]) as server:
        async with open_transport() as transport:
            answer = await post(transport, server.port)
    assert answer.body == BODY
    assert b"Accept-Encoding: gzip" in server.requests[0]


async def test_redirects_are_returned_never_followed() -> None:
    moved = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere.example/v1\r\n"
    moved += b"Content-Length: 0\r\n\r\n"
    async with serving(lambda request, n: [moved]) as server:
        async with open_transport() as transport:
            answer = await post(transport, server.port)
            model = ModelSpec.model_validate(
                {"name": "moved", "baseURL": f"http://127.0.0.1:{server.port}/v1"}
            )
            client = HttpModelClient(model, "k", transport, usage=ShardUsage())
            with pytest.raises(PermanentError) as caught:
                await client.complete([{"role": "user", "content": "2 + 2"}])
    assert (answer.status, answer.headers["location"]) == (307, "http://elsewhere.example/v1")
    assert caught.value.reason == "EndpointRedirected"
    assert "http://elsewhere.example/v1" in caught.value.message
    assert "baseURL" in caught.value.message
    assert len(server.requests) == 2  # nothing was sent to elsewhere.example


# --- proxies and host names -------------------------------------------------------------------


async def test_idn_hosts_go_through_the_proxy_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy receives the request for the IDN host in its ASCII (punycode) form."""
    async with serving(lambda request, n: [ok()]) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://user:secret@127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with open_transport() as transport:
            answer = await transport.post(
                "http://bücher.example:8000/v1/chat/completions", {}, b"{}", 5
            )
    assert answer.body == BODY
    request = proxy.requests[0]
    assert request.startswith(
        b"POST http://xn--bcher-kva.example:8000/v1/chat/completions HTTP/1.1\r\n"
    )
    assert b"Host: xn--bcher-kva.example:8000\r\n" in request
    assert b"Proxy-Authorization: Basic dXNlcjpzZWNyZXQ=\r\n" in request


async def test_no_proxy_goes_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(lambda request, n: [ok()]) as server:
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")  # nothing listens there
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        async with open_transport() as transport:
            answer = await post(transport, server.port)
    assert answer.body == BODY
    assert server.requests[0].startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1")


# --- timeouts, refused connections, TLS ---------------------------------------------------------


async def test_no_answer_within_the_timeout() -> None:
    async with serving(lambda request, n: [b"HTTP/1.1 200 OK\r\n", 30.0]) as server:
        async with open_transport() as transport:
            with pytest.raises(TransportTimeout, match="0.2s"):
                await post(transport, server.port, timeout_seconds=0.2)


async def test_a_refused_connection_says_where_and_why() -> None:
    async with open_transport() as transport:
        with pytest.raises(ConnectFailed) as caught:
            await transport.post("http://127.0.0.1:1/v1", {}, b"{}", 5)
    assert str(caught.value) == "cannot connect to 127.0.0.1:1: connection refused"
    assert caught.value.target == "127.0.0.1:1"


async def test_tls_is_verified_against_the_given_roots(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    async with serving(lambda request, n: [ok()], tls=server_context) as server:
        async with open_transport(ca_bundle=bundle) as transport:
            answer = await post(transport, server.port, scheme="https")
        assert answer.body == BODY
        async with open_transport() as transport:
            with pytest.raises(ConnectFailed, match="certificate verification failed"):
                await post(transport, server.port, scheme="https")
