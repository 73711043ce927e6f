"""Working days from the real 2023 holiday data, extra days, and the data range."""

from __future__ import annotations

from datetime import date

import pytest

from service.errors import CalendarRangeError
from service.workdays import HolidayPolicy, WorkdayCalendar

D = date.fromisoformat


@pytest.fixture
def cal() -> WorkdayCalendar:
    return WorkdayCalendar()


@pytest.mark.parametrize("day", ["2023-06-22", "2023-06-23", "2023-06-24"])
def test_dragon_boat_days_are_off(cal: WorkdayCalendar, day: str) -> None:
    """The Dragon Boat holiday 2023-06-22..24 has no working day."""
    assert not cal.is_workday(D(day))


def test_dragon_boat_adjusted_sunday_is_working(cal: WorkdayCalendar) -> None:
    """Sunday 2023-06-25 is an adjusted working day (调休)."""
    assert cal.is_workday(D("2023-06-25"))


@pytest.mark.parametrize(
    "day",
    [
        "2023-09-29",
        "2023-09-30",
        "2023-10-01",
        "2023-10-02",
        "2023-10-05",
        "2023-10-06",
    ],
)
def test_national_day_days_are_off(cal: WorkdayCalendar, day: str) -> None:
    """Mid-Autumn + National Day 2023-09-29..10-06 has no working day."""
    assert not cal.is_workday(D(day))


@pytest.mark.parametrize("day", ["2023-10-07", "2023-10-08"])
def test_national_day_adjusted_weekend_is_working(cal: WorkdayCalendar, day: str) -> None:
    """Saturday 10-07 and Sunday 10-08 are adjusted working days."""
    assert cal.is_workday(D(day))


def test_ordinary_weekend_is_off(cal: WorkdayCalendar) -> None:
    """An ordinary Saturday and Sunday are not working days; a Friday is."""
    assert not cal.is_workday(D("2023-06-17"))
    assert not cal.is_workday(D("2023-06-18"))
    assert cal.is_workday(D("2023-06-16"))


@pytest.mark.parametrize(
    ("day", "previous", "following"),
    [
        ("2023-06-23", "2023-06-21", "2023-06-25"),
        ("2023-06-22", "2023-06-21", "2023-06-25"),
        ("2023-06-25", "2023-06-21", "2023-06-26"),
        ("2023-09-29", "2023-09-28", "2023-10-07"),
        ("2023-10-06", "2023-09-28", "2023-10-07"),
        ("2023-10-07", "2023-09-28", "2023-10-08"),
        ("2023-10-08", "2023-10-07", "2023-10-09"),
    ],
)
def test_previous_and_next_workday_around_holidays(
    cal: WorkdayCalendar, day: str, previous: str, following: str
) -> None:
    """previous/next_workday are strict and skip holidays but not 调休 days."""
    assert cal.previous_workday(D(day)) == D(previous)
    assert cal.next_workday(D(day)) == D(following)


@pytest.mark.parametrize(
    ("start", "count", "expected"),
    [
        ("2023-06-21", 1, "2023-06-25"),
        ("2023-06-21", 2, "2023-06-26"),
        ("2023-06-26", -1, "2023-06-25"),
        ("2023-06-26", -2, "2023-06-21"),
        ("2023-09-28", 1, "2023-10-07"),
        ("2023-10-09", -3, "2023-09-28"),
        ("2023-06-23", 0, "2023-06-23"),
    ],
)
def test_add_workdays(cal: WorkdayCalendar, start: str, count: int, expected: str) -> None:
    """add_workdays moves forward or back by working days; 0 keeps the day."""
    assert cal.add_workdays(D(start), count) == D(expected)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (HolidayPolicy.KEEP, "2023-06-23"),
        (HolidayPolicy.PREVIOUS_WORKING_DAY, "2023-06-21"),
        (HolidayPolicy.NEXT_WORKING_DAY, "2023-06-25"),
    ],
)
def test_apply_policy_on_holiday(
    cal: WorkdayCalendar, policy: HolidayPolicy, expected: str
) -> None:
    """A holiday due date moves according to the policy."""
    assert cal.apply(D("2023-06-23"), policy) == D(expected)


@pytest.mark.parametrize("policy", list(HolidayPolicy))
def test_apply_policy_on_workday_keeps_date(cal: WorkdayCalendar, policy: HolidayPolicy) -> None:
    """A working day is never moved, whatever the policy."""
    assert cal.apply(D("2023-06-16"), policy) == D("2023-06-16")


def test_data_range_is_2004_to_2026(cal: WorkdayCalendar) -> None:
    """The holiday package covers 2004-2026 (2027 is outside)."""
    assert cal.data_range == (2004, 2026)
    assert cal.covers(D("2026-12-31"))
    assert not cal.covers(D("2027-01-04"))


def test_date_outside_data_raises(cal: WorkdayCalendar) -> None:
    """A 2027 date is an explicit CalendarRangeError, never a weekday guess."""
    with pytest.raises(CalendarRangeError) as info:
        cal.is_workday(D("2027-03-01"))
    [problem] = info.value.problems
    assert problem.field == "campaign.workdays"
    assert "2027-03-01 is outside the holiday data (2004-2026)" in problem.message
    assert "own_years" in problem.message


def test_shift_into_uncovered_year_raises(cal: WorkdayCalendar) -> None:
    """Stepping from the last covered day into 2027 raises instead of guessing."""
    with pytest.raises(CalendarRangeError):
        cal.next_workday(D("2026-12-31"))


def test_own_year_uses_weekday_rule() -> None:
    """With own_years=[2027], Monday-Friday work and weekends are off."""
    cal = WorkdayCalendar(own_years=[2027])
    assert cal.covers(D("2027-03-01"))
    assert cal.is_workday(D("2027-03-05"))  # Friday
    assert not cal.is_workday(D("2027-03-06"))  # Saturday
    assert not cal.is_workday(D("2027-03-07"))  # Sunday


def test_own_year_applies_extra_days() -> None:
    """In an own year, listed holidays and working days override the weekday rule."""
    cal = WorkdayCalendar(
        own_years=[2027],
        extra_holidays=[D("2027-10-01"), D("2027-10-04")],
        extra_workdays=[D("2027-10-09")],
    )
    assert not cal.is_workday(D("2027-10-01"))  # Friday, listed holiday
    assert not cal.is_workday(D("2027-10-04"))  # Monday, listed holiday
    assert cal.is_workday(D("2027-10-09"))  # Saturday, listed working day
    assert cal.next_workday(D("2027-09-30")) == D("2027-10-05")
    assert cal.apply(D("2027-10-01"), HolidayPolicy.PREVIOUS_WORKING_DAY) == D("2027-09-30")


def test_extra_holiday_overrides_data() -> None:
    """An extra holiday removes a working day from the package's calendar."""
    cal = WorkdayCalendar(extra_holidays=[D("2023-06-21")])
    assert not cal.is_workday(D("2023-06-21"))
    assert cal.apply(D("2023-06-23"), HolidayPolicy.PREVIOUS_WORKING_DAY) == D("2023-06-20")


def test_extra_workday_overrides_data() -> None:
    """An extra working day turns a statutory holiday into a working day."""
    cal = WorkdayCalendar(extra_workdays=[D("2023-06-23")])
    assert cal.is_workday(D("2023-06-23"))
    assert cal.apply(D("2023-06-23"), HolidayPolicy.PREVIOUS_WORKING_DAY) == D("2023-06-23")


def test_extra_days_do_not_cover_other_dates_of_uncovered_year() -> None:
    """Listing a 2027 day does not make the rest of 2027 guessable."""
    cal = WorkdayCalendar(extra_workdays=[D("2027-01-04")])
    assert cal.is_workday(D("2027-01-04"))
    with pytest.raises(CalendarRangeError):
        cal.is_workday(D("2027-01-05"))
