"""A circuit breaker per endpoint: stop sending to an endpoint that keeps failing."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from eval_runner.limits import Clock

CLOSED, HALF_OPEN, OPEN = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", HALF_OPEN: "half_open", OPEN: "open"}


class CircuitBreaker:
    """Closed: requests flow and their outcomes fill a window of the last `window`. When at
    least `min_calls` outcomes are in it and `failure_ratio` of them are failures, it opens.

    Open: nothing is sent for `open_seconds`; then it is half-open and lets one probe through.
    The probe's success closes it (and empties the window); its failure opens it again for
    twice as long, up to `max_open_seconds`.

    Failures are 5xx, timeouts, connection errors and unreadable bodies. A 429 or another 4xx
    is an answer from a live endpoint and counts as a success here.
    """

    def __init__(
        self,
        *,
        window: int = 20,
        min_calls: int = 10,
        failure_ratio: float = 0.5,
        open_seconds: float = 5.0,
        max_open_seconds: float = 60.0,
        clock: Clock = time.monotonic,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.state = CLOSED
        self.opened = 0
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._failures = 0
        self._min_calls = min_calls
        self._failure_ratio = failure_ratio
        self._base_open = open_seconds
        self._max_open = max_open_seconds
        self._open_for = open_seconds
        self._opened_at = 0.0
        self._probing = False
        self._clock = clock
        self._on_change = on_change

    @property
    def failures(self) -> int:
        """Failures among the outcomes in the window."""
        return self._failures

    def allow(self) -> float | bool:
        """True: send (a half-open breaker's probe included). A float: seconds until a probe
        may go."""
        if self.state == CLOSED:
            return True
        now = self._clock()
        if self.state == OPEN:
            remaining = self._opened_at + self._open_for - now
            if remaining > 0:
                return remaining
            self._set(HALF_OPEN)
        if self._probing:
            return max(0.05, self._open_for / 10)  # wait for the probe's verdict
        self._probing = True
        return True

    def record(self, ok: bool) -> None:
        if self.state == HALF_OPEN:
            if not self._probing:
                return
            self._probing = False
            if ok:
                self._outcomes.clear()
                self._failures = 0
                self._open_for = self._base_open
                self._set(CLOSED)
            else:
                self._open_for = min(self._open_for * 2, self._max_open)
                self._open()
            return
        if self.state == OPEN:
            return  # a request sent before it opened: the probe decides
        if len(self._outcomes) == self._outcomes.maxlen and not self._outcomes[0]:
            self._failures -= 1
        self._outcomes.append(ok)
        if not ok:
            self._failures += 1
            calls = len(self._outcomes)
            if calls >= self._min_calls and self._failures >= self._failure_ratio * calls:
                self._open()

    def abandon(self) -> None:
        """The probe this breaker let through was never sent: let the next caller probe."""
        self._probing = False

    def _open(self) -> None:
        self._opened_at = self._clock()
        self.opened += 1
        self._set(OPEN)

    def _set(self, state: int) -> None:
        if state != self.state:
            self.state = state
            if self._on_change is not None:
                self._on_change(state)
