"""The deterministic completions server the parity runs use: vLLM's shapes for echo and
logprobs, stop sequences cut server-side, tokens that never merge across a leading space."""

from __future__ import annotations

import httpx

from tests.support.completions_server import CompletionsServer, logprob, tokenize


def test_a_continuation_that_starts_with_a_space_never_merges_with_its_context() -> None:
    context, continuation = "Question: 2 + 3?\nAnswer:", " B"
    assert tokenize(context + continuation) == tokenize(context) + tokenize(continuation)
    assert "".join(tokenize("a  b\n c ")) == "a  b\n c "


async def test_echo_gives_the_prompts_tokens_with_their_logprobs_and_offsets() -> None:
    async with CompletionsServer() as server, httpx.AsyncClient(base_url=server.url) as http:
        ids = (await http.post("/tokenize", json={"prompt": "Say: A"})).json()["tokens"]
        assert (await http.post("/detokenize", json={"tokens": ids})).json()["prompt"] == "Say: A"
        body = {"model": "m", "prompt": [ids], "echo": True, "logprobs": 1, "max_tokens": 1}
        (choice,) = (await http.post("/v1/completions", json=body)).json()["choices"]
        logprobs = choice["logprobs"]
        assert logprobs["tokens"][:2] == ["Say:", " A"] and len(logprobs["tokens"]) == 3
        assert logprobs["token_logprobs"][0] is None
        assert logprobs["token_logprobs"][1] == logprob("Say:", " A")
        assert logprobs["text_offset"][:2] == [0, 4]
        generated = {"model": "m", "prompt": "Question: 2 + 3\nAnswer:", "max_tokens": 64,
                     "stop": ["\n\n"]}  # fmt: skip
        (answer,) = (await http.post("/v1/completions", json=generated)).json()["choices"]
        assert answer["text"].endswith("#### 5") or answer["text"].endswith("#### 6")
        assert answer["finish_reason"] == "stop"
