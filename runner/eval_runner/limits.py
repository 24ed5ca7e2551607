"""How fast requests may go: an adaptive concurrency limit (AIMD) and token buckets.

Both take an injected clock, so their arithmetic is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]


class AdaptiveLimiter:
    """A concurrency limit that adapts as TCP's congestion window does.

    It starts at `max_limit`. A throttling answer (429, 503) halves it, at most once per
    `cooldown` seconds, so one burst of 429s, all caused by the same overload, cuts once. After
    `limit` successes in a row without a cut it grows by one (additive increase), never beyond
    `max_limit`. Waiters are served first come, first served.
    """

    def __init__(
        self,
        max_limit: int,
        *,
        decrease: float = 0.5,
        cooldown: float = 1.0,
        clock: Clock = time.monotonic,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        if max_limit < 1:
            raise ValueError("max_limit must be at least 1")
        self.max_limit = max_limit
        self.limit = max_limit
        self.in_flight = 0
        self.cuts = 0
        self._decrease = decrease
        self._cooldown = cooldown
        self._clock = clock
        self._on_change = on_change
        self._last_cut = float("-inf")
        self._successes = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as we were cancelled: give it back
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def on_throttled(self) -> bool:
        """A 429/503: cut multiplicatively unless a cut happened within the cooldown."""
        now = self._clock()
        if now - self._last_cut < self._cooldown:
            return False
        self._last_cut = now
        self._successes = 0
        new = max(1, int(self.limit * self._decrease))
        if new != self.limit:
            self.limit = new
            self.cuts += 1
            self._changed()
        return True

    def on_success(self) -> None:
        if self.limit >= self.max_limit:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit += 1
            self._changed()
            self._wake()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.limit)

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


class TokenBucket:
    """`rate` tokens per second, holding at most `capacity`.

    A take larger than the capacity waits for a full bucket and then drives it into debt, so a
    request bigger than one second's allowance still goes, and the ones after it wait longer.
    """

    def __init__(self, rate: float, capacity: float, *, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self._clock = clock
        self._updated = clock()

    @classmethod
    def per_minute(cls, amount: int, *, clock: Clock = time.monotonic) -> TokenBucket:
        # One second's worth of burst: providers meter their per-minute limits over shorter
        # windows, and a full minute's burst at start is what gets a client throttled.
        rate = amount / 60.0
        return cls(rate, max(1.0, rate), clock=clock)

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate)
        self._updated = now

    def try_take(self, amount: float) -> float:
        """Take `amount` and return 0, or take nothing and return the seconds to wait."""
        self._refill()
        needed = min(amount, self.capacity)
        if self.tokens >= needed:
            self.tokens -= amount
            return 0.0
        return (needed - self.tokens) / self.rate

    async def take(self, amount: float) -> None:
        # Waiting for tokens is waiting for time to pass: there is no event to wait on.
        while (wait := self.try_take(amount)) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)

    def adjust(self, delta: float) -> None:
        """Charge `delta` more (or give back, when negative) once the real cost is known."""
        self._refill()
        self.tokens = min(self.capacity, self.tokens - delta)
