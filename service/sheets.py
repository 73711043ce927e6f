"""Every spreadsheet the service writes (CSV and XLSX) goes through here.

Supervisors open digests and exports in Excel or WPS, and the text in them comes from
outside (unit and person names, notes, parsed forms). Per OWASP's CSV-injection guidance a
text cell that starts with a formula trigger (``=``, ``+``, ``-``, ``@``, tab, CR; also
their full-width forms, which WPS accepts) is prefixed with an apostrophe, and XLSX cells
holding text are typed as strings so that no writer ever stores a formula. Characters that
XLSX cannot hold at all (C0 controls but tab, LF, CR) are replaced by U+FFFD rather than
failing the whole workbook: one odd name must not kill a digest for everyone in a scope.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

Cell = str | int | float | Decimal | date | datetime | None

FORMULA_TRIGGERS = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")
_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def neutralise(value: Cell) -> Cell:
    """``value`` made safe for a spreadsheet cell: text never starts a formula."""
    if not isinstance(value, str):
        return value
    text = _ILLEGAL_XML.sub("\ufffd", value)
    if text and text[0] in FORMULA_TRIGGERS:
        return "'" + text
    return text


@dataclass(frozen=True)
class Sheet:
    """One worksheet: a title, a header row, data rows and optional column widths."""

    title: str
    header: Sequence[str]
    rows: Iterable[Sequence[Cell]]
    widths: Sequence[float] = field(default_factory=tuple)


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> bytes:
    """UTF-8 CSV with a BOM (Excel opens Chinese correctly), every cell neutralised."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([neutralise(h) for h in header])
    writer.writerows([neutralise(c) for c in row] for row in rows)
    return buf.getvalue().encode("utf-8-sig")


def xlsx_bytes(sheets: Sequence[Sheet]) -> bytes:
    """An XLSX workbook (streaming writer) in which no cell is ever a formula."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.utils import get_column_letter

    wb = Workbook(write_only=True)  # streaming mode: several times cheaper per digest
    for sheet in sheets:
        ws = wb.create_sheet(_sheet_title(sheet.title))
        for index, width in enumerate(sheet.widths, start=1):
            ws.column_dimensions[get_column_letter(index)].width = width
        for row in (sheet.header, *sheet.rows):
            cells = []
            for value in row:
                cell = WriteOnlyCell(ws, value=neutralise(value))
                if isinstance(cell.value, str):
                    cell.data_type = "s"  # text, whatever openpyxl guessed from its content
                cells.append(cell)
            ws.append(cells)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _sheet_title(title: str) -> str:
    # Excel refuses []:*?/\ in sheet names and more than 31 characters.
    cleaned = re.sub(r"[\[\]:*?/\\]", "_", _ILLEGAL_XML.sub("", title)).strip("'") or "Sheet"
    return cleaned[:31]
