"""The circuit breaker's state machine, on an injected clock."""

from __future__ import annotations

from eval_runner.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, states: list[int] | None = None) -> CircuitBreaker:
    return CircuitBreaker(
        window=10,
        min_calls=4,
        failure_ratio=0.5,
        open_seconds=5.0,
        max_open_seconds=12.0,
        clock=clock,
        on_change=None if states is None else states.append,
    )


def test_sporadic_failures_keep_it_closed() -> None:
    b = breaker(Clock())
    for i in range(100):
        b.record(i % 5 != 0)  # 20% failures
    assert b.state == CLOSED and b.allow() is True


def test_sustained_failures_open_it_and_a_probe_closes_it() -> None:
    clock = Clock()
    states: list[int] = []
    b = breaker(clock, states)
    for ok in (True, False, True, False):  # 2 of 4 failed: half the window
        b.record(ok)
    assert b.state == OPEN and b.opened == 1
    assert b.allow() == 5.0
    clock.now = 4.0
    assert b.allow() == 1.0
    b.record(True)  # a request sent before it opened: ignored
    assert b.state == OPEN
    clock.now = 5.0
    assert b.allow() is True and b.state == HALF_OPEN  # this caller is the probe
    assert b.allow() is not True  # one probe at a time
    b.record(True)
    assert b.state == CLOSED and b.allow() is True
    assert states == [OPEN, HALF_OPEN, CLOSED]


def test_a_failed_probe_reopens_for_longer_up_to_the_maximum() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        b.record(False)
    for expected in (10.0, 12.0, 12.0):
        clock.now += 100
        assert b.allow() is True
        b.record(False)
        assert b.state == OPEN and b.allow() == expected


def test_an_abandoned_probe_lets_the_next_caller_probe() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        b.record(False)
    clock.now = 5.0
    assert b.allow() is True
    b.abandon()
    assert b.allow() is True and b.state == HALF_OPEN
