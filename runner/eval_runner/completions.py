"""The OpenAI-compatible completions API (vLLM, TGI, llama.cpp's /v1/completions): a prompt
string or token ids in, text out; and the log-likelihood of a continuation after a context,
read from the prompt's own log-probabilities (`echo` with `logprobs`), which is how
lm-evaluation-harness scores multiple choice on such an endpoint (`local-completions`).

A log-likelihood request follows lm-eval's (models/api_models.py, api/model.py _encode_pair):
whitespace at the end of the context moves to the front of the continuation; with the server's
tokenizer (vLLM's POST /tokenize, add_special_tokens false), context and context+continuation
are tokenized, the continuation is the tokens past the context's, and the ids are sent as the
prompt, so no beginning-of-sequence token is added that lm-eval would not send; without it, the
text is sent and the continuation is the tokens whose text offset is past the context. The body
asks one generated token (temperature 0, logprobs 1, echo); the continuation's log-likelihood
is the sum of its tokens' log-probabilities, and it is greedy when each was the likeliest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eval_api.v1alpha1.model import EndpointSpec

# lm-eval's context window for API models (TemplateAPI: max_length 2048, one token kept back).
MAX_TOKENS_IN_WINDOW = 2047


@dataclass(frozen=True, slots=True)
class Likelihood:
    loglikelihood: float
    greedy: bool


class LogprobsUnsupported(Exception):
    """The endpoint answered a log-likelihood request without the prompt's log-probabilities
    (chat-only APIs, llama.cpp's server): multiple choice by log-likelihood cannot run there."""


def split_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval moves the context's trailing whitespace to the continuation's front."""
    stripped = context.rstrip()
    moved = len(context) - len(stripped)
    if moved:
        return stripped, context[-moved:] + continuation
    return context, continuation


def window(context_ids: list[int], whole_ids: list[int]) -> tuple[list[int], int]:
    """The ids sent and how many of them are context, as lm-eval cuts a long input."""
    continuation_ids = whole_ids[len(context_ids) :]
    sent = (context_ids + continuation_ids)[-MAX_TOKENS_IN_WINDOW:]
    overflow = max(0, len(context_ids) + len(continuation_ids) - MAX_TOKENS_IN_WINDOW)
    return sent, len(context_ids) - overflow


def completions_body(
    model: EndpointSpec, prompt: str | list[int], *, stop: list[str], max_tokens: int
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model.name,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
    }
    if stop:
        body["stop"] = stop
    if model.parameters.seed is not None:
        body["seed"] = model.parameters.seed
    return body


def likelihood_body(model: EndpointSpec, prompt: str | list[int]) -> dict[str, Any]:
    return {
        "model": model.name,
        "prompt": prompt,
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": 1,
        "echo": True,
    }


def completion_text(data: Any) -> tuple[str, str | None]:
    choice = data["choices"][0]
    return choice.get("text") or "", choice.get("finish_reason")


def likelihood_of(data: Any, *, context_tokens: int | None, context_chars: int) -> Likelihood:
    """The continuation's log-likelihood from an echoed prompt's log-probabilities; the
    context is `context_tokens` tokens (token ids were sent) or `context_chars` characters."""
    logprobs = data["choices"][0].get("logprobs")
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("token_logprobs"), list):
        raise LogprobsUnsupported(
            "the endpoint gave no prompt log-probabilities (echo with logprobs)"
        )
    token_logprobs = logprobs["token_logprobs"]
    if context_tokens is None:
        offsets = logprobs.get("text_offset")
        if not isinstance(offsets, list) or len(offsets) != len(token_logprobs):
            raise LogprobsUnsupported(
                "the endpoint gave no text offsets with its log-probabilities"
            )
        context_tokens = sum(1 for offset in offsets[:-1] if offset < context_chars)
    if context_tokens <= 0:
        raise ValueError("the context has no token before the continuation")
    scored = token_logprobs[context_tokens:-1]
    if not scored or any(lp is None for lp in scored):
        raise ValueError("the continuation has no log-probabilities")
    tops = (logprobs.get("top_logprobs") or [])[context_tokens:-1]
    greedy = len(tops) == len(scored) and all(
        isinstance(top, dict) and top and lp == max(top.values())
        for lp, top in zip(scored, tops, strict=True)
    )
    return Likelihood(float(sum(scored)), greedy)
