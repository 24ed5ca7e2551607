"""Adaptive concurrency (AIMD) and token buckets, on an injected clock: no test sleeps."""

from __future__ import annotations

import asyncio

import pytest

from eval_runner.limits import AdaptiveLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttling_halves_at_most_once_per_cooldown_and_never_below_one() -> None:
    clock = Clock()
    changes: list[int] = []
    limiter = AdaptiveLimiter(64, cooldown=1.0, clock=clock, on_change=changes.append)
    assert limiter.on_throttled() and limiter.limit == 32
    clock.now += 0.5
    assert not limiter.on_throttled() and limiter.limit == 32  # same burst of 429s
    for _ in range(10):
        clock.now += 1.0
        limiter.on_throttled()
    assert limiter.limit == 1 and limiter.cuts == 6
    assert changes == [32, 16, 8, 4, 2, 1]


def test_success_grows_the_limit_by_one_per_window_up_to_the_maximum() -> None:
    clock = Clock()
    limiter = AdaptiveLimiter(8, clock=clock)
    limiter.on_throttled()
    assert limiter.limit == 4
    for _ in range(3):
        limiter.on_success()
    assert limiter.limit == 4  # a window is `limit` successes
    limiter.on_success()
    assert limiter.limit == 5
    for _ in range(100):
        limiter.on_success()
    assert limiter.limit == 8  # bounded by maxConcurrency


async def test_slots_are_bounded_by_the_limit_and_served_in_order() -> None:
    limiter = AdaptiveLimiter(2, clock=Clock())
    await limiter.acquire()
    await limiter.acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        await limiter.acquire()
        order.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert limiter.in_flight == 2 and order == []
    limiter.release()
    await asyncio.sleep(0)
    assert order == [0]
    limiter.on_throttled()  # limit 1: with 2 in flight, the next release frees no slot
    limiter.release()
    await asyncio.sleep(0)
    assert order == [0] and limiter.in_flight == 1
    limiter.release()
    await asyncio.sleep(0)
    assert order == [0, 1]
    waiters[2].cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    limiter.release()
    assert limiter.in_flight == 0


def test_token_bucket_refills_at_its_rate_and_allows_debt_for_big_takes() -> None:
    clock = Clock()
    bucket = TokenBucket.per_minute(120, clock=clock)  # 2 per second, holds 2
    assert bucket.try_take(1) == 0 and bucket.try_take(1) == 0
    assert bucket.try_take(1) == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.try_take(1) == 0
    clock.now += 10  # never more than the capacity
    assert bucket.tokens == 0 and bucket.try_take(0) == 0 and bucket.tokens == 2
    # A take above the capacity waits for a full bucket, then goes into debt.
    assert bucket.try_take(10) == 0 and bucket.tokens == -8
    assert bucket.try_take(1) == pytest.approx(4.5)


def test_token_bucket_adjusts_to_the_real_cost() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, capacity=100, clock=clock)
    assert bucket.try_take(80) == 0
    bucket.adjust(-50)  # the request used 50 tokens fewer than estimated
    assert bucket.tokens == 70
    bucket.adjust(30)
    assert bucket.tokens == 40
