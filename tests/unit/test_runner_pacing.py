"""Pacing from the providers' rate-limit headers: parsing, and waiting before a 429 happens."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict

from eval_runner.pacing import ProviderPacer, Report, parse_duration, parse_headers

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0s", 0.0),
        ("2.5", 2.5),
        ("soon", None),
        ("1x", None),
        ("", None),
    ],
)
def test_openai_reset_durations(text: str, seconds: float | None) -> None:
    parsed = parse_duration(text)
    if seconds is None:
        assert parsed is None
    else:
        assert parsed == pytest.approx(seconds)


def test_openai_headers() -> None:
    headers = CIMultiDict(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "29000",
            "x-ratelimit-reset-tokens": "2s",
        }
    )
    assert parse_headers(headers) == {
        "requests": Report(500, 499, 0.12),
        "tokens": Report(30000, 29000, 2.0),
    }


def test_anthropic_headers_reset_against_the_server_date() -> None:
    headers = CIMultiDict(
        {
            "Date": "Thu, 01 Jan 2026 12:00:00 GMT",
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "10",
            "anthropic-ratelimit-requests-reset": "2026-01-01T12:00:48Z",
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "8000",
            "anthropic-ratelimit-output-tokens-reset": "2026-01-01T12:00:00Z",
        }
    )
    # Whole seconds, so a rate read from them is taken at its slowest (see the pacer).
    assert parse_headers(headers) == {
        "requests": Report(50, 10, 48.0, 1.0),
        "output-tokens": Report(8000, 8000, 0.0, 1.0),
    }


def test_no_headers_no_pacing() -> None:
    assert parse_headers(CIMultiDict({"Content-Type": "application/json"})) == {}


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def limits(remaining: int, reset: str, limit: int = 10) -> CIMultiDict[str]:
    return CIMultiDict(
        {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": reset,
        }
    )


async def test_requests_wait_for_the_refill_once_the_bucket_is_empty() -> None:
    time = FakeTime()
    pacer = ProviderPacer(clock=time.clock, sleep=time.sleep)
    costs = {"requests": 1.0}
    first = await pacer.acquire(costs)
    assert not pacer.active and time.slept == []  # nothing known yet: no wait
    # The bucket holds 10 and refills 10 every 2 s (5 a second); 3 are left after this one.
    pacer.update(first, limits(3, "1.399s"), None)
    assert pacer.active
    await pacer.acquire(costs)  # 3 held: this one and the margin of 2
    assert time.slept == []
    await pacer.acquire(costs)  # 2 held now: one more must refill first, 1/5 s
    assert sum(time.slept) == pytest.approx(0.2)


async def test_requests_sent_after_the_report_count_against_it() -> None:
    time = FakeTime()
    pacer = ProviderPacer(clock=time.clock, sleep=time.sleep)
    costs = {"requests": 1.0}
    numbers = [await pacer.acquire(costs) for _ in range(3)]  # in flight together
    # The answer to the first says 5 left: the two sent after it are not counted in that yet.
    pacer.update(numbers[0], limits(5, "0.999s"), None)
    await pacer.acquire(costs)  # 5 - 2 in flight = 3: this one and the margin
    assert time.slept == []
    await pacer.acquire(costs)
    assert sum(time.slept) == pytest.approx(0.2)  # 5 drained in 1 s: 5 a second


async def test_an_older_answer_never_overwrites_a_newer_report() -> None:
    time = FakeTime()
    pacer = ProviderPacer(clock=time.clock, sleep=time.sleep)
    costs = {"requests": 1.0}
    first, second = await pacer.acquire(costs), await pacer.acquire(costs)
    pacer.update(second, limits(5, "1s"), None)
    pacer.update(first, limits(0, "2s"), None)  # arrived late: stale
    await pacer.acquire(costs)
    assert time.slept == []


async def test_retry_after_from_a_metered_provider_holds_every_request() -> None:
    time = FakeTime()
    pacer = ProviderPacer(clock=time.clock, sleep=time.sleep)
    number = await pacer.acquire({"requests": 1.0})
    pacer.update(number, limits(10, "0s"), retry_after=3.0)
    await pacer.acquire({"requests": 1.0})
    assert sum(time.slept) == pytest.approx(3.0)


async def test_a_cost_bigger_than_the_bucket_waits_for_a_full_bucket() -> None:
    time = FakeTime()
    pacer = ProviderPacer(clock=time.clock, sleep=time.sleep)
    number = await pacer.acquire({"tokens": 10.0})
    headers = CIMultiDict(
        {
            "x-ratelimit-limit-tokens": "100",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "9.999s",
        }
    )
    pacer.update(number, headers, None)
    await pacer.acquire({"tokens": 1000.0})  # capped at the bucket: waits until it is full
    assert sum(time.slept) == pytest.approx(10.0)
