"""Checking submissions against the campaign, and reading them from CSV/XLSX (pure).

An import is idempotent. Two rows are the *same submission* when they agree on unit,
obligation, period and the moment it was submitted (to the second, in UTC): re-importing
it records nothing ("already recorded"), whichever source recorded it first — a row an
operator typed with ``service submit`` and the same row in the office's spreadsheet are
one submission, not two. A row that agrees on those four but not on the count is
*conflicting*: it is refused with its line, and the import records nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from .errors import ConfigError, LedgerError, Problem
from .model import CampaignModel
from .sources import TableFile

Source = Literal["admin", "liaison-link", "import", "inbound-mail", "upload", "api"]
SOURCES: tuple[str, ...] = Source.__args__  # type: ignore[attr-defined]
MIN_YEAR, MAX_YEAR = 1970, 2200  # anything else is a typo, and could not be stored
MAX_COUNT = 10_000
MAX_NOTE = 2_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class NewSubmission:
    unit: str
    obligation: str
    period: str
    count: int
    at: datetime
    source: Source = "admin"
    note: str = ""


def check_text(name: str, value: str) -> None:
    """Refuse NUL and other control characters (a database cannot store some; none is data)."""
    if m := _CONTROL.search(value):
        raise LedgerError(
            f"{name}: 含有控制字符 U+{ord(m.group(0)):04X}（第 {m.start() + 1} 个字符）"
        )


def resolve_unit(model: CampaignModel, text: str, names: dict[str, list[str]] | None = None) -> str:
    """A unit by id, or by its name when exactly one unit has that name."""
    check_text("unit", text)
    if text in model.directory.units:
        return text
    if names is None:
        names = unit_names(model)
    ids = names.get(text.strip(), [])
    if len(ids) == 1:
        return ids[0]
    if ids:
        raise LedgerError(f"unit: 有多个单位名为 {text!r}（{', '.join(ids)}），请用单位 id")
    raise LedgerError(f"unit: 未知单位 {text!r}")


def unit_names(model: CampaignModel) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for unit in model.directory.units.values():
        out.setdefault(unit.name, []).append(unit.id)
    return out


def check(model: CampaignModel, unit: str, obligation: str, period: str, count: int = 1) -> None:
    """Raise :class:`LedgerError` naming the bad field when a submission is impossible."""
    for name, value in (("unit", unit), ("obligation", obligation), ("period", period)):
        check_text(name, value)
    if unit not in model.directory.units:
        raise LedgerError(f"unit: 未知单位 {unit!r}")
    try:
        ob = model.schedule.obligation(obligation)
    except KeyError:
        known = ", ".join(o.key for o in model.schedule.obligations if not o.is_event)
        raise LedgerError(f"obligation: 未知事项 {obligation!r}（可选：{known}）") from None
    if ob.is_event:
        raise LedgerError(f"obligation: {obligation!r} 是活动，无需报送")
    if model.occurrence(obligation, period) is None:
        periods = ", ".join(o.period for o in model.occurrences if o.obligation == obligation)
        raise LedgerError(f"period: {obligation!r} 没有周期 {period!r}（周期：{periods}）")
    if not model.owes(unit, obligation):
        raise LedgerError(f"unit: {unit!r} 不需要报送 {obligation!r}")
    if not 1 <= count <= MAX_COUNT:
        raise LedgerError(f"count: 必须在 1 到 {MAX_COUNT} 之间")


# 2023/6/20 10:00, 2023-06-20 10:00, 2023年6月20日, 2023年6月20日 10时30分, 2023.6.20
_LOCAL = re.compile(
    r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?"
    r"(?:\s*[T\s]\s*(\d{1,2})\s*[:：时点]\s*(\d{1,2})?\s*分?(?:\s*[:：]\s*(\d{1,2})\s*秒?)?)?$"
)


def parse_time(text: str, tz_name: str) -> datetime:
    """ISO 8601 or a common Chinese form; a time without offset is in the campaign's zone.

    A date without a time is the start of that day: the office says it submitted that day,
    and the start gives it the benefit of the doubt against a deadline later that day.
    """
    raw = text.strip()
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        m = _LOCAL.match(raw)
        if m is None:
            raise ValueError(
                f"无法识别的时间 {raw!r}（如 2023-06-20 10:00、2023/6/20 10:00、2023年6月20日）"
            ) from None
        y, mo, d, h, mi, s = (int(g) if g else 0 for g in m.groups())
        try:
            value = datetime(y, mo, d, h, mi, s, tzinfo=ZoneInfo(tz_name))
        except ValueError:
            raise ValueError(f"不存在的日期或时间 {raw!r}") from None
    value = value if value.tzinfo else value.replace(tzinfo=ZoneInfo(tz_name))
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"{raw!r} 超出 {MIN_YEAR}..{MAX_YEAR}")
    return value


# Header names as offices write them; the English names are the documented ones.
ALIASES: dict[str, tuple[str, ...]] = {
    "unit": ("unit", "单位", "单位名称", "单位id", "单位ID", "单位编号"),
    "obligation": ("obligation", "事项", "报送事项", "事项键"),
    "period": ("period", "周期", "报送周期"),
    "count": ("count", "数量", "份数", "件数"),
    "at": ("at", "报送时间", "时间", "提交时间"),
    "note": ("note", "备注"),
}
REQUIRED = ("unit", "obligation", "period")


@dataclass
class ImportRow:
    line: int
    sub: NewSubmission


@dataclass
class ImportReader:
    """Validated rows of one file, streamed; ``problems`` fills as it goes (first 100 kept)."""

    path: Path
    model: CampaignModel
    source: Source = "import"
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    rows_read: int = 0
    table: TableFile | None = None

    MAX_PROBLEMS = 100

    @property
    def encoding(self) -> str:
        return self.table.encoding if self.table else ""

    def problem(self, line: int | None, column: str, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < self.MAX_PROBLEMS:
            self.problems.append(Problem(str(self.path), line, column, message))

    def raise_problems(self) -> None:
        if not self.problem_count:
            return
        problems = list(self.problems)
        if self.problem_count > len(problems):
            more = self.problem_count - len(problems)
            problems.append(Problem(str(self.path), None, "", f"……另有 {more} 个问题未列出"))
        raise ConfigError(problems)

    def __iter__(self) -> Iterator[ImportRow]:
        table = self.table = TableFile(self.path)
        rows = table.rows()
        first = next(rows, None)
        columns = self._columns(table)
        if columns is None or first is None:
            return
        names = unit_names(self.model)
        tz = self.model.schedule.campaign.timezone
        for line, row in _chain(first, rows):
            self.rows_read += 1
            sub = self._row(line, row, columns, names, tz, table)
            if sub is not None:
                yield ImportRow(line, sub)

    def _columns(self, table: TableFile) -> dict[str, str] | None:
        """Canonical field → header as written; missing required columns are a problem."""
        found: dict[str, str] = {}
        for header in table.headers:
            for name, aliases in ALIASES.items():
                if header in aliases or header.lower() in aliases:
                    found.setdefault(name, header)
        missing = [c for c in REQUIRED if c not in found]
        if table.headers and missing:
            for name in missing:
                self.problem(1, name, f"缺少列（可用列名：{'、'.join(ALIASES[name])}）")
            return None
        return found

    def _row(
        self,
        line: int,
        row: dict[str, Any],
        columns: dict[str, str],
        names: dict[str, list[str]],
        tz: str,
        table: TableFile,
    ) -> NewSubmission | None:
        def cell(name: str) -> Any:
            header = columns.get(name)
            value = row.get(header) if header else None
            return value.strip() if isinstance(value, str) else value

        def col(name: str) -> str:
            return table.column(columns.get(name, name))

        before = self.problem_count
        values: dict[str, str] = {}
        for name in ("unit", "obligation", "period", "note"):
            value = cell(name)
            text = "" if value is None else str(value)
            try:
                check_text(name, text)
            except LedgerError as exc:
                self.problem(line, col(name), str(exc).partition(": ")[2])
                continue
            if name in REQUIRED and not text:
                self.problem(line, col(name), "必填")
            values[name] = text
        if self.problem_count > before:
            return None
        count = _count(cell("count"))
        if count is None:
            self.problem(line, col("count"), f"不是整数：{cell('count')!r}")
            return None
        try:
            unit = resolve_unit(self.model, values["unit"], names)
            check(self.model, unit, values["obligation"], values["period"], count)
        except LedgerError as exc:
            name, _, msg = str(exc).partition(": ")
            self.problem(line, col(name), msg)
            return None
        at_cell = cell("at")
        try:
            at = _moment(at_cell, tz)
        except ValueError as exc:
            self.problem(line, col("at"), str(exc))
            return None
        if at is None:
            occ = self.model.occurrence(values["obligation"], values["period"])
            assert occ is not None  # check() found it
            at = occ.due_at
        if len(values["note"]) > MAX_NOTE:
            self.problem(line, col("note"), f"超过 {MAX_NOTE} 个字符")
            return None
        return NewSubmission(
            unit, values["obligation"], values["period"], count, at, self.source, values["note"]
        )


def _chain(
    first: tuple[int, dict[str, Any]], rest: Iterator[tuple[int, dict[str, Any]]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    yield first
    yield from rest


def _count(value: Any) -> int | None:
    if value is None or value == "":
        return 1
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _moment(value: Any, tz: str) -> datetime | None:
    """A cell's moment: text in any accepted form, or an XLSX date/datetime (local time)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment: datetime = value if value.tzinfo else value.replace(tzinfo=ZoneInfo(tz))
        if not MIN_YEAR <= moment.year <= MAX_YEAR:
            raise ValueError(f"{moment:%Y-%m-%d} 超出 {MIN_YEAR}..{MAX_YEAR}")
        return moment
    if isinstance(value, date):
        return _moment(datetime.combine(value, time()), tz)
    return parse_time(str(value), tz)


def load_submissions_csv(path: Path, model: CampaignModel) -> list[NewSubmission]:
    """Every row of a small file at once (simulations, tests); bad rows are located."""
    reader = ImportReader(path, model)
    out = [row.sub for row in reader]
    reader.raise_problems()
    return out
