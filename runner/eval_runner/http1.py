"""A lean HTTP/1.1 client on asyncio protocols: the runner's default transport.

Why not aiohttp alone: at 64 requests in flight against a 50 ms endpoint on a 2-core machine,
aiohttp's client costs ~0.13 ms of CPU per request and its run sits 7-10% above the physical
limit N*L/C; this client costs ~0.03 ms and gets within 3% (bench/run.py, README "Design
choices"). It does only what model APIs need: POST with a JSON body and Content-Length,
keep-alive connections pooled per origin, TLS, answers framed by Content-Length, chunked
transfer coding or the connection's end, and informational (1xx) answers skipped. It sends no
Accept-Encoding, so answers come uncompressed; it follows no redirects and uses no proxy (as
the aiohttp session it replaces, which ignores proxy variables by default).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from eval_runner.transport import HttpResponse, TransportError, TransportTimeout

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
USER_AGENT = "eval-runner"


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 as we read it."""


@dataclass
class _Origin:
    scheme: str
    host: str
    port: int
    head: bytes  # request line, Host, User-Agent, Content-Type
    idle: deque[_Connection] = field(default_factory=deque)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._answer: asyncio.Future[HttpResponse] | None = None
        self._reset()

    def _reset(self) -> None:
        self._status: int | None = None
        self._retry_after: str | None = None
        self._keep_alive = True
        self._length: int | None = None  # Content-Length framing
        self._chunked = False
        self._chunks: list[bytes] = []

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.abort()  # bytes nobody asked for: the connection cannot be trusted
            return
        self._buffer += data
        try:
            self._parse()
        except (ProtocolError, ValueError, IndexError) as err:
            self._fail(TransportError(f"unreadable answer: {err}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self._answer
        if answer is None or answer.done():
            return
        if self._status is not None and self._length is None and not self._chunked:
            self._finish(bytes(self._buffer))  # framed by the connection's end
        else:
            self._fail(TransportError("the connection closed before the answer was complete"))

    # --- requests -----------------------------------------------------------------------------

    def request(self, message: bytes) -> asyncio.Future[HttpResponse]:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(message)  # type: ignore[attr-defined]
        return self._answer

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]

    # --- parsing ------------------------------------------------------------------------------

    def _parse(self) -> None:
        buffer = self._buffer
        while True:
            if self._status is None:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise ProtocolError("the header section is too long")
                    return
                self._head(bytes(buffer[:end]))
                del buffer[: end + 4]
                if self._status is None:
                    continue  # an informational answer (1xx): the real one follows
            if self._chunked:
                if not self._parse_chunks():
                    return
                self._finish(b"".join(self._chunks))
                return
            if self._length is None:
                if len(buffer) > MAX_BODY_BYTES:
                    raise ProtocolError("the answer is too large")
                return  # read until the connection closes
            if len(buffer) < self._length:
                return
            body = bytes(buffer[: self._length])
            del buffer[: self._length]
            self._finish(body)
            return

    def _head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:40]!r}")
        status = int(rest[:3])
        if 100 <= status < 200:
            return
        length = connection = transfer = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                transfer = value.strip().lower()
            elif name == "connection":
                connection = value.strip().lower()
            elif name == "retry-after":
                self._retry_after = value.strip()
        self._status = status
        if version == "HTTP/1.0":
            self._keep_alive = connection == "keep-alive"
        else:
            self._keep_alive = connection != "close"
        if status in (204, 304):
            self._length = 0
        elif transfer is not None and transfer.endswith("chunked"):
            self._chunked = True
        elif length is not None:
            if length > MAX_BODY_BYTES or length < 0:
                raise ProtocolError(f"Content-Length {length} out of bounds")
            self._length = length
        else:
            self._keep_alive = False  # framed by the connection's end

    def _parse_chunks(self) -> bool:
        """Consume whole chunks from the buffer; True once the last one (and trailers) is in."""
        buffer = self._buffer
        while True:
            end = buffer.find(b"\r\n")
            if end < 0:
                return False
            size = int(bytes(buffer[:end]).split(b";", 1)[0].strip(), 16)
            if size == 0:
                trailers = buffer.find(b"\r\n\r\n", end)
                if buffer[end : end + 4] == b"\r\n\r\n" or trailers == end:
                    del buffer[: end + 4]
                    return True
                if trailers < 0:
                    return False
                del buffer[: trailers + 4]
                return True
            if len(buffer) < end + 2 + size + 2:
                return False
            self._chunks.append(bytes(buffer[end + 2 : end + 2 + size]))
            if sum(len(c) for c in self._chunks) > MAX_BODY_BYTES:
                raise ProtocolError("the answer is too large")
            del buffer[: end + 2 + size + 2]

    def _finish(self, body: bytes) -> None:
        answer = self._answer
        response = HttpResponse(self._status or 0, body, self._retry_after)
        if self._buffer:
            self._keep_alive = False  # more than one answer: do not reuse
        if not self._keep_alive:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self._reset()
        self._answer = None
        if answer is not None and not answer.done():
            answer.set_result(response)

    def _fail(self, error: Exception) -> None:
        answer = self._answer
        self._answer = None
        if answer is not None and not answer.done():
            answer.set_exception(error)


class LeanTransport:
    """A Transport: keep-alive connections pooled per origin, one request per connection at a
    time. The runner's adaptive limiter bounds how many are open."""

    def __init__(self, ssl_context: ssl.SSLContext, max_idle: int = 100) -> None:
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._targets: dict[str, tuple[_Origin, bytes]] = {}
        self._origins: dict[tuple[str, str, int], _Origin] = {}

    def _target(self, url: str) -> tuple[_Origin, bytes]:
        found = self._targets.get(url)
        if found is not None:
            return found
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"not an http(s) URL: {parts.scheme}://{parts.hostname}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        origin = self._origins.get(key)
        if origin is None:
            default = port == (443 if parts.scheme == "https" else 80)
            host = parts.hostname if default else f"{parts.hostname}:{port}"
            if ":" in parts.hostname:  # an IPv6 literal
                host = f"[{parts.hostname}]" + ("" if default else f":{port}")
            origin = self._origins[key] = _Origin(parts.scheme, parts.hostname, port, b"")
            origin.head = (
                f"Host: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
                "Content-Type: application/json\r\nAccept: application/json\r\n"
            ).encode("latin-1")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        found = self._targets[url] = (origin, f"POST {path} HTTP/1.1\r\n".encode("latin-1"))
        return found

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, timeout_seconds: float
    ) -> HttpResponse:
        origin, request_line = self._target(url)
        extra = ""
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                # Would smuggle a header in; a key with a trailing newline looks like this.
                raise TransportError(f"the value of header {name} holds a line break")
            extra += f"{name}: {value}\r\n"
        message = b"".join(
            (
                request_line,
                origin.head,
                extra.encode("latin-1"),
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(timeout_seconds):
                connection = self._idle(origin) or await self._connect(origin)
                response = await connection.request(message)
        except TimeoutError as err:
            if connection is not None:
                connection.abort()
            raise TransportTimeout(f"no answer within {timeout_seconds:g}s") from err
        except (OSError, ssl.SSLError, EOFError) as err:
            if connection is not None:
                connection.abort()
            raise TransportError(f"{type(err).__name__}: {err}") from err
        except BaseException:
            if connection is not None:
                connection.abort()  # cancelled mid-request: the answer would be stray bytes
            raise
        if not connection.closed and len(origin.idle) < self._max_idle:
            origin.idle.append(connection)
        return response

    def _idle(self, origin: _Origin) -> _Connection | None:
        while origin.idle:
            connection = origin.idle.pop()  # the most recently used: least likely timed out
            if not connection.closed:
                return connection
        return None

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = origin.scheme == "https"
        _, connection = await loop.create_connection(
            _Connection,
            origin.host,
            origin.port,
            ssl=self._ssl if tls else None,
            server_hostname=origin.host if tls else None,
        )
        return connection

    async def close(self) -> None:
        for origin in self._origins.values():
            while origin.idle:
                connection = origin.idle.pop()
                if connection.transport is not None:
                    connection.transport.close()
        await asyncio.sleep(0)  # let the transports close before the loop goes away
