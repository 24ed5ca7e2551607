"""A real local model server for runner tests: OpenAI chat completions and Anthropic Messages
with known, deterministic answers, usage counting, request recording and fault injection.

Answers: an exact lookup of the last user message in `answers`, else arithmetic computed
exactly (as eval_runner.demo_server does), deliberately off by one for questions containing any
string of `wrong`, else an echo of the message. Usage: input tokens are the whitespace tokens of
every message (and the Anthropic system field), output tokens those of the answer.

Start it in the test's loop (`async with ModelServer(...) as server`) or, for subprocess tests,
in a background thread (`with ModelServer(...).in_thread() as server`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from eval_runner.demo_server import (
    arithmetic_answer,
    count_tokens,
    last_user_message,
    prompt_texts,
    response_body,
)


@dataclass
class Faults:
    """What goes wrong, on purpose. Every fault is off by default."""

    latency: float = 0.0  # seconds before every answer
    rate_limit_first: int = 0  # the first N chat requests get 429
    retry_after: str | None = "0"  # Retry-After header of every 429 (None: no header)
    # A question containing a key is always answered with that HTTP status.
    status_for: dict[str, int] = field(default_factory=dict)


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
    ) -> None:
        self.answers = dict(answers or {})
        self.wrong = list(wrong)
        self.faults = faults or Faults()
        self.files = dict(files or {})  # served at GET /files/<name>
        self.requests: list[RecordedRequest] = []
        self.input_tokens = 0  # of answered requests only, as a provider bills
        self.output_tokens = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, question: str) -> str:
        if question in self.answers:
            return self.answers[question]
        correct = arithmetic_answer(question)
        if correct is None:
            return question
        if any(w in question for w in self.wrong):
            return str(Decimal(correct) + 1)
        return correct

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_get("/files/{name}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> ModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextmanager
    def in_thread(self) -> Iterator[ModelServer]:
        """Serve from a background thread's event loop (for subprocess tests)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=10)
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    # --- handlers -------------------------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.Response:
        return await self._chat(request, "openai")

    async def _anthropic(self, request: web.Request) -> web.Response:
        return await self._chat(request, "anthropic")

    async def _chat(self, request: web.Request, flavour: str) -> web.Response:
        body = await request.json()
        self.requests.append(RecordedRequest(request.path, dict(request.headers), body))
        number = len(self.requests)
        faults = self.faults
        if faults.latency:
            await asyncio.sleep(faults.latency)
        question = last_user_message(body)
        if number <= faults.rate_limit_first:
            return self._error(429, "rate limited")
        for key, status in faults.status_for.items():
            if key in question:
                return self._error(status, f"injected {status}")
        answer = self.answer(question)
        input_tokens = sum(count_tokens(text) for text in prompt_texts(body))
        self.input_tokens += input_tokens
        self.output_tokens += count_tokens(answer)
        return web.json_response(response_body(flavour, body["model"], answer, input_tokens))

    def _error(self, status: int, message: str) -> web.Response:
        headers = {}
        if status == 429 and self.faults.retry_after is not None:
            headers["Retry-After"] = self.faults.retry_after
        return web.json_response(
            {"error": {"type": "injected", "message": message}}, status=status, headers=headers
        )

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.files:
            raise web.HTTPNotFound()
        return web.Response(body=self.files[name])
