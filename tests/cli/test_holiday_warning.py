"""Issue 12 point 7: own_years beyond the holiday data without holidays is a warning."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.test_schedule import variant

from .conftest import Invoke, ok


def schedule_2027(own: str) -> str:
    text = variant("  start: 2023-05-18\n", "  start: 2026-05-18\n")
    text = variant("  end: 2023-12-31\n", "  end: 2027-03-31\n", text)
    text = variant("start: 2023-06-01", "start: 2026-06-01", text)
    text = variant("end: 2023-06-30", "end: 2026-06-30", text)
    text = variant('start: "2023-06"', 'start: "2026-06"', text)
    text = variant('end: "2023-12"', 'end: "2027-01"', text)
    return variant("  contact:\n", f"  workdays: {own}\n  contact:\n", text)


def test_own_year_without_holidays_is_a_named_warning(
    write_schedule: Callable[[str], Path], model_warnings: Callable[[Path], list[str]]
) -> None:
    """own_years: [2027] with no 2027 holiday listed warns naming the year and the keys."""
    warnings = model_warnings(write_schedule(schedule_2027("{own_years: [2027]}")))
    [warning] = [w for w in warnings if "2027" in w]
    assert "own_years" in warning and "extra_holidays" in warning
    assert "未列出 2027 年的任何节假日" in warning


def test_own_year_with_holidays_is_quiet(
    write_schedule: Callable[[str], Path], model_warnings: Callable[[Path], list[str]]
) -> None:
    """With a 2027 holiday listed there is no such warning."""
    text = schedule_2027("{own_years: [2027], extra_holidays: [2027-01-29]}")
    assert not [w for w in model_warnings(write_schedule(text)) if "2027" in w]


def test_validate_prints_the_warning(cli: Invoke, write_schedule: Callable[[str], Path]) -> None:
    """service validate shows it on stderr and still exits 0."""
    result = ok(cli("validate", schedule=write_schedule(schedule_2027("{own_years: [2027]}"))))
    assert "警告: 2027 年超出节假日数据" in result.stderr
