"""The pod's tiny HTTP server: GET /progress (the live ShardSummary), /healthz and /metrics.

The operator polls /progress on the pod IP, so runner pods need no Kubernetes credentials.
Plain asyncio streams rather than a web framework: three GET routes do not justify another
dependency in the runner image.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eval_api.shard import ShardSummary

READ_TIMEOUT_SECONDS = 10.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class ProgressServer:
    def __init__(self, summary: ShardSummary, host: str | None = None, port: int = 9090) -> None:
        # host None: every interface (IPv4 and IPv6), as the operator dials the pod IP.
        self.summary = summary
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> ProgressServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_SECONDS):
                request_line = (await reader.readline()).decode("latin-1").split()
                while (await reader.readline()).strip():  # headers: not needed
                    pass
            if len(request_line) == 3:
                method, target, _ = request_line
                status, content_type, body = self._route(method, target.split("?", 1)[0])
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
        except (TimeoutError, ConnectionError):
            pass  # a client that went away or never finished its request
        finally:
            writer.close()
