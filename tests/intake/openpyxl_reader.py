"""The xlsx reader intake used before service/intake/xlsx.py: openpyxl, read-only, kept
here as the reference the parity tests compare the standard-library reader with."""

from __future__ import annotations

import io
import re
import warnings
from datetime import date, time
from typing import Any

from openpyxl import load_workbook

from service.intake import read
from service.intake.read import FormError, Grid, Value, column_letter

_FORMULA = re.compile(rb"<(?:\w+:)?f[ >/]")


def read_xlsx(name: str, data: bytes) -> list[Grid]:
    """Grids as openpyxl gave them (same container checks and bounds as read.py).

    Warnings are ignored as in production (pytest turns them into errors): openpyxl warned
    about a date serial out of range and gave "#VALUE!".
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read_xlsx(name, data)


def _read_xlsx(name: str, data: bytes) -> list[Grid]:
    archive, _types = read._check_zip(name, data)
    has_formulas = any(
        _FORMULA.search(archive.read(i))
        for i in archive.infolist()
        if i.filename.startswith("xl/worksheets/") and i.filename.endswith(".xml")
    )
    formulas = _formula_cells(name, data) if has_formulas else {}
    wb = _open(name, data, data_only=True)
    try:
        if len(wb.sheetnames) > read.MAX_SHEETS:
            raise FormError(name, f"工作表超过 {read.MAX_SHEETS} 个，拒绝读取")
        grids, cells = [], 0
        for ws in wb.worksheets:
            grid = Grid(name, ws.title)
            pending = formulas.get(ws.title, {})
            for row_no, values in _sheet_rows(name, ws):
                cells += sum(v is not None for v in values)
                if cells > read.MAX_CELLS:
                    raise FormError(name, f"非空单元格超过 {read.MAX_CELLS} 个，表格过大", ws.title)
                for col in sorted(pending.get(row_no, ())):
                    if col >= len(values) or values[col] is None:
                        raise FormError(
                            name,
                            "这是公式但文件里没有保存计算结果：请在 Excel/WPS 中打开后保存，"
                            "或把公式改为数值",
                            ws.title,
                            f"{column_letter(col)}{row_no}",
                        )
                if any(v is not None for v in values):
                    grid.rows.append((row_no, values))
            grids.append(grid)
        return grids
    finally:
        wb.close()


def _open(name: str, data: bytes, data_only: bool) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_workbook(
                io.BytesIO(data), read_only=True, data_only=data_only, keep_links=False
            )
    except Exception as exc:
        raise FormError(name, f"无法作为 .xlsx 工作簿读取（{type(exc).__name__}）") from None


def _sheet_rows(name: str, ws: Any) -> Any:
    ws.reset_dimensions()
    try:
        for row_no, row in enumerate(ws.iter_rows(values_only=True), start=1):
            if row_no > read.MAX_ROWS:
                raise FormError(name, f"行数超过 {read.MAX_ROWS}，表格过大", ws.title)
            values = list(row)
            while values and values[-1] is None:
                values.pop()
            if len(values) > read.MAX_COLUMNS:
                raise FormError(
                    name,
                    f"列数超过 {read.MAX_COLUMNS}，表格过大",
                    ws.title,
                    column_letter(read.MAX_COLUMNS),
                )
            yield row_no, [_plain(v) for v in values]
    except FormError:
        raise
    except Exception as exc:
        raise FormError(name, f"工作表无法读取（{type(exc).__name__}）", ws.title) from None


def _formula_cells(name: str, data: bytes) -> dict[str, dict[int, set[int]]]:
    wb = _open(name, data, data_only=False)
    out: dict[str, dict[int, set[int]]] = {}
    try:
        for ws in wb.worksheets:
            ws.reset_dimensions()
            refs = out.setdefault(ws.title, {})
            for row_no, row in enumerate(ws.iter_rows(), start=1):
                if row_no > read.MAX_ROWS:
                    break
                for col, cell in enumerate(row[: read.MAX_COLUMNS]):
                    if getattr(cell, "data_type", None) == "f":
                        refs.setdefault(row_no, set()).add(col)
    except Exception as exc:
        raise FormError(name, f"工作簿无法读取（{type(exc).__name__}）") from None
    finally:
        wb.close()
    return out


def _plain(value: Any) -> Value:
    if value is None or isinstance(value, str | int | float | date):
        return value if not isinstance(value, bool) else int(value)
    if isinstance(value, time):
        return value.isoformat()
    return str(value)
