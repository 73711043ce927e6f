"""Occurrences: the periods of each obligation, derived from the schedule (pure)."""

from __future__ import annotations

import calendar as _calendar
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from .schedule import WEEKDAYS, Event, Monthly, Obligation, Once, Schedule, Weekly
from .workdays import WorkdayCalendar


@dataclass(frozen=True)
class Occurrence:
    """One period of one obligation, e.g. ``weekly-progress@2023-W25``."""

    obligation: str
    period: str
    kind: str  # once | weekly | monthly | event
    nominal_date: date  # the date the notice names
    due_date: date  # after the holiday policy
    due_at: datetime  # aware, campaign time zone
    opens_at: datetime  # from when submissions count towards this period
    quota_min: int
    quota_goal: int

    @functools.cached_property
    def key(self) -> str:
        # cached: a national digest pass asks every gate's key once per owing unit
        return f"{self.obligation}@{self.period}"

    @property
    def shifted(self) -> bool:
        return self.due_date != self.nominal_date


def _months(start: str, end: str) -> Iterator[tuple[int, int]]:
    year, month = int(start[:4]), int(start[5:])
    last = (int(end[:4]), int(end[5:]))
    while (year, month) <= last:
        yield year, month
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _nominal_dates(ob: Obligation) -> Iterator[tuple[str, date, date]]:
    """(period key, nominal date, period start) for each period of ``ob``."""
    rec = ob.recurrence
    if isinstance(rec, Once | Event):
        yield rec.date.isoformat(), rec.date, date.min
    elif isinstance(rec, Weekly):
        target = WEEKDAYS.index(rec.weekday)
        day = rec.start + timedelta(days=(target - rec.start.weekday()) % 7)
        while day <= rec.end:
            iso = day.isocalendar()
            yield f"{iso.year}-W{iso.week:02d}", day, day - timedelta(days=6)
            day += timedelta(days=7)
    elif isinstance(rec, Monthly):
        for year, month in _months(rec.start, rec.end):
            last = _calendar.monthrange(year, month)[1]
            dom = last if rec.day == "last" else min(int(rec.day), last)
            yield f"{year}-{month:02d}", date(year, month, dom), date(year, month, 1)


def expand(schedule: Schedule, ob: Obligation, cal: WorkdayCalendar) -> list[Occurrence]:
    """Every occurrence of one obligation, in due order."""
    camp = schedule.campaign
    tz = camp.tz
    due_time: time = (
        ob.recurrence.at if isinstance(ob.recurrence, Event) else (ob.due_time or camp.due_time)
    )
    out = []
    for period, nominal, period_start in _nominal_dates(ob):
        due_date = (
            nominal if isinstance(ob.recurrence, Event) else cal.apply(nominal, ob.holiday_policy)
        )
        opens = max(period_start, camp.start)
        out.append(
            Occurrence(
                obligation=ob.key,
                period=period,
                kind=ob.recurrence.type,
                nominal_date=nominal,
                due_date=due_date,
                due_at=datetime.combine(due_date, due_time, tzinfo=tz),
                opens_at=datetime.combine(opens, time(0, 0), tzinfo=tz),
                quota_min=ob.quota.min,
                quota_goal=ob.quota.goal,
            )
        )
    out.sort(key=lambda o: (o.due_at, o.period))
    return out


def all_occurrences(schedule: Schedule, cal: WorkdayCalendar | None = None) -> list[Occurrence]:
    """Every occurrence of every obligation, ordered by due moment then key."""
    cal = cal or schedule.calendar()
    out = [occ for ob in schedule.obligations for occ in expand(schedule, ob, cal)]
    out.sort(key=lambda o: (o.due_at, o.key))
    return out
