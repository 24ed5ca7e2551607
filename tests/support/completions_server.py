"""A deterministic OpenAI-compatible completions server, as vLLM serves one: the model both our
runner and lm-eval (`local-completions`) are run against for score parity.

- `POST /v1/completions`: `prompt` as text, a list of texts, or token ids (what lm-eval sends);
  `echo` with `logprobs` gives the prompt's tokens, their log-probabilities, the top one at each
  position and their text offsets, then `max_tokens` generated tokens; `stop` cuts the text at
  the first stop sequence, as vLLM does.
- `POST /v1/chat/completions`: the same model behind the chat API (what lm-eval's
  `local-chat-completions` and our ChatCompletions ask): the messages' contents, joined by a
  newline, are the prompt; greedy text cut by `stop`, no log-probabilities.
- `GET /tokenizer_info`, `POST /tokenize`, `POST /detokenize`: vLLM's tokenizer endpoints, which
  lm-eval's remote tokenizer uses to count a context's tokens.

The tokenizer: a token is a run of whitespace followed by a run of non-whitespace (or trailing
whitespace alone), so a continuation that starts with a space never merges with its context.
Every distinct token gets the next id, for the server's lifetime. A token's log-probability
depends on it and the token before it (a hash); the top token at a position is the
likeliest of a small fixed list. Generated text is a function of the prompt's last question.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from aiohttp import web

from tests.support.background import LoopbackServer

TOKEN = re.compile(r"\s*\S+|\s+$")
EOS = "</s>"
CANDIDATES = (" A", " B", " C", " D", " yes", " no", " the", ".")


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text)


def logprob(previous: str, token: str) -> float:
    """log P(token | previous): in (-8, -0.01], a fixed function of the pair."""
    digest = hashlib.sha256(f"{previous}\x00{token}".encode()).digest()
    return -round(0.01 + int.from_bytes(digest[:4], "big") / 2**32 * 8, 6)


def generated(prompt: str) -> str:
    """The model's answer to the prompt's last question: for one with lettered options, a
    letter picked by a hash; otherwise a worked number, right or off by one."""
    if prompt.rstrip().endswith("Answer:") and "\nD. " in prompt:
        question = prompt.rstrip().rsplit("Answer:", 2)[-2]
        letter = "ABCD"[hashlib.sha256(question.encode()).digest()[0] % 4]
        return f" The answer is ({letter}).\n\nQuestion: what next?"
    question = prompt.rsplit("Question:", 1)[-1]
    numbers = [int(n) for n in re.findall(r"-?\d+", question)]
    total = sum(numbers)
    if hashlib.sha256(question.encode()).digest()[0] % 4 == 0:
        total += 1  # a quarter of the answers are wrong
    return f" Adding them gives {total}.\n#### {total}\n\nQuestion: what next?"


class CompletionsServer(LoopbackServer):
    """`tokenizer=False`: no tokenizer endpoints, as llama.cpp or TGI serve completions."""

    def __init__(self, *, tokenizer: bool = True) -> None:
        self.tokenizer = tokenizer
        self.vocabulary: dict[str, int] = {}
        self.tokens: list[str] = []
        self.requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def ids(self, text: str) -> list[int]:
        found = []
        for token in tokenize(text):
            if token not in self.vocabulary:
                self.vocabulary[token] = len(self.tokens)
                self.tokens.append(token)
            found.append(self.vocabulary[token])
        return found

    def text(self, ids: list[int]) -> str:
        return "".join(self.tokens[i] for i in ids)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        if self.tokenizer:
            app.router.add_get("/tokenizer_info", self._tokenizer_info)
            app.router.add_post("/tokenize", self._tokenize)
            app.router.add_post("/detokenize", self._detokenize)

    # --- HTTP -----------------------------------------------------------------------------------

    async def _tokenizer_info(self, request: web.Request) -> web.Response:
        return web.json_response({"eos_token": EOS, "bos_token": None, "model_max_length": 8192})

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        ids = self.ids(body["prompt"])
        return web.json_response({"tokens": ids, "count": len(ids), "max_model_len": 8192})

    async def _detokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"prompt": self.text(body["tokens"])})

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        prompts = body.get("prompt")
        if isinstance(prompts, str) or (
            isinstance(prompts, list) and prompts and isinstance(prompts[0], int)
        ):
            prompts = [prompts]
        choices = [
            self._choice(index, self.text(p) if isinstance(p, list) else p, body)
            for index, p in enumerate(prompts or [])
        ]
        return web.json_response(
            {"id": "cmpl-parity", "object": "text_completion", "model": body.get("model"),
             "choices": choices}
        )  # fmt: skip

    async def _chat_completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages") or [])
        text, finish = self._generate(prompt, body)
        message = {"role": "assistant", "content": text.lstrip()}
        return web.json_response(
            {"id": "chatcmpl-parity", "object": "chat.completion", "model": body.get("model"),
             "choices": [{"index": 0, "message": message, "finish_reason": finish}],
             "usage": {"prompt_tokens": len(tokenize(prompt)),
                       "completion_tokens": len(tokenize(text)),
                       "total_tokens": len(tokenize(prompt)) + len(tokenize(text))}}
        )  # fmt: skip

    def _generate(self, prompt: str, body: dict[str, Any]) -> tuple[str, str]:
        """Greedy text for `prompt`: at most max_tokens tokens, cut at the first stop sequence."""
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        text = "".join(tokenize(generated(prompt))[:max_tokens])
        cut = min((text.find(s) for s in stops if s and s in text), default=-1)
        if cut >= 0:
            return text[:cut], "stop"
        return text, "length"

    def _choice(self, index: int, prompt: str, body: dict[str, Any]) -> dict[str, Any]:
        max_tokens = int(body.get("max_tokens") or 16)
        answer_tokens = tokenize(generated(prompt))[:max_tokens]
        text, finish = self._generate(prompt, body)
        choice: dict[str, Any] = {"index": index, "text": text, "finish_reason": finish}
        wanted = body.get("logprobs")
        if wanted is None:
            return choice
        prompt_tokens = tokenize(prompt) if body.get("echo") else []
        shown = prompt_tokens + tokenize(text)[: max(max_tokens, 0)] if text else prompt_tokens
        if not text and max_tokens > 0:
            shown = prompt_tokens + answer_tokens[:1]
        offsets, position = [], 0
        for token in shown:
            offsets.append(position)
            position += len(token)
        token_logprobs: list[float | None] = []
        top: list[dict[str, float] | None] = []
        previous = ""
        for number, token in enumerate(shown):
            if number == 0 and body.get("echo"):
                token_logprobs.append(None)  # nothing comes before the first prompt token
                top.append(None)
            else:
                token_logprobs.append(logprob(previous, token))
                options = {c: logprob(previous, c) for c in (*CANDIDATES, token)}
                best = max(options, key=lambda c: options[c])
                top.append({best: options[best]})
            previous = token
        if body.get("echo"):
            choice["text"] = prompt + text
        choice["logprobs"] = {
            "tokens": shown,
            "token_logprobs": token_logprobs,
            "top_logprobs": top,
            "text_offset": offsets,
        }
        return choice
