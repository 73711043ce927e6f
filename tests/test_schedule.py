"""Schedule validation: every problem names the file, the line and the field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import ConfigError, Problem
from service.schedule import parse_schedule
from service.workdays import HolidayPolicy

# Line numbers in the tests below refer to this text (line 1 is "campaign:").
BASE = """\
campaign:
  key: test
  name: Test campaign
  timezone: Asia/Shanghai
  start: 2023-05-18
  end: 2023-12-31
  contact:
    office: office
    people: someone
    phone: "000"
    email: office@example.org
obligations:
  - key: weekly
    title: Weekly report
    who: {kinds: [region]}
    recurrence:
      type: weekly
      weekday: friday
      start: 2023-06-01
      end: 2023-06-30
    holiday_policy: previous_working_day
  - key: monthly
    title: Monthly report
    who: {kinds: [region]}
    recurrence: {type: monthly, start: "2023-06", end: "2023-12", day: last}
"""


def variant(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


@pytest.fixture
def problems_of(
    write_schedule: Callable[[str], Path],
) -> Callable[[str], list[Problem]]:
    """Parse a schedule text that must fail; return its problems (file checked)."""

    def run(text: str) -> list[Problem]:
        path = write_schedule(text)
        with pytest.raises(ConfigError) as info:
            parse_schedule(path)
        assert info.value.problems
        assert {p.file for p in info.value.problems} == {str(path)}
        return info.value.problems

    return run


def located(problems: list[Problem]) -> list[tuple[int | None, str]]:
    return [(p.line, p.field) for p in problems]


def test_base_schedule_is_valid(write_schedule: Callable[[str], Path]) -> None:
    """The reference text of these tests parses."""
    schedule = parse_schedule(write_schedule(BASE))
    assert [ob.key for ob in schedule.obligations] == ["weekly", "monthly"]
    assert schedule.obligations[0].holiday_policy is HolidayPolicy.PREVIOUS_WORKING_DAY


def test_shipped_schedule_is_valid(schedule_path: Path) -> None:
    """The shipped campaign parses; x- anchor keys are not schedule fields."""
    schedule = parse_schedule(schedule_path)
    assert schedule.campaign.key == "jilin-2023"
    assert len(schedule.obligations) == 8


def test_yaml_syntax_error_has_its_line(
    problems_of: Callable[[str], list[Problem]],
) -> None:
    """A YAML syntax error is reported on the line where parsing failed."""
    [problem] = problems_of(variant("    title: Weekly report\n", "    title: [Weekly\n"))
    assert (problem.line, problem.field) == (15, "")
    assert problem.message.startswith("YAML syntax:")


def test_duplicate_yaml_key_has_its_line(
    problems_of: Callable[[str], list[Problem]],
) -> None:
    """A key given twice in one mapping is reported on the second one."""
    [problem] = problems_of(variant("  name: Test campaign\n", "  name: A\n  name: B\n"))
    assert problem.line == 4
    assert "duplicate key" in problem.message


def test_unknown_key_typo(problems_of: Callable[[str], list[Problem]]) -> None:
    """A misspelt key is refused on its own line, named in full."""
    problems = problems_of(variant("holiday_policy:", "holiday_polcy:"))
    assert located(problems) == [(21, "obligations[0].holiday_polcy")]
    assert problems[0].message == "Extra inputs are not permitted"


def test_numeric_weekday_refused(problems_of: Callable[[str], list[Problem]]) -> None:
    """weekday: 5 is refused with a message asking for names."""
    [problem] = problems_of(variant("weekday: friday", "weekday: 5"))
    assert "weekdays are given by name (e.g. friday), never by number" in problem.message
    assert problem.field.startswith("obligations[0].recurrence")
    assert problem.field.endswith("weekday")


def test_numeric_weekday_points_at_weekday_line(
    problems_of: Callable[[str], list[Problem]],
) -> None:
    """The numeric weekday problem points at the weekday line and field."""
    problems = problems_of(variant("weekday: friday", "weekday: 5"))
    assert located(problems) == [(18, "obligations[0].recurrence.weekday")]


def test_weekday_name_is_case_insensitive(
    write_schedule: Callable[[str], Path],
) -> None:
    """weekday: Friday is read as friday."""
    schedule = parse_schedule(write_schedule(variant("weekday: friday", "weekday: Friday")))
    assert schedule.obligations[0].recurrence.weekday == "friday"  # type: ignore[union-attr]


def test_unknown_time_zone(problems_of: Callable[[str], list[Problem]]) -> None:
    """An unknown time zone is reported on the timezone line."""
    problems = problems_of(variant("Asia/Shanghai", "Asia/Beijing"))
    assert located(problems) == [(4, "campaign.timezone")]
    assert "unknown time zone 'Asia/Beijing'" in problems[0].message


def test_campaign_start_after_end(problems_of: Callable[[str], list[Problem]]) -> None:
    """A campaign starting after its end is reported on the campaign block."""
    problems = problems_of(variant("  start: 2023-05-18\n", "  start: 2024-01-01\n"))
    assert located(problems) == [(1, "campaign")]
    assert "start must not be after end" in problems[0].message


def test_monthly_month_not_year_month(
    problems_of: Callable[[str], list[Problem]],
) -> None:
    """A monthly start like 2023-6 is refused on its line with the expected format."""
    [problem] = problems_of(variant('start: "2023-06"', 'start: "2023-6"'))
    assert problem.line == 25
    assert problem.field.startswith("obligations[1].recurrence")
    assert problem.field.endswith("start")
    assert "expected a month as YYYY-MM" in problem.message


def test_duplicate_obligation_key_refused(
    problems_of: Callable[[str], list[Problem]],
) -> None:
    """Two obligations with the same key are refused, naming the key."""
    problems = problems_of(variant("key: monthly", "key: weekly"))
    assert len(problems) == 1
    assert "obligation key 'weekly' is used twice" in problems[0].message


def test_duplicate_obligation_key_located(
    problems_of: Callable[[str], list[Problem]],
) -> None:
    """The duplicate obligation key points at the second obligation's key line."""
    problems = problems_of(variant("key: monthly", "key: weekly"))
    assert located(problems) == [(22, "obligations[1].key")]


def test_date_outside_campaign(problems_of: Callable[[str], list[Problem]]) -> None:
    """Every occurrence due after the campaign end is reported on its recurrence."""
    problems = problems_of(variant("end: 2023-06-30", "end: 2024-01-12"))
    assert located(problems) == [(16, "obligations[0].recurrence")]
    assert problems[0].message == (
        "dates 2023-06-01..2024-01-12 fall outside the campaign 2023-05-18..2023-12-31"
    )


def test_date_outside_holiday_data(problems_of: Callable[[str], list[Problem]]) -> None:
    """A campaign reaching into 2027 is refused unless the schedule covers 2027 itself."""
    text = variant("  start: 2023-05-18\n", "  start: 2026-05-18\n")
    text = variant("  end: 2023-12-31\n", "  end: 2027-03-31\n", text)
    problems = problems_of(variant('end: "2023-12"', 'end: "2027-01"', text))
    assert [p.field for p in problems] == ["campaign.workdays"]
    assert "2027-01-01 is outside the holiday data (2004-2026)" in problems[0].message
    assert "own_years" in problems[0].message


def test_keep_policy_date_outside_holiday_data(
    problems_of: Callable[[str], list[Problem]],
) -> None:
    """A 2027 weekly date is refused even when the policy is keep."""
    text = variant("  start: 2023-05-18\n", "  start: 2026-05-18\n")
    text = variant("  end: 2023-12-31\n", "  end: 2027-03-31\n", text)
    text = variant("end: 2023-06-30", "end: 2027-01-31", text)
    problems = problems_of(variant("previous_working_day", "keep", text))
    assert "outside the holiday data" in problems[0].message


def test_own_years_allows_2027(write_schedule: Callable[[str], Path]) -> None:
    """With own_years: [2027] and its holidays listed, 2027 months are accepted."""
    text = variant("  start: 2023-05-18\n", "  start: 2026-05-18\n")
    text = variant("  end: 2023-12-31\n", "  end: 2027-03-31\n", text)
    text = variant("start: 2023-06-01", "start: 2026-06-01", text)
    text = variant("end: 2023-06-30", "end: 2026-06-30", text)
    text = variant('start: "2023-06"', 'start: "2026-06"', text)
    text = variant('end: "2023-12"', 'end: "2027-01"', text)
    text = variant(
        "  contact:\n",
        "  workdays: {own_years: [2027], extra_holidays: [2027-01-29]}\n  contact:\n",
        text,
    )
    schedule = parse_schedule(write_schedule(text))
    assert schedule.campaign.workdays.own_years == [2027]


def test_weekly_start_after_end(problems_of: Callable[[str], list[Problem]]) -> None:
    """A weekly recurrence ending before it starts is refused on the recurrence."""
    [problem] = problems_of(variant("end: 2023-06-30", "end: 2023-05-30"))
    assert problem.line == 16
    assert "start must not be after end" in problem.message


def test_unknown_holiday_policy(problems_of: Callable[[str], list[Problem]]) -> None:
    """A holiday policy outside keep/previous/next is refused on its line."""
    problems = problems_of(variant("previous_working_day", "previous"))
    assert located(problems) == [(21, "obligations[0].holiday_policy")]


def test_all_problems_reported_together(
    problems_of: Callable[[str], list[Problem]],
) -> None:
    """Independent problems are all reported in one go."""
    text = variant("Asia/Shanghai", "Mars/Olympus")
    text = variant("holiday_policy:", "holiday_polcy:", text)
    assert located(problems_of(text)) == [
        (4, "campaign.timezone"),
        (21, "obligations[0].holiday_polcy"),
    ]


def test_not_a_mapping(problems_of: Callable[[str], list[Problem]]) -> None:
    """A document that is not a mapping is refused at line 1."""
    assert located(problems_of("- just\n- a list\n")) == [(1, "")]


def test_missing_file(tmp_path: Path) -> None:
    """A missing schedule file is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match="file not found"):
        parse_schedule(tmp_path / "nope.yaml")


def test_problem_renders_file_line_field() -> None:
    """A problem prints as file:line: field: message."""
    assert (
        str(Problem("s.yaml", 4, "campaign.timezone", "bad")) == "s.yaml:4: campaign.timezone: bad"
    )
    assert str(Problem("s.yaml", None, "", "bad")) == "s.yaml: bad"


def test_impossible_date_has_its_line(
    problems_of: Callable[[str], list[Problem]],
) -> None:
    """An impossible calendar date is located on its line."""
    problems = problems_of(variant("start: 2023-06-01", "start: 2023-02-30"))
    assert [p.line for p in problems] == [19]


def test_extreme_weekly_dates_are_config_errors(
    problems_of: Callable[[str], list[Problem]],
) -> None:
    """A weekly recurrence at the edge of the date range is a ConfigError."""
    text = variant("start: 2023-06-01", "start: 0001-01-01")
    problems_of(variant("weekday: friday", "weekday: monday", text))


# --- properties ---------------------------------------------------------------

BASE_LINES = BASE.splitlines()
YAMLISH = st.sampled_from(
    [
        "",
        "  - x",
        "    weekday: 5",
        "    recurrence: {type: once}",
        "    recurrence: {type: monthly, start: 2023-06, end: 2023-01}",
        "  start: 2023-02-30",
        "  timezone: /etc/passwd",
        "    quota: {min: 2, target: 1}",
        "obligations: []",
        "x-anchor: &a [1, *a]",
        "{",
        "'",
        "\t",
        "? [a, b]",
        ": :",
        "    day: 0",
        "    due_time: '25:00'",
    ]
)


def _parse_only_config_errors(text: str) -> None:
    try:
        parse_schedule(Path("fuzz.yaml"), text)
    except ConfigError as exc:
        assert exc.problems


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_config_error(text: str) -> None:
    """Any text as a schedule either parses or raises ConfigError with problems."""
    _parse_only_config_errors(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(BASE_LINES) - 1),
            st.one_of(YAMLISH, st.text(max_size=40)),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_schedule_raises_only_config_error(
    edits: list[tuple[int, str]],
) -> None:
    """The reference schedule with lines replaced raises only ConfigError."""
    lines = list(BASE_LINES)
    for index, replacement in edits:
        lines[index] = replacement
    _parse_only_config_errors("\n".join(lines) + "\n")
