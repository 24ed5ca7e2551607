"""When a scheduled re-run is due: CronJob's semantics, computed by croniter.

A pure function of the schedule, the time of the last run it started, and now (the caller's
clock, so tests inject one): like the CronJob controller, a schedule missed while the operator
was down runs once, not once per missed time, and not at all when its most recent missed time
is older than the starting deadline. The operator asks again at `next_at` (a bounded wait of its
work queue, not a timer per object).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

# As the CronJob controller: more missed times than this means a clock or schedule problem;
# the count stops there (the run still happens once).
MAX_MISSED_COUNTED = 100


@dataclass(frozen=True)
class ScheduleDecision:
    run_now: bool
    scheduled_for: datetime | None  # the schedule time a run now stands for
    missed: int  # schedule times skipped before it (they run once, as one)
    too_late: bool  # the latest time passed more than the starting deadline ago: skipped
    next_at: datetime  # the next schedule time after now


def parse(expression: str, time_zone: str | None) -> ZoneInfo:
    """The schedule's zone, after checking the expression: five fields or a macro."""
    fields = expression.split()
    if not (expression.startswith("@") or len(fields) == 5) or not croniter.is_valid(expression):
        raise ValueError(
            f"schedule {expression!r} is not a cron expression of five fields "
            "(minute hour day-of-month month day-of-week) or a macro such as @daily"
        )
    try:
        return ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timeZone {time_zone!r} is not an IANA time zone") from None


def decide(
    expression: str,
    time_zone: str | None,
    *,
    since: datetime,
    now: datetime,
    starting_deadline_seconds: int | None = None,
) -> ScheduleDecision:
    """Whether a run is due at `now` for the schedule times after `since` (the last scheduled
    run's time, or the object's creation). Both datetimes must be timezone-aware."""
    if since.tzinfo is None or now.tzinfo is None:
        raise ValueError("since and now must be timezone-aware")
    zone = parse(expression, time_zone)
    local_now = now.astimezone(zone)
    next_at = croniter(expression, local_now).get_next(datetime)
    times = croniter(expression, since.astimezone(zone))
    latest: datetime | None = None
    count = 0
    while (candidate := times.get_next(datetime)) <= local_now:
        latest, count = candidate, count + 1
        if count > MAX_MISSED_COUNTED:
            # Counting stops; only the most recent time is run.
            latest = croniter(expression, local_now + timedelta(microseconds=1)).get_prev(datetime)
            break
    if latest is None:
        return ScheduleDecision(False, None, 0, False, next_at)
    missed = min(count - 1, MAX_MISSED_COUNTED)
    if (
        starting_deadline_seconds is not None
        and (local_now - latest).total_seconds() > starting_deadline_seconds
    ):
        return ScheduleDecision(False, latest, missed, True, next_at)
    return ScheduleDecision(True, latest, missed, False, next_at)
