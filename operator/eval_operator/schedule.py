"""When a scheduled re-run is due: CronJob's semantics, computed by croniter.

A pure function of the schedule, the time of the last run it started, and now (the caller's
clock, so tests inject one): like the CronJob controller, a schedule missed while the operator
was down runs once, not once per missed time, and not at all when its most recent missed time
is older than the starting deadline. The operator asks again at `next_at` (a bounded wait of its
work queue, not a timer per object).

Schedule times are wall-clock times in `timeZone`, but every comparison and every difference
(due or not, how late, the starting deadline) is between instants in UTC: Python compares two
datetimes of the same zone by their wall clocks, which is wrong by an hour across a daylight
saving change. Across the changes the schedule behaves as the CronJob controller's (robfig/cron
with the time zone):
- spring forward (America/New_York 2027-03-14, 02:00 EST becomes 03:00 EDT): a wall time in the
  skipped hour does not happen. A 02:30 daily run does not run that day (the next is 02:30 EDT
  on the 15th); an hourly run goes from 01:00 EST to 03:00 EDT, an hour apart as always.
- fall back (2027-11-07, 02:00 EDT becomes 01:00 EST): a wall time in the repeated hour happens
  twice. A 02:30 daily run runs once (02:30 EST, the hour 02:00-03:00 happens once); a 01:30
  daily run runs at 01:30 EDT and again at 01:30 EST; an hourly run runs every hour, 01:00 EDT
  and 01:00 EST both. (In Europe/Berlin clocks go back from 03:00 to 02:00: there a 02:30
  daily run is in the repeated hour and runs twice.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

# As the CronJob controller: more missed times than this means a clock or schedule problem;
# the count stops there (the run still happens once).
MAX_MISSED_COUNTED = 100
# croniter's previous time is strictly before its start: start just after now to include now.
_JUST_AFTER = timedelta(microseconds=1)


@dataclass(frozen=True)
class ScheduleDecision:
    run_now: bool
    scheduled_for: datetime | None  # the schedule time a run now stands for (UTC)
    missed: int  # schedule times skipped before it (they run once, as one)
    too_late: bool  # the latest time passed more than the starting deadline ago: skipped
    next_at: datetime  # the next schedule time after now (UTC)


def cron_problem(expression: str) -> str | None:
    """Why the expression is no schedule (five fields in their ranges, or a macro), or None."""
    fields = expression.split()
    if not (expression.startswith("@") or len(fields) == 5) or not croniter.is_valid(expression):
        return (
            f"{expression!r} is not a cron expression of five fields (minute 0-59, hour 0-23, "
            "day-of-month 1-31, month 1-12, day-of-week 0-6) or a macro such as @daily"
        )
    return None


def zone_problem(time_zone: str | None) -> str | None:
    """Why the time zone is no IANA time zone, or None (no zone is UTC)."""
    try:
        ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return f"{time_zone!r} is not an IANA time zone such as Europe/Paris"
    return None


def problems(expression: str, time_zone: str | None, *, cron_at: str, zone_at: str) -> list[str]:
    """What is wrong with a schedule of the spec, each as "<field>: why" (`cron_at` and
    `zone_at` name its two fields): the CRD's pattern cannot check ranges or zone names."""
    found = ((cron_at, cron_problem(expression)), (zone_at, zone_problem(time_zone)))
    return [f"{at}: {problem}" for at, problem in found if problem is not None]


def parse(expression: str, time_zone: str | None) -> ZoneInfo:
    """The schedule's zone, after checking the expression and the zone."""
    problem = cron_problem(expression) or zone_problem(time_zone)
    if problem is not None:
        raise ValueError(problem)
    return ZoneInfo(time_zone or "UTC")


def _times(
    expression: str, zone: ZoneInfo, start: datetime, *, forward: bool
) -> Iterator[datetime]:
    """The schedule's times after (or, not forward, before) `start`, as UTC instants.

    For a wall time that does not exist (the hour skipped at spring forward) croniter yields
    the first time after the gap (03:00 for 02:30) though the expression does not name it; the
    CronJob controller skips such a time, so this does too: a time is kept only when its minute
    and hour are the expression's (a gap never changes the date).
    """
    minutes, hours = croniter(expression).expanded[:2]
    times = croniter(expression, start.astimezone(zone))
    while True:
        wall = times.get_next(datetime) if forward else times.get_prev(datetime)
        if (minutes == ["*"] or wall.minute in minutes) and (hours == ["*"] or wall.hour in hours):
            yield wall.astimezone(UTC)


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
    now = now.astimezone(UTC)
    next_at = next(_times(expression, zone, now, forward=True))
    latest: datetime | None = None
    count = 0
    for candidate in _times(expression, zone, since, forward=True):
        if candidate > now:
            break
        latest, count = candidate, count + 1
        if count > MAX_MISSED_COUNTED:
            # Counting stops; only the most recent time is run: the first at or before now.
            latest = next(_times(expression, zone, now + _JUST_AFTER, forward=False))
            break
    if latest is None:
        return ScheduleDecision(False, None, 0, False, next_at)
    missed = min(count - 1, MAX_MISSED_COUNTED)
    if (
        starting_deadline_seconds is not None
        and (now - latest).total_seconds() > starting_deadline_seconds
    ):
        return ScheduleDecision(False, latest, missed, True, next_at)
    return ScheduleDecision(True, latest, missed, False, next_at)
