"""Working days in mainland China: statutory holidays and adjusted working days (调休).

Data comes from the maintained ``chinesecalendar`` package. A schedule may add holidays
or working days and may declare years it fully describes itself; any other date outside
the package's data is a :class:`CalendarRangeError`, never a weekday guess.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from enum import StrEnum

import chinese_calendar

from .errors import CalendarRangeError, Problem

_DAY = timedelta(days=1)


class HolidayPolicy(StrEnum):
    """What to do when a nominal due date is not a working day."""

    KEEP = "keep"
    PREVIOUS_WORKING_DAY = "previous_working_day"
    NEXT_WORKING_DAY = "next_working_day"


def _data_years() -> tuple[int, int]:
    years = [d.year for d in chinese_calendar.holidays]
    return min(years), max(years)


class WorkdayCalendar:
    """Answers "is this a working day" and shifts dates by working days."""

    def __init__(
        self,
        *,
        extra_holidays: Iterable[date] = (),
        extra_workdays: Iterable[date] = (),
        own_years: Iterable[int] = (),
        source: str = "schedule",
    ) -> None:
        self._holidays = frozenset(extra_holidays)
        self._workdays = frozenset(extra_workdays)
        self._own_years = frozenset(own_years)
        self._source = source
        self.data_range = _data_years()
        self._known: dict[date, bool] = {}  # answers so far: the inputs never change

    def covers(self, day: date) -> bool:
        lo, hi = self.data_range
        return lo <= day.year <= hi or day.year in self._own_years

    def is_workday(self, day: date) -> bool:
        known = self._known.get(day)
        if known is None:
            known = self._known[day] = self._is_workday(day)
        return known

    def _is_workday(self, day: date) -> bool:
        if day in self._workdays:
            return True
        if day in self._holidays:
            return False
        lo, hi = self.data_range
        if lo <= day.year <= hi:
            return bool(chinese_calendar.is_workday(day))
        if day.year in self._own_years:
            # The schedule declared it lists this year's holidays itself.
            return day.weekday() < 5
        raise CalendarRangeError(
            [
                Problem(
                    self._source,
                    None,
                    "campaign.workdays",
                    f"{day.isoformat()} is outside the holiday data ({lo}-{hi}); "
                    f"list that year's holidays and adjusted working days in the "
                    f"schedule and add {day.year} to campaign.workdays.own_years",
                )
            ]
        )

    def previous_workday(self, day: date) -> date:
        """The last working day strictly before ``day``."""
        day -= _DAY
        while not self.is_workday(day):
            day -= _DAY
        return day

    def next_workday(self, day: date) -> date:
        """The first working day strictly after ``day``."""
        day += _DAY
        while not self.is_workday(day):
            day += _DAY
        return day

    def apply(self, day: date, policy: HolidayPolicy) -> date:
        """Move a nominal due date off a non-working day according to ``policy``."""
        if policy is HolidayPolicy.KEEP or self.is_workday(day):
            return day
        if policy is HolidayPolicy.PREVIOUS_WORKING_DAY:
            return self.previous_workday(day)
        return self.next_workday(day)

    def add_workdays(self, day: date, count: int) -> date:
        """Move ``count`` working days from ``day`` (negative goes back); 0 keeps it."""
        step = self.next_workday if count > 0 else self.previous_workday
        for _ in range(abs(count)):
            day = step(day)
        return day
