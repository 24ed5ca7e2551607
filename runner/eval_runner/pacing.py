"""Pacing from the provider's own rate-limit headers: wait before a 429 happens.

OpenAI sends `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` and Anthropic
`anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`:
each limit, what is left of it, and the time until it is full again. Both meter a bucket that
refills continuously, so `(limit - remaining) / reset` is its refill rate.

The pacer keeps a copy of each bucket as the last answer reported it, at the moment its
request was sent (when the provider counted it), minus what was sent after that request (not
counted in that report yet), plus what refilled since. A request goes when every bucket holds
its cost; otherwise it waits for the refill. Endpoints that send none of these headers are
paced by the adaptive concurrency limit (AIMD) alone.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from eval_runner.limits import Clock

# What a request costs in each bucket: requests 1, tokens the prompt's estimate plus the output
# bound (as OpenAI counts at admission), Anthropic's input and output buckets apart.
Costs = dict[str, float]
DIMENSIONS = ("requests", "tokens", "input-tokens", "output-tokens")
# Both providers' limits are per minute: the refill rate until an answer tells better.
DEFAULT_WINDOW_SECONDS = 60.0
# See ProviderPacer.delay.
MARGIN_REQUESTS = 2
# A refill rate is read only from a bucket drained by at least this share: a nearly full bucket
# has a reset too short for its resolution (Anthropic's is in whole seconds).
MIN_DRAIN_FOR_RATE = 0.05

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """OpenAI's reset form, Go's duration syntax: "1s", "6m0s", "20ms", "1h2m3.5s"."""
    text = text.strip()
    if not text:
        return None
    position = total = 0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            return None
        total += float(match[1]) * _UNIT_SECONDS[match[2]]
        position = match.end()
    if position != len(text):
        try:
            return max(0.0, float(text))  # bare seconds
        except ValueError:
            return None
    return total


def parse_reset(text: str, now: datetime) -> tuple[float, float] | None:
    """Seconds until a bucket is full, and how precise that is: a duration (OpenAI, to the
    millisecond) or an RFC 3339 time (Anthropic, to the second unless it has a fraction)."""
    seconds = parse_duration(text)
    if seconds is not None:
        return seconds, 0.001
    text = text.strip()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # Both this time and the Date it is compared with may be cut to the second.
    resolution = 0.001 if "." in text else 1.0
    return max(0.0, (when - now).total_seconds()), resolution


@dataclass(frozen=True, slots=True)
class Report:
    """One bucket as an answer reported it."""

    limit: float
    remaining: float
    reset: float  # seconds until full
    resolution: float = 0.001  # of reset


# (dimension, limit, remaining, reset) header names: OpenAI's form, then Anthropic's.
_HEADER_NAMES = [
    (dimension, *names)
    for dimension in DIMENSIONS
    for names in (
        tuple(f"x-ratelimit-{part}-{dimension}" for part in ("limit", "remaining", "reset")),
        tuple(
            f"anthropic-ratelimit-{dimension}-{part}" for part in ("limit", "remaining", "reset")
        ),
    )
]


def parse_headers(headers: Mapping[str, str]) -> dict[str, Report]:
    """The buckets an answer's headers report, by dimension; empty when it sends none."""
    found: dict[str, Report] = {}
    now: datetime | None = None
    for dimension, limit_name, remaining_name, reset_name in _HEADER_NAMES:
        limit = headers.get(limit_name)
        if limit is None or dimension in found:
            continue
        remaining = headers.get(remaining_name)
        if remaining is None:
            continue
        if now is None:
            now = _server_now(headers.get("Date"))
        reset, resolution = parse_reset(headers.get(reset_name) or "0s", now) or (0.0, 1.0)
        try:
            report = Report(float(limit), float(remaining), reset, resolution)
        except ValueError:
            continue
        if report.limit > 0:
            found[dimension] = report
    return found


def _server_now(date: str | None) -> datetime:
    # Anthropic's resets are the provider's clock: compare them with its Date, not ours.
    if date:
        try:
            return parsedate_to_datetime(date)
        except (TypeError, ValueError, IndexError):
            pass
    return datetime.now(UTC)


@dataclass(slots=True)
class _Bucket:
    limit: float
    remaining: float
    rate: float  # refill per second


class ProviderPacer:
    """See the module's docstring. One per endpoint; every method runs on the event loop, and
    `acquire` checks and records a request with no await in between, so concurrent callers
    never overcommit a bucket."""

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, _Bucket] = {}
        self._sent = 0  # requests recorded so far; a request's number is its position
        self._totals: Costs = {}  # cumulative costs sent, by dimension
        self._history: deque[tuple[int, float, Costs]] = deque()  # (number, sent at, totals)
        self._reported = 0  # number of the request behind the buckets' state
        self._reported_at = 0.0
        self._reported_totals: Costs = {}
        self._blocked_until = 0.0

    @property
    def active(self) -> bool:
        """The endpoint sends rate-limit headers: it is paced here, not by AIMD."""
        return bool(self._buckets)

    def _pending(self, dimension: str) -> float:
        return self._totals.get(dimension, 0.0) - self._reported_totals.get(dimension, 0.0)

    def delay(self, costs: Costs) -> float:
        """Seconds until every bucket holds `costs` (0: now)."""
        now = self._clock()
        wait = self._blocked_until - now
        elapsed = now - self._reported_at
        for dimension, bucket in self._buckets.items():
            # A request bigger than the whole bucket goes when the bucket is full. Room is left
            # for MARGIN_REQUESTS more: requests sent before the reported one but counted after
            # it (another connection was faster) are in neither the report nor our pending.
            cost = costs.get(dimension, 0.0)
            need = min(cost * (1 + MARGIN_REQUESTS), bucket.limit)
            held = min(bucket.limit, bucket.remaining + bucket.rate * elapsed)
            short = need - (held - self._pending(dimension))
            if short > 0:
                wait = max(wait, short / bucket.rate)
        return max(wait, 0.0)

    async def acquire(self, costs: Costs) -> int:
        """Wait until the buckets hold `costs`, then record the request; returns its number,
        to pass to `update` with its answer's headers."""
        while (wait := self.delay(costs)) > 0:
            await self._sleep(wait)
        self._sent += 1
        for dimension, cost in costs.items():
            self._totals[dimension] = self._totals.get(dimension, 0.0) + cost
        self._history.append((self._sent, self._clock(), dict(self._totals)))
        return self._sent

    def update(self, number: int, headers: Mapping[str, str], retry_after: float | None) -> None:
        """The answer to request `number` arrived with these headers."""
        # Requests older than this one are no longer needed: their answers, should they come
        # after this one, hold an older state. So the history stays as long as what is in flight.
        sent = None
        while self._history and self._history[0][0] <= number:
            entry = self._history.popleft()
            if entry[0] == number:
                sent = entry
        reports = parse_headers(headers)
        if not reports:
            return
        if retry_after:
            # A provider that meters its buckets and still says "wait": everyone waits.
            self._blocked_until = max(self._blocked_until, self._clock() + retry_after)
        if number <= self._reported or sent is None:
            return  # an answer older than the state we hold
        self._reported, self._reported_at, self._reported_totals = sent
        for dimension, report in reports.items():
            old = self._buckets.get(dimension)
            rate = old.rate if old else report.limit / DEFAULT_WINDOW_SECONDS
            drained = report.limit - report.remaining
            if report.reset > 0 and drained >= max(1.0, MIN_DRAIN_FOR_RATE * report.limit):
                # The slowest refill the report allows: never faster than the provider's.
                rate = drained / (report.reset + report.resolution)
            self._buckets[dimension] = _Bucket(report.limit, report.remaining, rate)
