"""When to try a failed request again, and how long to wait first."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Request timeout, conflict and rate limiting are worth another try; other 4xx are our fault.
RETRYABLE_STATUS = frozenset({408, 409, 429})
# Answers that mean "too much load": they cut the adaptive concurrency limit.
THROTTLE_STATUS = frozenset({429, 503})


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return seconds if seconds >= 0 and seconds == seconds else None  # not negative, not NaN


@dataclass(frozen=True)
class RetryPolicy:
    """The retry budget of one request.

    Errors (5xx, timeouts, connection failures, truncated bodies) may happen `max_errors`
    times; a sample whose request fails more often is counted as errored. Throttling (429) is
    a signal to slow down, not a failure: it has its own, larger budget, `max_throttled`.
    Waits are exponential backoff with full jitter (uniform in [0, min(max_delay,
    base_delay * 2**(n-1))]), unless the server sent Retry-After: then at least that long
    (capped at max_retry_after), plus up to 10% so that clients throttled together do not all
    come back at the same instant.
    """

    max_errors: int = 6
    max_throttled: int = 20
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 300.0

    def delay(
        self, failures: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        draw = (rng or random).uniform
        if retry_after is not None:
            wait = min(retry_after, self.max_retry_after)
            return wait + draw(0.0, 0.1 * wait)
        return draw(0.0, min(self.max_delay, self.base_delay * 2 ** (failures - 1)))
