"""Scheduled re-runs with CronJob's semantics, on an injected clock (no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from eval_operator.schedule import MAX_MISSED_COUNTED, decide, parse

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
