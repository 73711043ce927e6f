"""Issue 8 item 10: every numeric option is range-checked; enumerations are checked."""

from __future__ import annotations

import pytest

from .conftest import Invoke


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--tick", "-5"],
        ["run", "--tick", "0"],
        ["run", "--virtual-from", "2023-06-01T00:00", "--pace", "-1"],
        ["messages", "--limit", "0"],
        ["messages", "--limit", "-5"],
        ["audit", "--limit", "0"],
        ["submit", "--unit", "yanji", "--obligation", "weekly-progress", "--period", "2023-W25",
         "--count", "0"],
        ["retract", "--unit", "yanji", "--obligation", "weekly-progress", "--period", "2023-W25",
         "--id", "-1"],
        ["--concurrency", "0", "validate"],
    ],
    ids=lambda a: " ".join(a),
)  # fmt: skip
def test_out_of_range_numbers_are_usage_errors(cli: Invoke, args: list[str]) -> None:
    """An out-of-range number is refused before anything runs (exit 2, the option named)."""
    result = cli(*args)
    assert result.exit_code == 2, result.output
    bad = max(i for i, a in enumerate(args) if a.lstrip("-").isdigit())
    assert f"Invalid value for '{args[bad - 1]}'" in result.output


def test_unknown_status_lists_the_valid_ones(cli: Invoke) -> None:
    """messages --status bogus is an error that lists the valid states."""
    result = cli("messages", "--status", "bogus")
    assert result.exit_code == 1
    for state in ("pending", "sending", "sent", "cancelled", "stale", "failed"):
        assert state in result.stderr


def test_unknown_log_level_is_refused(cli: Invoke) -> None:
    """run --log-level LOUD is refused listing the levels."""
    result = cli("run", "--log-level", "LOUD")
    assert result.exit_code == 1 and "DEBUG, INFO, WARNING, ERROR" in result.stderr


def test_since_must_precede_until(cli: Invoke) -> None:
    """messages --since after --until is refused."""
    result = cli("messages", "--since", "2023-07-01T00:00", "--until", "2023-06-01T00:00")
    assert result.exit_code == 1 and "--since" in result.stderr


def test_replay_end_before_start_is_refused(cli: Invoke) -> None:
    """run --virtual-from X --until (before X) is refused, nothing replayed."""
    result = cli("run", "--virtual-from", "2023-06-01T00:00", "--until", "2023-05-01T00:00")
    assert result.exit_code == 1 and "--until" in result.stderr


def test_an_overlong_actor_is_refused_before_the_database(cli: Invoke) -> None:
    """--actor longer than the 128-character column is a located error, not a traceback."""
    args = ["--unit", "yanji", "--obligation", "weekly-progress", "--period", "2023-W25"]
    result = cli("submit", *args, "--actor", "x" * 129)
    assert result.exit_code == 1 and "--actor" in result.stderr
    assert "Traceback" not in result.output
