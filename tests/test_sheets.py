"""Spreadsheets we write never carry a live formula or a character that breaks the file."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from openpyxl import load_workbook

from service import sheets
from service.digests import digest_csv, digest_xlsx

HOSTILE = [
    '=HYPERLINK("http://evil.example/","点我")',
    "+1+1",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
    "＝1+1",
]


def _row(name: str) -> dict[str, Any]:
    return {
        "title": "每周进展",
        "unit_name": name,
        "unit": "u1",
        "period_label": "第25周",
        "period": "2023-W25",
        "due": "2023-06-21 17:00",
        "days_late": 3,
        "late": "逾期3个工作日",
        "progress": "0/1",
        "liaison": name,
        "liaison_phone": "13800000001",
    }


@pytest.mark.parametrize("name", HOSTILE)
def test_xlsx_digest_writes_formula_text_as_escaped_string(name: str) -> None:
    """A unit name starting with a formula trigger is a text cell with a leading apostrophe."""
    wb = load_workbook(io.BytesIO(digest_xlsx([_row(name)])))
    cell = wb.active.cell(row=2, column=2)
    assert cell.data_type == "s"
    assert cell.value.startswith("'")  # XML reads a stored CR back as LF: compare the rest loosely
    assert cell.value[1:].replace("\n", "\r") == name.replace("\n", "\r")


@pytest.mark.parametrize("name", HOSTILE)
def test_csv_digest_escapes_formula_triggers(name: str) -> None:
    """The CSV digest prefixes a formula trigger with an apostrophe."""
    text = digest_csv([_row(name)]).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1][1] == "'" + name


def test_xlsx_digest_survives_control_characters() -> None:
    """A vertical tab or NUL in a name is replaced, not a failure of the whole workbook."""
    wb = load_workbook(io.BytesIO(digest_xlsx([_row("长春\x0b市\x00安委办")])))
    assert wb.active.cell(row=2, column=2).value == "长春\ufffd市\ufffd安委办"


def test_numbers_and_plain_text_are_unchanged() -> None:
    """Numbers stay numbers and ordinary text is written as it is (a dash inside is fine)."""
    assert sheets.neutralise(-3) == -3
    assert sheets.neutralise("长春市-安委办") == "长春市-安委办"
    wb = load_workbook(io.BytesIO(digest_xlsx([_row("长春市")])))
    assert wb.active.cell(row=2, column=6).value == 3
