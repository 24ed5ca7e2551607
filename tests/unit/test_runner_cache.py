"""The response cache's key and value: equal keys exactly when the model would be asked the
same thing in the same run (or in any run, for reuse AcrossRuns); values read back whole, or
as a miss."""

from __future__ import annotations

from typing import Any

import pytest

from eval_api.v1alpha1 import EndpointSpec
from eval_runner.cache import (
    KEY_PREFIX,
    CachedAnswer,
    CacheSettingsError,
    ResponseCache,
    cache_key,
    redacted_url,
)
from eval_runner.client import Completion, anthropic_parse, openai_parse

RUN = "0b9a2c1e-0000-4000-8000-0000000000aa/e-run1"
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are a calculator."},
    {"role": "user", "content": "What is 2 + 2?"},
]


def endpoint(**changes: Any) -> EndpointSpec:
    spec: dict[str, Any] = {
        "provider": "openai",
        "name": "m",
        "baseURL": "http://vllm.models:8000/v1",
        "parameters": {"temperature": "0", "maxTokens": 16},
    }
    spec.update(changes)
    return EndpointSpec.model_validate(spec)


def test_the_key_is_a_prefixed_sha256() -> None:
    key = cache_key(endpoint(), MESSAGES, run=RUN)
    assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 64
    assert key == cache_key(endpoint(), [dict(m) for m in MESSAGES], run=RUN)


@pytest.mark.parametrize(
    "changes",
    [
        {"provider": "anthropic"},
        {"name": "m2"},
        {"baseURL": "http://other.models:8000/v1"},
        {"baseURL": "http://vllm.models:8001/v1"},
        # Two models behind one path-routed gateway are two endpoints.
        {"baseURL": "http://vllm.models:8000/llama/v1"},
        {"baseURL": "http://vllm.models:8000/v2"},
        {"baseURL": "https://vllm.models:8000/v1"},
        {"parameters": {"temperature": "0.7", "maxTokens": 16}},
        {"parameters": {"temperature": "0", "maxTokens": 17}},
        {"parameters": {"temperature": "0", "maxTokens": 16, "topP": "0.9"}},
        {"parameters": {"temperature": "0", "maxTokens": 16, "stop": ["\n"]}},
        {"parameters": {"temperature": "0", "maxTokens": 16, "seed": 1}},
    ],
)
def test_every_part_of_the_request_is_in_the_key(changes: dict[str, Any]) -> None:
    assert cache_key(endpoint(**changes), MESSAGES, run=RUN) != cache_key(
        endpoint(), MESSAGES, run=RUN
    )


def test_the_messages_the_repeat_and_the_run_are_in_the_key_but_not_the_limits() -> None:
    base = cache_key(endpoint(), MESSAGES, run=RUN)
    assert cache_key(endpoint(), MESSAGES[1:], run=RUN) != base
    other = [MESSAGES[0], {"role": "user", "content": "2+2?"}]
    assert cache_key(endpoint(), other, run=RUN) != base
    assert cache_key(endpoint(), MESSAGES, repeat=1, run=RUN) != base
    # WithinRun: another run (a re-run is a new Job) never sees this run's answers; AcrossRuns
    # (run None) shares them between runs.
    assert cache_key(endpoint(), MESSAGES, run=RUN.replace("run1", "run2")) != base
    assert cache_key(endpoint(), MESSAGES, run=None) != base
    # The same endpoint spelled another way, or paced differently, changes no answer.
    same = "http://VLLM.models:8000/v1/"
    assert cache_key(endpoint(baseURL=same), MESSAGES, run=RUN) == base
    default_port = cache_key(endpoint(baseURL="https://api.example/v1"), MESSAGES, run=RUN)
    assert cache_key(endpoint(baseURL="https://api.example:443/v1"), MESSAGES, run=RUN) == (
        default_port
    )
    assert cache_key(endpoint(maxConcurrency=64, timeoutSeconds=5), MESSAGES, run=RUN) == base


def test_a_value_reads_back_whole_or_as_a_miss() -> None:
    answer = CachedAnswer("4 \u2014 sure", 12, 3, True)
    assert CachedAnswer.decode(answer.encode()) == answer
    for garbage in (b"", b"not json", b"[]", b'{"text": "4"}', b'{"text": 4, "inputTokens": "x"}'):
        assert CachedAnswer.decode(garbage) is None


def test_the_url_is_shown_without_its_password() -> None:
    assert redacted_url("redis://:pw@cache.svc:6380/2") == "redis://cache.svc:6380/2"
    assert redacted_url("rediss://user:pw@cache.svc") == "rediss://user@cache.svc:6379/0"
    for bad in ("http://cache:6379", "redis://:pw@cache:port/0", "cache:6379"):
        with pytest.raises(CacheSettingsError) as raised:
            redacted_url(bad)
        assert "pw" not in str(raised.value)


class RecordingRedis:
    """Just enough of redis.asyncio.Redis for writes: the keys each pipeline sets."""

    def __init__(self) -> None:
        self.set_keys: list[str] = []
        self.connection_pool = self

    def pipeline(self, transaction: bool) -> RecordingRedis:
        return self

    async def __aenter__(self) -> RecordingRedis:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass

    def set(self, key: str, value: bytes, ex: int) -> None:
        self.set_keys.append(key)

    async def execute(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass


async def test_only_real_answers_are_kept() -> None:
    client = RecordingRedis()
    cache = ResponseCache(client, run=RUN, where="redis://cache:6379/0")
    cache.put("empty", Completion("", 12, 0))
    cache.put("blank", Completion(" \n", 12, 1))
    cache.put("filtered", Completion("I can't help with that.", 12, 6, filtered=True))
    cache.put("answer", Completion("4", 12, 1))
    await cache.close()
    assert client.set_keys == ["answer"]
    # What the providers say of an answer their content filter withheld.
    withheld = {"message": {"content": ""}, "finish_reason": "content_filter"}
    assert openai_parse({"choices": [withheld]}).filtered
    assert anthropic_parse({"content": [], "stop_reason": "refusal"}).filtered
    assert not openai_parse(
        {"choices": [{"message": {"content": "4"}, "finish_reason": "stop"}]}
    ).filtered
