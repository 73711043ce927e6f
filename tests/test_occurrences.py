"""Occurrences: the shipped 2023 calendar, each recurrence kind and holiday policy."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from service.model import CampaignModel
from service.occurrences import Occurrence, all_occurrences, expand
from service.schedule import parse_schedule

SHANGHAI = ZoneInfo("Asia/Shanghai")

# (key, due, shifted): the acceptance list for the shipped campaign, in due order.
SHIPPED = [
    ("liaison-registration@2023-05-22", "2023-05-22T17:00:00+08:00", False),
    ("weekly-progress@2023-W21", "2023-05-26T17:00:00+08:00", False),
    ("launch-ceremony@2023-05-31", "2023-05-31T09:30:00+08:00", False),
    ("weekly-progress@2023-W22", "2023-06-02T17:00:00+08:00", False),
    ("weekly-progress@2023-W23", "2023-06-09T17:00:00+08:00", False),
    ("consultation-day@2023-06-16", "2023-06-16T09:00:00+08:00", False),
    ("weekly-progress@2023-W24", "2023-06-16T17:00:00+08:00", False),
    ("weekly-progress@2023-W25", "2023-06-21T17:00:00+08:00", True),
    ("activity-summary@2023-06-30", "2023-06-30T17:00:00+08:00", False),
    ("monthly-exposure@2023-06", "2023-06-30T17:00:00+08:00", False),
    ("monthly-leads@2023-06", "2023-06-30T17:00:00+08:00", False),
    ("weekly-progress@2023-W26", "2023-06-30T17:00:00+08:00", False),
    ("monthly-exposure@2023-07", "2023-07-31T17:00:00+08:00", False),
    ("monthly-leads@2023-07", "2023-07-31T17:00:00+08:00", False),
    ("monthly-exposure@2023-08", "2023-08-31T17:00:00+08:00", False),
    ("monthly-leads@2023-08", "2023-08-31T17:00:00+08:00", False),
    ("monthly-exposure@2023-09", "2023-09-28T17:00:00+08:00", True),
    ("monthly-leads@2023-09", "2023-09-28T17:00:00+08:00", True),
    ("monthly-exposure@2023-10", "2023-10-31T17:00:00+08:00", False),
    ("monthly-leads@2023-10", "2023-10-31T17:00:00+08:00", False),
    ("monthly-exposure@2023-11", "2023-11-30T17:00:00+08:00", False),
    ("monthly-leads@2023-11", "2023-11-30T17:00:00+08:00", False),
    ("monthly-exposure@2023-12", "2023-12-29T17:00:00+08:00", True),
    ("monthly-leads@2023-12", "2023-12-29T17:00:00+08:00", True),
    ("campaign-end@2023-12-31", "2023-12-31T17:00:00+08:00", False),
]
REGIONS = [
    "changchun", "jilin-city", "siping", "liaoyuan", "tonghua", "baishan",
    "songyuan", "baicheng", "yanbian", "changbaishan", "meihekou",
]  # fmt: skip


def of(model: CampaignModel, obligation: str) -> list[Occurrence]:
    return [o for o in model.occurrences if o.obligation == obligation]


def test_shipped_calendar_is_exactly_the_notice(model: CampaignModel) -> None:
    """The shipped campaign expands to exactly the acceptance list, in due order."""
    got = [(o.key, o.due_at.isoformat(), o.shifted) for o in model.occurrences]
    assert got == SHIPPED


def test_weekly_progress_periods_and_dues(model: CampaignModel) -> None:
    """Six weekly periods W21..W26; W25 moves from Friday 06-23 to Wednesday 06-21."""
    weekly = of(model, "weekly-progress")
    assert [(o.period, o.nominal_date, o.due_date) for o in weekly] == [
        ("2023-W21", date(2023, 5, 26), date(2023, 5, 26)),
        ("2023-W22", date(2023, 6, 2), date(2023, 6, 2)),
        ("2023-W23", date(2023, 6, 9), date(2023, 6, 9)),
        ("2023-W24", date(2023, 6, 16), date(2023, 6, 16)),
        ("2023-W25", date(2023, 6, 23), date(2023, 6, 21)),
        ("2023-W26", date(2023, 6, 30), date(2023, 6, 30)),
    ]
    assert [o.shifted for o in weekly] == [False, False, False, False, True, False]
    assert {o.due_date.weekday() for o in weekly if not o.shifted} == {4}  # Fridays


@pytest.mark.parametrize("obligation", ["monthly-leads", "monthly-exposure"])
def test_monthly_periods_june_to_december(model: CampaignModel, obligation: str) -> None:
    """Seven monthly periods, due the last working day (Sep 28, Dec 29)."""
    assert [(o.period, o.due_date.isoformat()) for o in of(model, obligation)] == [
        ("2023-06", "2023-06-30"),
        ("2023-07", "2023-07-31"),
        ("2023-08", "2023-08-31"),
        ("2023-09", "2023-09-28"),
        ("2023-10", "2023-10-31"),
        ("2023-11", "2023-11-30"),
        ("2023-12", "2023-12-29"),
    ]


def test_monthly_leads_quota(model: CampaignModel) -> None:
    """monthly-leads asks at least 1 with a target of 2; the others 1."""
    assert {(o.quota_min, o.quota_goal) for o in of(model, "monthly-leads")} == {(1, 2)}
    assert {(o.quota_min, o.quota_goal) for o in of(model, "monthly-exposure")} == {(1, 1)}


def test_events_keep_their_date_and_hour(model: CampaignModel) -> None:
    """Events are announced at their own hour and never shifted."""
    events = [(o.key, o.due_at.isoformat()) for o in model.occurrences if o.kind == "event"]
    assert events == [
        ("launch-ceremony@2023-05-31", "2023-05-31T09:30:00+08:00"),
        ("consultation-day@2023-06-16", "2023-06-16T09:00:00+08:00"),
        ("campaign-end@2023-12-31", "2023-12-31T17:00:00+08:00"),
    ]


def test_nothing_due_after_campaign_end(model: CampaignModel) -> None:
    """No occurrence is due after 2023-12-31, nor before the notice."""
    assert max(o.due_date for o in model.occurrences) == date(2023, 12, 31)
    assert min(o.due_date for o in model.occurrences) == date(2023, 5, 22)


def test_monthly_exposure_owed_by_the_eleven_regions(model: CampaignModel) -> None:
    """monthly-exposure is owed by exactly the 11 regional offices."""
    assert sorted(model.owers["monthly-exposure"]) == sorted(REGIONS)


def test_every_unit_obligations_exclude_the_province(model: CampaignModel) -> None:
    """Every-unit obligations are owed by all 26 reporting units, not the province."""
    owers = model.owers["weekly-progress"]
    assert len(owers) == 26
    assert "jilin" not in owers
    assert set(owers) == set(model.directory.units) - {"jilin"}


def test_due_times_are_aware_in_campaign_zone(model: CampaignModel) -> None:
    """Every due moment is aware, in Asia/Shanghai, and opens before it is due."""
    for occ in model.occurrences:
        assert occ.due_at.tzinfo == SHANGHAI
        assert occ.opens_at <= occ.due_at


def test_periods_open_at_period_start(model: CampaignModel) -> None:
    """Weekly periods open the Saturday before, monthly on the 1st, once at start."""
    w25 = model.occurrence("weekly-progress", "2023-W25")
    july = model.occurrence("monthly-leads", "2023-07")
    once = model.occurrence("liaison-registration", "2023-05-22")
    assert w25 is not None and july is not None and once is not None
    assert w25.opens_at == datetime(2023, 6, 17, tzinfo=SHANGHAI)
    assert july.opens_at == datetime(2023, 7, 1, tzinfo=SHANGHAI)
    assert once.opens_at == datetime(2023, 5, 18, tzinfo=SHANGHAI)


# --- variant schedules --------------------------------------------------------

HEADER = """\
campaign:
  key: variant
  name: Variant campaign
  start: 2023-05-01
  end: 2023-12-31
  contact: {office: O, people: P, phone: "000", email: o@example.org}
obligations:
  - key: ob
    title: Obligation
    who: {kinds: [region]}
"""


@pytest.fixture
def expand_variant(
    write_schedule: Callable[[str], Path],
) -> Callable[..., list[Occurrence]]:
    """Parse a one-obligation schedule with a recurrence and policy; expand it."""

    def run(recurrence: str, policy: str = "previous_working_day") -> list[Occurrence]:
        text = HEADER + f"    recurrence: {recurrence}\n    holiday_policy: {policy}\n"
        schedule = parse_schedule(write_schedule(text))
        return expand(schedule, schedule.obligations[0], schedule.calendar())

    return run


def dues(occurrences: list[Occurrence]) -> list[tuple[str, str]]:
    return [(o.period, o.due_date.isoformat()) for o in occurrences]


JUNE_FRIDAYS = "{type: weekly, weekday: friday, start: 2023-06-12, end: 2023-06-30}"


@pytest.mark.parametrize(
    ("policy", "w25_due"),
    [
        ("keep", "2023-06-23"),
        ("previous_working_day", "2023-06-21"),
        ("next_working_day", "2023-06-25"),
    ],
)
def test_weekly_policy_around_dragon_boat(
    expand_variant: Callable[..., list[Occurrence]], policy: str, w25_due: str
) -> None:
    """Friday 06-23 is kept, moved to Wed 06-21, or to the 调休 Sunday 06-25."""
    assert dues(expand_variant(JUNE_FRIDAYS, policy)) == [
        ("2023-W24", "2023-06-16"),
        ("2023-W25", w25_due),
        ("2023-W26", "2023-06-30"),
    ]


def test_weekly_due_time_defaults_to_campaign(
    expand_variant: Callable[..., list[Occurrence]],
) -> None:
    """Without an obligation due_time, the campaign's 17:00 applies."""
    occ = expand_variant(JUNE_FRIDAYS)[0]
    assert occ.due_at == datetime(2023, 6, 16, 17, 0, tzinfo=SHANGHAI)


AUTUMN_FRIDAYS = "{type: weekly, weekday: friday, start: 2023-09-18, end: 2023-10-15}"


@pytest.mark.parametrize(
    ("policy", "folded"),
    [("previous_working_day", "2023-09-28"), ("next_working_day", "2023-10-07")],
)
def test_autumn_fridays_fold_onto_one_day(
    expand_variant: Callable[..., list[Occurrence]], policy: str, folded: str
) -> None:
    """Fridays 09-29 and 10-06 both shift to one day but stay two occurrences."""
    occurrences = expand_variant(AUTUMN_FRIDAYS, policy)
    assert dues(occurrences) == [
        ("2023-W38", "2023-09-22"),
        ("2023-W39", folded),
        ("2023-W40", folded),
        ("2023-W41", "2023-10-13"),
    ]
    w39, w40 = occurrences[1], occurrences[2]
    assert w39.key != w40.key
    assert w39.due_at == w40.due_at
    assert (w39.nominal_date, w40.nominal_date) == (
        date(2023, 9, 29),
        date(2023, 10, 6),
    )


def test_autumn_fridays_keep(expand_variant: Callable[..., list[Occurrence]]) -> None:
    """With keep, the holiday Fridays stay on 09-29 and 10-06."""
    assert dues(expand_variant(AUTUMN_FRIDAYS, "keep"))[1:3] == [
        ("2023-W39", "2023-09-29"),
        ("2023-W40", "2023-10-06"),
    ]


def test_monthly_day_15(expand_variant: Callable[..., list[Occurrence]]) -> None:
    """day: 15 is due on the 15th, or the previous working day when it is off."""
    rec = '{type: monthly, start: "2023-06", end: "2023-12", day: 15}'
    assert dues(expand_variant(rec)) == [
        ("2023-06", "2023-06-15"),
        ("2023-07", "2023-07-14"),  # 15th is a Saturday
        ("2023-08", "2023-08-15"),
        ("2023-09", "2023-09-15"),
        ("2023-10", "2023-10-13"),  # 15th is a Sunday
        ("2023-11", "2023-11-15"),
        ("2023-12", "2023-12-15"),
    ]


def test_monthly_day_last_next_policy(
    expand_variant: Callable[..., list[Occurrence]],
) -> None:
    """day: last with next_working_day moves a weekend month-end into the next month."""
    rec = '{type: monthly, start: "2023-09", end: "2023-11", day: last}'
    occurrences = expand_variant(rec, "next_working_day")
    got = [(o.period, o.due_date.isoformat(), o.nominal_date.isoformat()) for o in occurrences]
    assert got == [
        ("2023-09", "2023-10-07", "2023-09-30"),
        ("2023-10", "2023-10-31", "2023-10-31"),
        ("2023-11", "2023-11-30", "2023-11-30"),
    ]


def test_monthly_day_31_clamps_to_month_end(
    expand_variant: Callable[..., list[Occurrence]],
) -> None:
    """day: 31 in a 30-day month means its last day."""
    rec = '{type: monthly, start: "2023-06", end: "2023-07", day: 31}'
    occurrences = expand_variant(rec, "keep")
    assert [o.nominal_date.isoformat() for o in occurrences] == [
        "2023-06-30",
        "2023-07-31",
    ]


@pytest.mark.parametrize(
    ("policy", "due"),
    [
        ("keep", "2023-10-02"),
        ("previous_working_day", "2023-09-28"),
        ("next_working_day", "2023-10-07"),
    ],
)
def test_once_on_holiday(
    expand_variant: Callable[..., list[Occurrence]], policy: str, due: str
) -> None:
    """A once obligation on a holiday follows its policy."""
    [occ] = expand_variant("{type: once, date: 2023-10-02}", policy)
    assert (occ.period, occ.kind, occ.due_date.isoformat()) == (
        "2023-10-02",
        "once",
        due,
    )


def test_event_keeps_its_date(expand_variant: Callable[..., list[Occurrence]]) -> None:
    """An event on a holiday is never moved, whatever the policy says."""
    [occ] = expand_variant("{type: event, date: 2023-10-01, at: '10:00'}", "next_working_day")
    assert occ.kind == "event"
    assert not occ.shifted
    assert occ.due_at == datetime(2023, 10, 1, 10, 0, tzinfo=SHANGHAI)


def test_all_occurrences_orders_by_due_then_key(model: CampaignModel) -> None:
    """all_occurrences is ordered by due moment, ties broken by key."""
    occurrences = all_occurrences(model.schedule)
    assert occurrences == model.occurrences
    assert occurrences == sorted(occurrences, key=lambda o: (o.due_at, o.key))
