"""Forms declared in the schedule: header fingerprints, typed values (blank workbooks are
service/forms.py's, re-exported here)."""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from ..forms import blank_file_name as blank_file_name
from ..forms import blank_form as blank_form
from ..forms import form_of as form_of
from ..forms import forms_in as forms_in
from ..schedule import Form, FormField, Obligation
from .read import Grid, Value, column_letter

HEADER_SCAN_ROWS = 30  # title rows above a header: a handful in practice
MIN_SCORE = 0.6  # share of a form's labels a header must carry to be that form
_PAREN = re.compile(r"[（(【\[][^）)】\]]*[）)】\]]")
_SPACE = re.compile(r"\s+")
_INTEGER = re.compile(r"^([+-]?\d+)(?:\.0+)?([^\d]{0,6})$")
_UNIT_LINE = re.compile(r"^(?:填报|填表|报送)?单位(?:名称)?[:：]\s*(.+?)\s*$")
_NOTE_START = ("注", "说明", "填表说明", "填表人", "审核人", "联系人", "填报人", "备注：")
_TOTALS = {"合计", "总计", "小计", "汇总"}
_DATE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")


def norm(text: str) -> str:
    """Full-width to ASCII (NFKC), no whitespace: how labels and numbers are compared."""
    return _SPACE.sub("", unicodedata.normalize("NFKC", text))


@functools.lru_cache(maxsize=4096)  # the same few dozen labels, in every form of a pass
def label_key(text: str) -> str:
    """A header cell reduced to its label: without "(场)", "*", spaces or full-width forms."""
    return _PAREN.sub("", norm(text)).strip("*＊:：")


# -- reading a filled form ---------------------------------------------------------------


@dataclass
class Row:
    """One data row of a filled form: typed values, raw text, and what is wrong with it."""

    sheet: str
    row: int
    unit_name: str | None
    values: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    unit: str | None = None  # the directory unit intake attributed the row to

    def as_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "sheet": self.sheet,
            "row": self.row,
            "unit_name": self.unit_name,
            "values": self.values,
            "problems": self.problems,
        }


@dataclass
class Table:
    """A form found in one sheet: where its header is and its data rows."""

    sheet: str
    header_row: int
    columns: dict[str, int]  # field key -> 0-based column
    sheet_unit: str | None  # "填报单位：…" above the header
    rows: list[Row]


def _labels(form: Form) -> dict[str, str]:
    return {label_key(lbl): f.key for f in form.fields for lbl in (f.label, *f.aliases)}


def find_header(grid: Grid, form: Form) -> tuple[int, dict[str, int], float] | None:
    """(index into grid.rows, field key -> column, share of fields found), best row."""
    labels = _labels(form)
    best: tuple[int, dict[str, int], float] | None = None
    for index, (_row_no, values) in enumerate(grid.rows[:HEADER_SCAN_ROWS]):
        columns: dict[str, int] = {}
        for col, value in enumerate(values):
            if isinstance(value, str) and (key := labels.get(label_key(value))):
                columns.setdefault(key, col)
        score = len(columns) / len(form.fields)
        if columns and (best is None or score > best[2]):
            best = (index, columns, score)
    return best


def fingerprint(grids: list[Grid], forms: list[tuple[Obligation, Form]]) -> list[tuple[str, float]]:
    """Obligations whose form the grids carry, best first, with their header score."""
    out = []
    for ob, form in forms:
        scores = [hit[2] for g in grids if (hit := find_header(g, form)) is not None]
        if scores and max(scores) >= MIN_SCORE:
            out.append((ob.key, max(scores)))
    return sorted(out, key=lambda x: -x[1])


def read_tables(grids: list[Grid], form: Form) -> list[Table]:
    """Every sheet carrying ``form``'s header, with its typed data rows."""
    by_key = {f.key: f for f in form.fields}
    tables = []
    for grid in grids:
        hit = find_header(grid, form)
        if hit is None or hit[2] < MIN_SCORE:
            continue
        index, columns, _score = hit
        sheet_unit = None
        for _no, values in grid.rows[:index]:
            texts = [norm(str(v)) for v in values if v is not None]
            for text in texts:
                if m := _UNIT_LINE.match(text):
                    sheet_unit = m.group(1)
        rows = []
        for row_no, values in grid.rows[index + 1 :]:
            if _skippable(values, columns.get(form.unit_field)):
                continue
            row = Row(grid.sheet, row_no, None, {})
            for key, col in columns.items():
                raw = values[col] if col < len(values) else None
                ref = f"{column_letter(col)}{row_no}"
                value, problem = parse_value(by_key[key], raw)
                row.values[key] = value
                if problem:
                    row.problems.append(f"单元格 {ref}（{by_key[key].label}）：{problem}")
            row.problems += [
                f"第{row_no}行（{f.label}）：必填项为空"
                for f in form.fields
                if f.required and f.key not in columns
            ]
            if form.unit_field:
                name = row.values.get(form.unit_field)
                row.unit_name = str(name) if name else sheet_unit
            rows.append(row)
        tables.append(Table(grid.sheet, grid.rows[index][0], columns, sheet_unit, rows))
    return tables


def _skippable(values: list[Value], unit_col: int | None) -> bool:
    """Notes under the table, and the sender's own total rows (we add up ourselves)."""
    filled = [v for v in values if v is not None and str(v).strip()]
    if not filled:
        return True
    first = norm(str(filled[0]))
    if len(filled) == 1 and first.startswith(_NOTE_START):
        return True
    if unit_col is not None and unit_col < len(values) and values[unit_col] is not None:
        return norm(str(values[unit_col])) in _TOTALS
    return first in _TOTALS


# -- typed values ------------------------------------------------------------------------


def parse_value(spec: FormField, raw: Value) -> tuple[Any, str | None]:
    """(value for JSON, problem in Chinese or None). A bad value is kept as its text."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None, ("必填项为空" if spec.required else None)
    if spec.type == "integer":
        return _integer(spec, raw)
    if spec.type == "date":
        return _date(raw)
    text = str(raw).strip() if not isinstance(raw, float) else _float_text(raw)
    if spec.type == "phone":
        digits = re.sub(r"[\s\-()（）]", "", norm(text))
        if not re.fullmatch(r"\+?\d{7,15}", digits):
            return text, f"不是电话号码：{text!r}"
        return digits, None
    if spec.type == "email":
        return _email(norm(text))
    if spec.allowed and text not in spec.allowed:
        return text, f"应为以下之一：{'、'.join(spec.allowed)}，实际为 {text!r}"
    return text, None


def _float_text(value: float) -> str:
    # A phone number typed into a number cell comes back as 13800000001.0.
    return str(int(value)) if value.is_integer() else str(value)


def _integer(spec: FormField, raw: Value) -> tuple[Any, str | None]:
    if isinstance(raw, int):
        number = raw
    elif isinstance(raw, float) and raw.is_integer():
        number = int(raw)
    else:
        text = norm(str(raw)).replace(",", "")
        m = _INTEGER.match(text)
        if not m or (m.group(2) and not _is_unit(m.group(2), spec.unit)):
            unit = f"（单位：{spec.unit}）" if spec.unit else ""
            return str(raw), f"应为整数{unit}，实际为 {raw!r}"
        number = int(m.group(1))
    if number < 0:
        return number, f"不能为负数：{number}"
    return number, None


def _is_unit(suffix: str, unit: str) -> bool:
    """ "12场" or "12 人次" carry a unit; "12abc" does not."""
    return suffix == unit or all("\u4e00" <= ch <= "\u9fff" for ch in suffix)


def _date(raw: Value) -> tuple[Any, str | None]:
    if isinstance(raw, datetime):
        return raw.date().isoformat(), None
    if isinstance(raw, date):
        return raw.isoformat(), None
    m = _DATE.match(norm(str(raw)))
    if m:
        try:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat(), None
        except ValueError:
            pass
    return str(raw), f"不是日期（如 2023-05-20）：{raw!r}"


def _email(text: str) -> tuple[Any, str | None]:
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(text, check_deliverability=False).normalized, None
    except EmailNotValidError:
        return text, f"不是电子邮箱地址：{text!r}"
