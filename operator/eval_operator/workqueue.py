"""A keyed work queue: what controller-runtime gives Go operators, for our reconciles.

Watch events of an Evaluation, its Job and its pods, and the operator-wide progress loop, all
ask for the same thing: "reconcile this Evaluation". The queue turns any number of such asks
into reconciles that run one at a time per key and `workers` at a time overall; an ask that comes
while the key is being reconciled makes it run once more afterwards; a reconcile may ask to be
run again after a delay (a bounded wait ending); a reconcile that raises is retried with
exponential backoff, a bounded number of times, then waits for the next event. No per-object
timer exists anywhere: kopf timers put a finalizer on every object they run on.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)

# Reconcile(key, latest body seen by a watch or None) -> seconds until it should run again.
Handler = Callable[[Any, Any], Awaitable[float | None]]

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 300.0
MAX_RETRIES = 10


class WorkQueue:
    def __init__(
        self,
        handler: Handler,
        *,
        workers: int = 64,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[Hashable, BaseException], None] | None = None,
    ) -> None:
        self._handler = handler
        self._workers = workers
        self._clock = clock
        self._on_error = on_error
        self._ready: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()  # in _ready
        self._processing: set[Hashable] = set()
        self._dirty: set[Hashable] = set()  # asked for again while processing
        self._hints: dict[Hashable, Any] = {}
        self._due: dict[Hashable, float] = {}  # key -> earliest delayed run
        self._heap: list[tuple[float, int, Hashable]] = []
        self._sequence = itertools.count()
        self._wakeup = asyncio.Event()
        self._failures: dict[Hashable, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # --- asking -------------------------------------------------------------------------------

    def add(self, key: Hashable, hint: Any = None) -> None:
        """Reconcile `key` soon; `hint` is the newest body a watch delivered (saves a read)."""
        if hint is not None:
            self._hints[key] = hint
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def add_after(self, key: Hashable, delay: float) -> None:
        """Reconcile `key` after `delay` seconds (the earliest of several asks wins)."""
        if delay <= 0:
            self.add(key)
            return
        due = self._clock() + delay
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._sequence), key))
        self._wakeup.set()

    def forget(self, key: Hashable) -> None:
        """The object is gone: drop its hint, delays and failure count."""
        self._hints.pop(key, None)
        self._due.pop(key, None)
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._queued) + len(self._processing) + len(self._due)

    # --- running ------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._timer(), name="workqueue-timer")]
        self._tasks += [
            asyncio.create_task(self._worker(), name=f"workqueue-worker-{i}")
            for i in range(self._workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _timer(self) -> None:
        while True:
            self._wakeup.clear()
            now = self._clock()
            while self._heap and self._heap[0][0] <= now:
                due, _, key = heapq.heappop(self._heap)
                if self._due.get(key) == due:
                    del self._due[key]
                    self.add(key)
            timeout = self._heap[0][0] - now if self._heap else None
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                pass

    async def _worker(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._processing.add(key)
            hint = self._hints.pop(key, None)
            try:
                again = await self._handler(key, hint)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a reconcile failed: back off, then try again (bounded)
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                if self._on_error is not None:
                    self._on_error(key, err)
                if failures <= MAX_RETRIES:
                    delay = min(BACKOFF_BASE_SECONDS * 2 ** (failures - 1), BACKOFF_MAX_SECONDS)
                    log.warning(
                        "reconcile of %s failed (%r); retry %d in %.0fs", key, err, failures, delay
                    )
                    self.add_after(key, delay)
                else:
                    log.error(
                        "reconcile of %s failed %d times; waiting for its next event", key, failures
                    )
                    self._failures.pop(key, None)
            else:
                self._failures.pop(key, None)
                if again is not None:
                    self.add_after(key, again)
            finally:
                self._processing.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)
