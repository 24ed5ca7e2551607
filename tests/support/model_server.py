"""A real local model server for runner tests: OpenAI chat completions and Anthropic Messages
with known, deterministic answers, usage counting, request recording and fault injection.

Answers: an exact lookup of the last user message in `answers`, else arithmetic computed
exactly (as eval_runner.demo_server does), deliberately off by one for questions containing any
string of `wrong`, else an echo of the message. Usage: input tokens are the whitespace tokens of
every message (and the Anthropic system field), output tokens those of the answer.

Faults: fixed latency, the first N requests throttled, fixed statuses for given questions, and
random faults as fractions of all chat requests (429 with Retry-After, 500, hangs that outlast
the client's timeout, 200s with a truncated body), drawn from a seeded generator; answers
reported as cut at max_tokens.

Rate limits (`RateLimits`), as a provider enforces them: request and token buckets that refill
continuously, charged when a request arrives, a 429 when one cannot pay, and on every answer
the headers that say so (OpenAI's x-ratelimit-* on /v1/chat/completions, Anthropic's
anthropic-ratelimit-* on /v1/messages).

Start it in the test's loop (`async with ModelServer(...) as server`), for subprocess tests in
a background thread (`with ModelServer(...).in_thread() as server`), or as a process of its own
(`python -m tests.support.model_server --help`; `make bench` does, so that the server's CPU is
not the runner's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiohttp import web

from eval_runner.demo_server import (
    FLAVOURS,
    arithmetic_answer,
    count_tokens,
    last_user_message,
    prompt_texts,
    response_body,
)
from tests.support.background import serving_in_thread


@dataclass
class Faults:
    """What goes wrong, on purpose. Every fault is off by default."""

    latency: float = 0.0  # seconds before every answer
    rate_limit_first: int = 0  # the first N chat requests get 429
    retry_after: str | None = "0"  # Retry-After header of every 429 (None: no header)
    # A question containing a key is always answered with that HTTP status.
    status_for: dict[str, int] = field(default_factory=dict)
    # Random faults, each a fraction of all chat requests (their sum at most 1).
    rate_limit: float = 0.0  # 429 with the Retry-After above
    server_error: float = 0.0  # 500
    timeout: float = 0.0  # no answer for hang_seconds (longer than the client's timeout)
    truncated: float = 0.0  # 200 whose JSON body is cut in half
    hang_seconds: float = 3.0
    seed: int = 0
    # Error bodies echo the request's credentials header (as some proxies do): the key must
    # stay secret all the same.
    echo_headers: bool = False
    # Every answer is reported as cut at max_tokens (finish_reason length, stop_reason
    # max_tokens).
    cut_answers: bool = False
    # Every chat request is redirected (307) here; "{key}" becomes the request's key, as a
    # careless gateway might put it.
    redirect_to: str | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self) -> str | None:
        """The random fault of the next request, or None."""
        if not (self.rate_limit or self.server_error or self.timeout or self.truncated):
            return None
        x = self._rng.random()
        for name, fraction in (
            ("rate_limit", self.rate_limit),
            ("server_error", self.server_error),
            ("timeout", self.timeout),
            ("truncated", self.truncated),
        ):
            if x < fraction:
                return name
            x -= fraction
        return None


class RateLimits:
    """A provider's rate limits: `requests` and `tokens` per `window_seconds`, each a bucket
    that holds one window's worth and refills continuously. A request is charged when it
    arrives: 1 request, and its prompt's characters / 4 (rounded up) plus max_tokens in
    tokens, as OpenAI counts before answering. A request a bucket cannot pay gets a 429 and
    is not charged."""

    def __init__(
        self,
        *,
        requests: int | None = None,
        tokens: int | None = None,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        given = {"requests": requests, "tokens": tokens}
        self.limits = {name: float(limit) for name, limit in given.items() if limit}
        self.window = window_seconds
        self.clock = clock
        self.held = dict(self.limits)
        self.updated = clock()
        self.charged = {name: 0.0 for name in self.limits}  # what admitted requests paid
        self.throttled = 0

    def _refill(self) -> None:
        now = self.clock()
        for name, limit in self.limits.items():
            self.held[name] = min(
                limit, self.held[name] + (now - self.updated) * limit / self.window
            )
        self.updated = now

    def admit(self, body: dict[str, Any]) -> bool:
        self._refill()
        chars = sum(len(text) for text in prompt_texts(body))
        costs = {"requests": 1.0, "tokens": math.ceil(chars / 4) + (body.get("max_tokens") or 0)}
        if any(self.held[name] < costs[name] for name in self.limits):
            self.throttled += 1
            return False
        for name in self.limits:
            self.held[name] -= costs[name]
            self.charged[name] += costs[name]
        return True

    def headers(self, flavour: str) -> dict[str, str]:
        headers = {}
        for name, limit in self.limits.items():
            remaining = self.held[name]
            reset = (limit - remaining) * self.window / limit  # seconds until full
            if flavour == "anthropic":
                when = datetime.now(UTC) + timedelta(seconds=reset)
                prefix = f"anthropic-ratelimit-{name}"
                headers[f"{prefix}-limit"] = str(int(limit))
                headers[f"{prefix}-remaining"] = str(int(remaining))
                headers[f"{prefix}-reset"] = when.isoformat(timespec="seconds")
            else:
                headers[f"x-ratelimit-limit-{name}"] = str(int(limit))
                headers[f"x-ratelimit-remaining-{name}"] = str(int(remaining))
                headers[f"x-ratelimit-reset-{name}"] = go_duration(reset)
        return headers


def go_duration(seconds: float) -> str:
    """OpenAI's reset form, Go's duration syntax to the millisecond: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(round(seconds, 3), 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


@dataclass(frozen=True)
class Reply:
    status: int
    payload: bytes
    headers: dict[str, str]
    delay: float  # seconds before it is sent


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ModelServer:
    def __init__(
        self,
        *,
        answers: dict[str, str] | None = None,
        wrong: Iterable[str] = (),
        faults: Faults | None = None,
        files: dict[str, bytes] | None = None,
        record: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        judge: Callable[[str], str] | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        self.answers = dict(answers or {})
        self.limits = limits
        # Requests for the model named "judge" are answered by judge(prompt), if given.
        self.judge = judge
        self.wrong = list(wrong)
        # Wrong answers for one model only (by the request's model name): a model that is
        # worse than the others on a known subset.
        self.wrong_for: dict[str, list[str]] = {}
        self.faults = faults or Faults()
        # Served at GET /files/<name> (with Content-Length), /stream/<name> (chunked, no length)
        # and /redirect/<hops>/<name> (that many redirects, then the file).
        self.files = dict(files or {})
        self.file_requests: dict[str, int] = {}  # GETs of /files/<name>, by name
        self.streamed_bytes = 0  # bytes /stream/ wrote before its client went away
        self.record = record  # keep every request (off for benchmarks)
        # Chat requests past this count wait, unanswered and not counted, until it is raised
        # or set to None; one whose client went away meanwhile is dropped, never counted. A
        # test stops a run at a known sample this way (aiohttp front-end only).
        self.hold_after: int | None = None
        self.requests: list[RecordedRequest] = []
        self.count = 0  # chat requests received
        # Chat requests waiting at hold_after: a test that stops its client waits for them to
        # go (their connections closed) before it lifts the hold, or they would be answered.
        self.held = 0
        self.injected: dict[str, int] = {}  # random faults injected, by kind
        self.input_tokens = 0  # of answered requests only, as a provider bills
        self.output_tokens = 0
        # How late the lean front-end's delayed answers went out, past their latency (its
        # timers' granularity): the floor of any client's wall above N*L/C.
        self.lateness = 0.0
        self.delayed_answers = 0
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        self._lean: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, question: str, model: str | None = None) -> str:
        if question in self.answers:
            return self.answers[question]
        correct = arithmetic_answer(question)
        if correct is None:
            return question
        wrong = [*self.wrong, *self.wrong_for.get(model or "", [])]
        if any(w in question for w in wrong):
            return str(Decimal(correct) + 1)
        return correct

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_get("/files/{name}", self._file)
        app.router.add_get("/stream/{name}", self._stream)
        app.router.add_get("/redirect/{hops}/{name}", self._redirect)
        app.router.add_get("/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def start_lean(self) -> None:
        """Serve the chat routes and /stats from a bare asyncio protocol instead of aiohttp:
        a few microseconds a request, so that a benchmark measures the client, not this."""
        loop = asyncio.get_running_loop()
        self._lean = await loop.create_server(
            lambda: _LeanHttp(self), self.host, self.port, reuse_address=True
        )
        self.port = self._lean.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._lean is not None:
            self._lean.close()
            await self._lean.wait_closed()

    async def __aenter__(self) -> ModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextmanager
    def in_thread(self) -> Iterator[ModelServer]:
        """Serve from a background thread's event loop (for subprocess tests)."""
        with serving_in_thread(self):
            yield self

    # --- handlers -------------------------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.Response:
        return await self._chat(request, "openai")

    async def _anthropic(self, request: web.Request) -> web.Response:
        return await self._chat(request, "anthropic")

    async def _chat(self, request: web.Request, flavour: str) -> web.Response:
        raw = await request.read()
        self.held += 1
        try:
            while self.hold_after is not None and self.count >= self.hold_after:
                if request.transport is None or request.transport.is_closing():
                    raise web.HTTPServiceUnavailable()  # the client is gone: nothing was asked
                await asyncio.sleep(0.01)
        finally:
            self.held -= 1
        reply = self.reply(request.path, dict(request.headers), raw, flavour)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(
            body=reply.payload,
            status=reply.status,
            headers=reply.headers,
            content_type="application/json",
        )

    def reply(self, path: str, headers: dict[str, str], raw: bytes, flavour: str) -> Reply:
        """The answer to one chat request, decided when it arrives (both front-ends use it)."""
        body = json.loads(raw)
        self.count += 1
        number = self.count
        if self.record:
            self.requests.append(RecordedRequest(path, headers, body))
        faults = self.faults
        delay = faults.latency
        question = last_user_message(body)
        if faults.redirect_to is not None:
            key = headers.get("x-api-key") or headers.get("Authorization", "").removeprefix(
                "Bearer "
            )
            location = faults.redirect_to.replace("{key}", key)
            return Reply(307, b"", {"Location": location}, 0.0)
        if number <= faults.rate_limit_first:
            return self._error(429, "rate limited", delay)
        if self.limits is not None and not self.limits.admit(body):
            # As a provider does: at once, with the limits, and no Retry-After.
            headers = self.limits.headers(flavour)
            payload = json.dumps({"error": {"type": "rate_limit", "message": "over limit"}})
            return Reply(429, payload.encode(), headers, 0.0)
        for key, status in faults.status_for.items():
            if key in question:
                echo = ""
                if faults.echo_headers:
                    echo = f": {headers.get('Authorization') or headers.get('x-api-key')}"
                return self._error(status, f"injected {status}{echo}", delay)
        fault = faults.draw()
        if fault is not None:
            self.injected[fault] = self.injected.get(fault, 0) + 1
            if fault == "rate_limit":
                return self._error(429, "rate limited", delay)
            if fault == "server_error":
                return self._error(500, "injected 500", delay)
            if fault == "timeout":
                return self._error(504, "answered too late", delay + faults.hang_seconds)
        if self.judge is not None and body.get("model") == "judge":
            answer = self.judge(question)
        else:
            answer = self.answer(question, body.get("model"))
        input_tokens = sum(count_tokens(text) for text in prompt_texts(body))
        answered = response_body(
            flavour, body["model"], answer, input_tokens, cut=faults.cut_answers
        )
        payload = json.dumps(answered).encode()
        headers = {} if self.limits is None else self.limits.headers(flavour)
        if fault == "truncated":
            # Not billed: the client never got a usable answer.
            return Reply(200, payload[: len(payload) // 2], headers, delay)
        self.input_tokens += input_tokens
        self.output_tokens += count_tokens(answer)
        return Reply(200, payload, headers, delay)

    def _error(self, status: int, message: str, delay: float) -> Reply:
        headers = {}
        if status == 429 and self.faults.retry_after is not None:
            headers["Retry-After"] = self.faults.retry_after
        payload = json.dumps({"error": {"type": "injected", "message": message}}).encode()
        return Reply(status, payload, headers, delay)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "requests": self.count,
            "injected": self.injected,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "meanLatenessSeconds": self.lateness / max(self.delayed_answers, 1),
        }
        if self.limits is not None:
            stats["rateLimits"] = {
                "limits": self.limits.limits,
                "windowSeconds": self.limits.window,
                "charged": self.limits.charged,
                "throttled": self.limits.throttled,
            }
        return stats

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.files:
            raise web.HTTPNotFound()
        self.file_requests[name] = self.file_requests.get(name, 0) + 1
        return web.Response(body=self.files[name])

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self.files:
            raise web.HTTPNotFound()
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        data = self.files[name]
        try:
            for start in range(0, len(data), 1 << 16):
                await response.write(data[start : start + (1 << 16)])
                self.streamed_bytes += min(1 << 16, len(data) - start)
        except ConnectionError:
            return response  # the client stopped reading
        await response.write_eof()
        return response

    async def _redirect(self, request: web.Request) -> web.Response:
        hops, name = int(request.match_info["hops"]), request.match_info["name"]
        target = f"/redirect/{hops - 1}/{name}" if hops > 1 else f"/files/{name}"
        raise web.HTTPFound(target)


_REASONS = {200: b"OK", 404: b"Not Found", 429: b"Too Many Requests"}


class _LeanHttp(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, requests with Content-Length, one at a time per connection
    (as the runner's clients send them)."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: Any = None  # asyncio's or uvloop's TCP transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip()] = value.strip()
            length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), 0))
            if len(self.buffer) < end + 4 + length:
                return
            raw = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self._answer(method, path, headers, raw)

    def _answer(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> None:
        flavour = FLAVOURS.get(path)
        if method == "POST" and flavour is not None:
            reply = self.server.reply(path, headers, raw, flavour)
        elif method == "GET" and path == "/stats":
            reply = Reply(200, json.dumps(self.server.stats()).encode(), {}, 0.0)
        else:
            reply = Reply(404, b'{"error": "not found"}', {}, 0.0)
        extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items()).encode()
        message = (
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (
                reply.status,
                _REASONS.get(reply.status, b"Error"),
                len(reply.payload),
                extra,
                reply.payload,
            )
        )
        if reply.delay:
            due = time.monotonic() + reply.delay
            asyncio.get_running_loop().call_later(reply.delay, self._send, message, due)
        else:
            self._send(message, 0.0)

    def _send(self, message: bytes, due: float) -> None:
        # uvloop's timers count from the loop's cached clock and may fire a little early:
        # never answer before the latency has passed.
        early = due - time.monotonic()
        if early > 0:
            asyncio.get_running_loop().call_later(early, self._send, message, due)
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.write(message)
            if due:
                self.server.lateness -= early
                self.server.delayed_answers += 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.model_server",
        description="The tests' model server as a process of its own (benchmarks).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--rate-limit", type=float, default=0.0, help="fraction answered 429")
    parser.add_argument("--retry-after", default="1", help="Retry-After of the 429s")
    parser.add_argument("--server-error", type=float, default=0.0, help="fraction answered 500")
    parser.add_argument("--timeout", type=float, default=0.0, help="fraction left hanging")
    parser.add_argument("--hang-seconds", type=float, default=3.0)
    parser.add_argument("--truncated", type=float, default=0.0, help="fraction cut in half")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rpm", type=int, help="requests per window (a provider's bucket)")
    parser.add_argument("--tpm", type=int, help="tokens per window (a provider's bucket)")
    parser.add_argument("--window", type=float, default=60.0, help="the buckets' window, s")
    args = parser.parse_args(argv)
    faults = Faults(
        latency=args.latency,
        retry_after=args.retry_after,
        rate_limit=args.rate_limit,
        server_error=args.server_error,
        timeout=args.timeout,
        truncated=args.truncated,
        hang_seconds=args.hang_seconds,
        seed=args.seed,
    )
    limits = None
    if args.rpm or args.tpm:
        limits = RateLimits(requests=args.rpm, tokens=args.tpm, window_seconds=args.window)
    server = ModelServer(faults=faults, record=False, host=args.host, port=args.port, limits=limits)

    async def serve() -> None:
        await server.start_lean()
        print(f"listening on {server.port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await server.stop()

    try:
        import uvloop  # the server must not be the bottleneck of a benchmark
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
