"""Checking submissions against the campaign, and reading them from CSV (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from .errors import ConfigError, LedgerError, Problem
from .model import CampaignModel
from .sources import read_csv

Source = Literal["admin", "liaison-link", "import", "inbound-mail"]
SOURCES: tuple[str, ...] = Source.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class NewSubmission:
    unit: str
    obligation: str
    period: str
    count: int
    at: datetime
    source: Source = "admin"
    note: str = ""


def check(model: CampaignModel, unit: str, obligation: str, period: str, count: int = 1) -> None:
    """Raise :class:`LedgerError` naming the bad field when a submission is impossible."""
    if unit not in model.directory.units:
        raise LedgerError(f"unit: unknown unit {unit!r}")
    try:
        ob = model.schedule.obligation(obligation)
    except KeyError:
        known = ", ".join(o.key for o in model.schedule.obligations if not o.is_event)
        raise LedgerError(
            f"obligation: unknown obligation {obligation!r} (known: {known})"
        ) from None
    if ob.is_event:
        raise LedgerError(f"obligation: {obligation!r} is an event; nothing is submitted for it")
    if model.occurrence(obligation, period) is None:
        periods = ", ".join(o.period for o in model.occurrences if o.obligation == obligation)
        raise LedgerError(f"period: {obligation!r} has no period {period!r} (periods: {periods})")
    if not model.owes(unit, obligation):
        raise LedgerError(f"unit: {unit!r} does not owe {obligation!r}")
    if not 1 <= count <= MAX_COUNT:
        raise LedgerError(f"count: must be between 1 and {MAX_COUNT}")


MIN_YEAR, MAX_YEAR = 1970, 2200  # anything else is a typo, and could not be stored
MAX_COUNT = 10_000


def parse_time(text: str, tz_name: str) -> datetime:
    """ISO 8601; a time without offset is read in the campaign's time zone."""
    from zoneinfo import ZoneInfo

    value = datetime.fromisoformat(text.strip())
    value = value if value.tzinfo else value.replace(tzinfo=ZoneInfo(tz_name))
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"{text.strip()!r} is outside {MIN_YEAR}..{MAX_YEAR}")
    return value


def load_submissions_csv(path: Path, model: CampaignModel) -> list[NewSubmission]:
    """Read ``unit,obligation,period,count,at`` rows; every bad row is reported with its line."""
    rows = read_csv(path)
    out: list[NewSubmission] = []
    problems: list[Problem] = []
    for line, row in rows:
        missing = [c for c in ("unit", "obligation", "period") if not row.get(c)]
        if missing:
            problems += [Problem(str(path), line, c, "required") for c in missing]
            continue
        try:
            count = int(row.get("count") or 1)
        except ValueError:
            problems.append(
                Problem(str(path), line, "count", f"not a whole number: {row['count']!r}")
            )
            continue
        try:
            occ = model.occurrence(row["obligation"], row["period"])
            at = (
                parse_time(row["at"], model.schedule.campaign.timezone)
                if row.get("at")
                else (occ.due_at if occ else None)
            )
        except ValueError as exc:
            problems.append(Problem(str(path), line, "at", f"not an ISO 8601 time: {exc}"))
            continue
        try:
            check(model, row["unit"], row["obligation"], row["period"], count)
        except LedgerError as exc:
            field, _, msg = str(exc).partition(": ")
            problems.append(Problem(str(path), line, field, msg))
            continue
        assert at is not None
        out.append(
            NewSubmission(row["unit"], row["obligation"], row["period"], count, at, "import")
        )
    if problems:
        raise ConfigError(problems)
    return out
