"""A stand-in model for trying eval-runner without an external endpoint.

    python -m eval_runner.demo_server --port 8000

It is not a language model: it computes arithmetic questions such as "What is 17 + 25?" exactly
and echoes any other last user message back. A model whose name ends in "-sloppy" is off by one
on a quarter of the questions (picked by a hash of the question, the same every time), so that
an EvalSuite's matrix of models has something to rank. It speaks OpenAI chat completions
(POST /v1/chat/completions) and Anthropic Messages (POST /v1/messages), and reports usage as
whitespace-separated tokens.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_EXPRESSION = re.compile(r"(-?\d+(?:\.\d+)?)\s*([-+*/])\s*(-?\d+(?:\.\d+)?)")
_OPERATIONS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
}


def arithmetic_answer(text: str) -> str | None:
    """The exact result of the first `a <op> b` in text, or None when there is none."""
    match = _EXPRESSION.search(text)
    if match is None:
        return None
    a, op, b = Decimal(match[1]), match[2], Decimal(match[3])
    if op == "/" and b == 0:
        return None
    return format(_OPERATIONS[op](a, b).normalize(), "f")


def content_text(content: Any) -> str:
    """A message's text, whether content is a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))


def count_tokens(text: str) -> int:
    return len(text.split())


def prompt_texts(body: dict[str, Any]) -> list[str]:
    """Every text the model is shown: the Anthropic top-level system field and all messages."""
    texts = [content_text(body["system"])] if body.get("system") else []
    return texts + [content_text(m.get("content", "")) for m in body.get("messages", [])]


def last_user_message(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return content_text(users[-1].get("content", "")) if users else ""


def response_body(
    flavour: str, model: str, text: str, input_tokens: int, *, cut: bool = False
) -> dict[str, Any]:
    """A minimal, valid OpenAI or Anthropic response carrying `text`; `cut` reports it as
    stopped by max_tokens."""
    output_tokens = count_tokens(text)
    if flavour == "anthropic":
        return {
            "id": "msg_demo",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if cut else "end_turn",
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "length" if cut else "stop",
    }
    return {
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }


FLAVOURS = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic"}


def demo_answer(question: str, model: str) -> str:
    correct = arithmetic_answer(question)
    if correct is None:
        return question
    if model.endswith("-sloppy") and hashlib.sha256(question.encode()).digest()[0] % 4 == 0:
        return format(Decimal(correct) + 1, "f")
    return correct


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real model servers do
    # Headers and body go out as two writes: without this, Nagle and delayed ACKs hold the
    # second for 40 ms on every answer.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's naming)
        flavour = FLAVOURS.get(self.path)
        if flavour is None:
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        except ValueError:
            self._send(400, {"error": {"message": "request body is not JSON"}})
            return
        question = last_user_message(body)
        answer = demo_answer(question, str(body.get("model", "demo")))
        if self.server.latency:  # type: ignore[attr-defined]
            time.sleep(self.server.latency)  # type: ignore[attr-defined]
        input_tokens = sum(count_tokens(text) for text in prompt_texts(body))
        self._send(200, response_body(flavour, body.get("model", "demo"), answer, input_tokens))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's naming)
        """One line per request would drown the evaluation's own output."""

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m eval_runner.demo_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long before each answer, as a real model does (default 0)",
    )
    args = parser.parse_args(argv)
    if args.latency < 0:
        parser.error("--latency must be 0 or more")
    server = ThreadingHTTPServer((args.host, args.port), _Handler)
    server.latency = args.latency  # type: ignore[attr-defined]
    print(f"demo model server on http://{args.host}:{args.port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
