"""The service's exception tree.

::

    ServiceError
    ├── ConfigError          bad schedule, directory or template; carries located problems
    │   └── CalendarRangeError   a date the working-day data does not cover
    └── LedgerError          a submission or retraction that cannot be recorded
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One located problem in an input file."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class ServiceError(Exception):
    """Base class of every error the service raises on purpose."""


class ConfigError(ServiceError):
    """Input that cannot be accepted; ``problems`` says where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class CalendarRangeError(ConfigError):
    """A date falls outside the working-day data and the schedule does not cover it."""


class LedgerError(ServiceError):
    """A submission or retraction was refused; nothing was written."""
