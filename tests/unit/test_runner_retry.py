"""Retry-After parsing (seconds and HTTP-date) and backoff with full jitter."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from eval_runner.retry import RetryPolicy, parse_retry_after

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("1", 1.0),
        ("0", 0.0),
        (" 2.5 ", 2.5),
        ("Mon, 23 Nov 2026 10:00:30 GMT", 30.0),
        ("Mon, 23 Nov 2026 09:59:00 GMT", 0.0),  # in the past: go now
        ("-3", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    rng = random.Random(7)
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        delays = [policy.delay(failures, None, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert min(delays) < ceiling / 4 and max(delays) > ceiling * 3 / 4  # full jitter


def test_retry_after_is_honoured_with_a_little_spread() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    rng = random.Random(1)
    delays = [policy.delay(1, 2.0, rng) for _ in range(200)]
    assert all(2.0 <= d <= 2.2 for d in delays) and len(set(delays)) > 1
    assert 60.0 <= policy.delay(1, 3600.0, rng) <= 66.0  # capped
