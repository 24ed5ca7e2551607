"""Scheduled re-runs with CronJob's semantics, on an injected clock (no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from eval_operator.schedule import MAX_MISSED_COUNTED, decide, parse, problems

T0 = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)


def test_nothing_is_due_before_the_first_time_and_the_next_one_is_known() -> None:
    decision = decide("0 3 * * *", None, since=T0, now=T0 + timedelta(hours=2))
    assert not decision.run_now and decision.scheduled_for is None
    assert decision.next_at == datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def test_a_due_time_runs_once_and_then_not_again() -> None:
    now = T0 + timedelta(hours=3, minutes=1)
    decision = decide("0 3 * * *", None, since=T0, now=now)
    assert decision.run_now and decision.missed == 0
    assert decision.scheduled_for == datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    # The run started records its time: asked again, nothing is due until tomorrow.
    again = decide("0 3 * * *", None, since=decision.scheduled_for, now=now + timedelta(minutes=5))
    assert not again.run_now
    assert again.next_at == datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


def test_days_missed_while_the_operator_was_down_run_once() -> None:
    last = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    now = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    decision = decide("0 3 * * *", None, since=last, now=now)
    assert decision.run_now
    assert decision.scheduled_for == datetime(2026, 12, 4, 3, 0, tzinfo=UTC)
    assert decision.missed == 2  # the 2nd and the 3rd ran as one with the 4th


def test_past_the_starting_deadline_the_missed_time_is_skipped() -> None:
    last = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    now = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)  # two hours after the 3:00 run
    late = decide("0 3 * * *", None, since=last, now=now, starting_deadline_seconds=3600)
    assert not late.run_now and late.too_late
    assert late.next_at == datetime(2026, 12, 3, 3, 0, tzinfo=UTC)
    in_time = decide("0 3 * * *", None, since=last, now=now, starting_deadline_seconds=3 * 3600)
    assert in_time.run_now


def test_a_time_zone_moves_the_schedule_with_daylight_saving_time() -> None:
    paris = ZoneInfo("Europe/Paris")
    winter = decide("0 3 * * *", "Europe/Paris", since=T0, now=T0 + timedelta(hours=1))
    assert winter.next_at.astimezone(UTC) == datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    summer_start = datetime(2026, 7, 1, 0, 0, tzinfo=paris)
    summer = decide("0 3 * * *", "Europe/Paris", since=summer_start, now=summer_start)
    assert summer.next_at.astimezone(UTC) == datetime(2026, 7, 1, 1, 0, tzinfo=UTC)


def _runs(expression: str, time_zone: str, start: datetime, end: datetime) -> list[datetime]:
    """The schedule times an operator that wakes at every `next_at` runs between two instants."""
    runs: list[datetime] = []
    since = now = start
    while now < end:
        decision = decide(expression, time_zone, since=since, now=now)
        if decision.run_now:
            assert decision.scheduled_for is not None
            runs.append(decision.scheduled_for)
            since = decision.scheduled_for
        now = decision.next_at
    return runs


def _utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


def test_a_run_late_across_spring_forward_is_within_its_starting_deadline() -> None:
    # 01:58 EST is 06:58 UTC; the operator asks at 03:03 EDT (07:03 UTC), 5 minutes late, an
    # hour later on the wall clock.
    decision = decide(
        "58 1 * * *",
        "America/New_York",
        since=_utc(2027, 3, 13, 6, 58),
        now=_utc(2027, 3, 14, 7, 3),
        starting_deadline_seconds=1800,
    )
    assert decision.run_now and not decision.too_late
    assert decision.scheduled_for == _utc(2027, 3, 14, 6, 58)
    assert decision.next_at == _utc(2027, 3, 15, 5, 58)  # 01:58 EDT


def test_a_run_late_across_fall_back_is_too_late_by_the_instant_not_the_wall_clock() -> None:
    # 01:50 EDT is 05:50 UTC; at 01:10 EST (06:10 UTC) it is 20 minutes late, though the wall
    # clock reads 40 minutes earlier.
    decision = decide(
        "50 1 * * *",
        "America/New_York",
        since=_utc(2027, 11, 6, 5, 50),
        now=_utc(2027, 11, 7, 6, 10),
        starting_deadline_seconds=600,
    )
    assert decision.too_late and not decision.run_now
    assert decision.scheduled_for == _utc(2027, 11, 7, 5, 50)


def test_an_hourly_schedule_runs_every_hour_across_fall_back_and_spring_forward() -> None:
    # Fall back: 01:00 EDT (05:00 UTC) and 01:00 EST (06:00 UTC) both run.
    fall = _runs(
        "0 * * * *", "America/New_York", _utc(2027, 11, 7, 3, 30), _utc(2027, 11, 7, 8, 30)
    )
    assert fall == [_utc(2027, 11, 7, hour) for hour in (4, 5, 6, 7, 8)]
    # Spring forward: 01:00 EST (06:00 UTC), then 03:00 EDT (07:00 UTC): every hour still.
    spring = _runs(
        "0 * * * *", "America/New_York", _utc(2027, 3, 14, 4, 30), _utc(2027, 3, 14, 8, 30)
    )
    assert spring == [_utc(2027, 3, 14, hour) for hour in (5, 6, 7, 8)]


@pytest.mark.parametrize(
    ("time_zone", "spring", "fall", "spring_runs", "fall_runs"),
    [
        # New York 2027: 02:00 EST -> 03:00 EDT on March 14; 02:00 EDT -> 01:00 EST on November
        # 7 (02:30 happens once, in EST).
        (
            "America/New_York",
            _utc(2027, 3, 14),
            _utc(2027, 11, 7),
            [_utc(2027, 3, 13, 7, 30), _utc(2027, 3, 15, 6, 30)],
            [_utc(2027, 11, 6, 6, 30), _utc(2027, 11, 7, 7, 30), _utc(2027, 11, 8, 7, 30)],
        ),
        # Berlin 2027: 02:00 CET -> 03:00 CEST on March 28; 03:00 CEST -> 02:00 CET on October
        # 31 (02:30 happens twice, in CEST and in CET).
        (
            "Europe/Berlin",
            _utc(2027, 3, 28),
            _utc(2027, 10, 31),
            [_utc(2027, 3, 27, 1, 30), _utc(2027, 3, 29, 0, 30)],
            [
                _utc(2027, 10, 30, 0, 30),
                _utc(2027, 10, 31, 0, 30),
                _utc(2027, 10, 31, 1, 30),
                _utc(2027, 11, 1, 1, 30),
            ],
        ),
    ],
)
def test_a_0230_daily_run_is_skipped_at_spring_forward_and_runs_in_each_0230_at_fall_back(
    time_zone: str,
    spring: datetime,
    fall: datetime,
    spring_runs: list[datetime],
    fall_runs: list[datetime],
) -> None:
    """As the CronJob controller (robfig/cron): a wall time that does not exist is skipped, one
    that happens twice runs twice."""
    day = timedelta(days=1)
    assert _runs("30 2 * * *", time_zone, spring - day, spring + 2 * day) == spring_runs
    assert _runs("30 2 * * *", time_zone, fall - day, fall + 2 * day) == fall_runs


def test_a_very_long_outage_counts_up_to_a_bound_and_runs_the_latest() -> None:
    decision = decide("* * * * *", None, since=T0, now=T0 + timedelta(days=2, seconds=30))
    assert decision.run_now and decision.missed == MAX_MISSED_COUNTED
    assert decision.scheduled_for == T0 + timedelta(days=2)


@pytest.mark.parametrize(
    "expression", ["every night", "* * * *", "0 3 * * * *", "61 * * * *", "", "@sometimes"]
)
def test_what_is_not_a_five_field_cron_expression_is_refused(expression: str) -> None:
    with pytest.raises(ValueError, match="not a cron expression"):
        parse(expression, None)


def test_an_unknown_time_zone_and_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="IANA"):
        parse("@daily", "Mars/Olympus")
    with pytest.raises(ValueError, match="timezone-aware"):
        decide("@daily", None, since=datetime(2026, 1, 1), now=T0)
    assert parse("@daily", None) == ZoneInfo("UTC")


def test_problems_name_the_fields_of_the_spec_at_fault() -> None:
    """What the CRD's pattern lets through (ranges, zone names): InvalidSpec messages."""
    at = {"cron_at": "spec.schedule.cron", "zone_at": "spec.schedule.timeZone"}
    assert problems("0 2 * * *", "Europe/Paris", **at) == []
    assert problems("@daily", None, **at) == []
    (cron,) = problems("99 99 * * *", None, **at)
    assert cron.startswith("spec.schedule.cron: '99 99 * * *' is not a cron expression")
    (zone,) = problems("0 2 * * *", "Mars/Olympus", **at)
    assert zone == (
        "spec.schedule.timeZone: 'Mars/Olympus' is not an IANA time zone such as Europe/Paris"
    )
    assert len(problems("0 24 * * *", "Nowhere", **at)) == 2
