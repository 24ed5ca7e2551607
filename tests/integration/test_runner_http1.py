"""The runner's lean HTTP/1.1 client against scripted servers on 127.0.0.1: framing by
Content-Length, chunked coding and connection close, answers split at every byte,
informational answers, keep-alive reuse, timeouts, broken answers, and TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trustme

from eval_runner.http1 import LeanTransport
from eval_runner.tls import default_ssl_context
from eval_runner.transport import HttpResponse, TransportError, TransportTimeout

pytestmark = pytest.mark.integration

BODY = b'{"choices": [{"message": {"content": "4"}}]}'

# A script answers one request: the pieces to write, each flushed on its own. None closes.
Script = Callable[[bytes], list[bytes | None]]


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                for piece in self.script(request):
                    if piece is None:
                        writer.close()
                        return
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


def bytewise(message: bytes) -> list[bytes | None]:
    return [message[i : i + 1] for i in range(len(message))]


def ok(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def post(
    transport: LeanTransport, port: int, scheme: str = "http", timeout_seconds: float = 5
) -> HttpResponse:
    return await transport.post(
        f"{scheme}://127.0.0.1:{port}/v1/chat/completions?x=1",
        {"Authorization": "Bearer k"},
        b'{"model": "m"}',
        timeout_seconds,
    )


async def test_content_length_split_at_every_byte_on_one_kept_alive_connection() -> None:
    async with serving(lambda request: bytewise(ok())) as server:
        transport = LeanTransport(default_ssl_context())
        answers = [await post(transport, server.port) for _ in range(3)]
        await transport.close()
    assert [(a.status, a.body) for a in answers] == [(200, BODY)] * 3
    assert server.connections == 1
    request = server.requests[0]
    assert request.startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in request
    assert b"Authorization: Bearer k\r\n" in request and request.endswith(b'{"model": "m"}')
    assert b"Content-Length: 14\r\n" in request and b"Accept-Encoding" not in request


async def test_chunked_answers_with_extensions_and_trailers() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\n" + BODY[:5] + b"\r\n"
        b"%x\r\n" % (len(BODY) - 5) + BODY[5:] + b"\r\n"
        b"0\r\nX-Trailer: yes\r\n\r\n"
    )
    plain = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    scripts = iter([bytewise(chunked), [plain], [chunked]])
    async with serving(lambda request: next(scripts)) as server:
        transport = LeanTransport(default_ssl_context())
        answers = [await post(transport, server.port) for _ in range(3)]
    assert [a.body for a in answers] == [BODY, b"ok", BODY]
    assert server.connections == 1


async def test_informational_answers_are_skipped_and_retry_after_is_read() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"slow down", b"Retry-After: 7\r\n").replace(
        b"200 OK", b"429 Too Many Requests"
    )
    async with serving(lambda request: [answer]) as server:
        response = await post(LeanTransport(default_ssl_context()), server.port)
    assert (response.status, response.body, response.retry_after) == (429, b"slow down", "7")


async def test_answers_framed_by_close_and_connection_close_are_not_reused() -> None:
    scripts = iter(
        [
            [b"HTTP/1.0 200 OK\r\n\r\n", BODY, None],
            [ok(extra=b"Connection: close\r\n")],
            [ok()],
        ]
    )
    async with serving(lambda request: next(scripts)) as server:
        transport = LeanTransport(default_ssl_context())
        answers = [await post(transport, server.port) for _ in range(3)]
    assert [a.body for a in answers] == [BODY] * 3
    assert server.connections == 3


async def test_a_connection_the_server_closed_is_not_reused() -> None:
    async with serving(lambda request: [ok(), None]) as server:
        transport = LeanTransport(default_ssl_context())
        await post(transport, server.port)
        await asyncio.sleep(0.05)  # the close arrives while the connection is idle
        second = await post(transport, server.port)
    assert second.body == BODY and server.connections == 2


@pytest.mark.parametrize(
    ("pieces", "message"),
    [
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{", None], "closed before"),
        ([b"SSH-2.0-OpenSSH\r\n\r\n"], "not an HTTP/1.x status line"),
        ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], "unreadable"),
        ([None], "closed before"),
    ],
)
async def test_broken_answers_are_transport_errors(
    pieces: list[bytes | None], message: str
) -> None:
    async with serving(lambda request: pieces) as server:
        with pytest.raises(TransportError, match=message):
            await post(LeanTransport(default_ssl_context()), server.port)


async def test_no_answer_within_the_timeout() -> None:
    async with serving(lambda request: [b"HTTP/1.1 200 OK\r\n"]) as server:
        transport = LeanTransport(default_ssl_context())
        with pytest.raises(TransportTimeout, match="0.2s"):
            await post(transport, server.port, timeout_seconds=0.2)
        assert not any(not c.closed for o in transport._origins.values() for c in o.idle)


async def test_a_refused_connection_and_a_header_with_a_line_break() -> None:
    transport = LeanTransport(default_ssl_context())
    with pytest.raises(TransportError):
        await transport.post("http://127.0.0.1:1/v1", {}, b"{}", 5)
    with pytest.raises(TransportError, match="line break"):
        await transport.post("http://127.0.0.1:1/v1", {"x-api-key": "k\r\nX-Evil: 1"}, b"{}", 5)


async def test_tls_is_verified_against_the_given_roots() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with serving(lambda request: [ok()], tls=server_context) as server:
        answer = await post(LeanTransport(trusting), server.port, scheme="https")
        assert answer.body == BODY
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            await post(LeanTransport(default_ssl_context()), server.port, scheme="https")
