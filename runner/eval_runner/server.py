"""The pod's tiny HTTP server: GET /progress (the live ShardSummary), /healthz and /metrics, and
POST /stop (execution.earlyStop).

The operator polls /progress on the pod IP, so runner pods need no Kubernetes credentials.
POST /stop ends the shard early (no new sample starts; those in flight finish). Only the
operator may: the request must carry `Authorization: Bearer <token>`, the run's token, which
the pod reads from its control Secret (EVAL_STOP_TOKEN) and the operator derives; without a
token configured there is no /stop. Plain asyncio streams rather than a web framework: four
routes do not justify another dependency in the runner image.
"""

from __future__ import annotations

import asyncio
import hmac
import json

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eval_api.shard import ShardSummary
from eval_runner.stop import StopSignal

READ_TIMEOUT_SECONDS = 10.0
MAX_HEADER_LINES = 64
MAX_LINE_BYTES = 8192
MAX_BODY_BYTES = 1024
_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
}


class ProgressServer:
    def __init__(
        self,
        summary: ShardSummary,
        host: str | None = None,
        port: int = 9090,
        *,
        stop: StopSignal | None = None,
        stop_token: str | None = None,
    ) -> None:
        # host None: every interface (IPv4 and IPv6), as the operator dials the pod IP.
        self.summary = summary
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._stop = stop
        self._stop_token = stop_token or None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        # A line longer than MAX_LINE_BYTES ends the request: headers never hold much memory.
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, limit=MAX_LINE_BYTES
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> ProgressServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        if path == "/stop" and self._stop is not None and self._stop_token is not None:
            return self._stop_route(method, headers, body)
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        if path == "/progress":
            body = self.summary.model_dump_json(by_alias=True, exclude_none=True).encode()
            return 200, "application/json", body
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest()
        return 404, "text/plain", b"not found\n"

    def _stop_route(
        self, method: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        """POST /stop, body {"reason": ...}: the operator's word that the run is decided."""
        if method != "POST":
            return 405, "text/plain", b"only POST\n"
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return 401, "text/plain", b"a bearer token is required\n"
        assert self._stop is not None and self._stop_token is not None
        if not hmac.compare_digest(given.strip().encode(), self._stop_token.encode()):
            return 403, "text/plain", b"not the run's token\n"
        try:
            reason = str(json.loads(body or b"{}").get("reason") or "Stopped")[:64]
        except (ValueError, AttributeError):
            return 400, "text/plain", b"the body is not a JSON object\n"
        self._stop.set(reason)
        # /progress says so at once: the operator stops asking this shard.
        self.summary.stopped = self._stop.reason
        return 202, "text/plain", b"stopping\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_SECONDS):
                request_line = (await reader.readline()).decode("latin-1").split()
                headers: dict[str, str] = {}
                for _ in range(MAX_HEADER_LINES):
                    line = (await reader.readline()).decode("latin-1").strip()
                    if not line:
                        break
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                method = request_line[0] if request_line else ""
                size, body = 0, b""
                if method == "POST":  # only /stop reads a body
                    length = headers.get("content-length", "0")
                    ascii_digits = length.isascii() and length.isdigit()
                    size = int(length) if ascii_digits else -1
                    if 0 < size <= MAX_BODY_BYTES:
                        body = await reader.readexactly(size)
            if len(request_line) == 3 and 0 <= size <= MAX_BODY_BYTES:
                _, target, _ = request_line
                status, content_type, body = self._route(
                    method, target.split("?", 1)[0], headers, body
                )
            else:
                status, content_type, body = 400, "text/plain", b"bad request\n"
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # a client that went away, never finished its request, or sent a huge line
        finally:
            writer.close()
