"""Per-client rate limiting: a token bucket per client address.

Each client may send `burst` requests at once and `rate` a second after that; a refused request
learns when the next token comes (Retry-After, in whole seconds, rounded up). The buckets are
an LRU of at most `max_clients` addresses, so a flood of distinct addresses costs bounded memory
(an evicted client starts again with a full bucket, which errs on the side of serving).

The client is the connection's peer address, never a header: X-Forwarded-For is whatever the
client wants it to be.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBuckets:
    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> float:
        """Take a token for `client`: 0 when allowed, else the seconds until one is there."""
        now = self._clock()
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[client] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        """The Retry-After header's value: whole seconds, at least 1."""
        return str(max(1, math.ceil(wait)))

    def __len__(self) -> int:
        return len(self._buckets)
