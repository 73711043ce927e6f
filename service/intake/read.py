"""Reading spreadsheets people filled in (xlsx, csv) into plain grids, safely.

Nothing here evaluates anything: formulas are read from the values Excel/WPS cached when
the file was saved, and a formula without a cached value is refused. Before the xlsx
reader (xlsx.py) parses a byte, the container is checked: macros, encrypted (OLE/CFB)
files and zip bombs are refused; huge sheets are refused as their rows come. Messages are
Chinese and name the file, sheet and cell.
"""

from __future__ import annotations

import codecs
import csv
import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

from ..errors import ServiceError
from .xlsx import Book, DoctypeError, SheetRow

Value = str | int | float | date | datetime | None

MAX_FILE_BYTES = 10 * 2**20  # a filled form is a few KB; a region's workbook well under 1 MB
MAX_UNCOMPRESSED = 64 * 2**20  # all zip members together, after inflating
MAX_RATIO = 200  # inflated/compressed per member: real xlsx parts stay below ~30
MAX_MEMBERS = 2_000
MAX_CELLS = 200_000  # non-empty cells of the whole workbook
MAX_ROWS = 20_000
MAX_COLUMNS = 256
MAX_SHEETS = 100

_CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGIC = b"PK\x03\x04"


class FormError(ServiceError):
    """A file that cannot be read as a form; ``message`` is Chinese and located."""

    def __init__(self, file: str, message: str, sheet: str = "", cell: str = "") -> None:
        self.file, self.sheet, self.cell, self.message = file, sheet, cell, message
        where = file
        if sheet:
            where += f"，工作表“{sheet}”"
        if cell:
            where += f"，单元格 {cell}"
        super().__init__(f"{where}：{message}")


@dataclass
class Grid:
    """One sheet's non-blank rows: (1-based row number, cell values from column A)."""

    file: str
    sheet: str
    rows: list[tuple[int, list[Value]]] = field(default_factory=list)


def column_letter(index: int) -> str:
    """0-based column index -> Excel letters (A, B, …, AA)."""
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(65 + rem) + out
    return out


def read_grids(name: str, data: bytes) -> list[Grid]:
    """Every sheet of ``data`` (xlsx or csv, judged by content, not by name) as grids."""
    suffix = PurePath(name).suffix.lower()
    if len(data) > MAX_FILE_BYTES:
        raise FormError(name, f"文件大于 {MAX_FILE_BYTES // 2**20} MB，不像是填好的表格")
    if suffix in (".xlsm", ".xltm", ".xlam"):
        raise FormError(name, "带宏的工作簿（.xlsm）不予读取：请另存为 .xlsx 后再发送")
    if data.startswith(_CFB_MAGIC):
        raise FormError(
            name,
            "文件是加密的工作簿或旧版 .xls 格式（OLE 复合文档），无法读取："
            "请取消密码保护并另存为 .xlsx 后再发送",
        )
    if data.startswith(_ZIP_MAGIC):
        return _read_xlsx(name, data)
    if suffix in (".xlsx", ".xls", ".et", ".ods"):
        raise FormError(name, "文件已损坏或不是 .xlsx 工作簿：请用 Excel 或 WPS 另存为 .xlsx")
    return [_read_csv(name, data)]


# -- xlsx --------------------------------------------------------------------------------


def _check_zip(name: str, data: bytes) -> tuple[zipfile.ZipFile, bytes | None]:
    """Refuse bombs and macros (from the central directory, before inflating anything);
    the archive and its [Content_Types].xml, if any."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError) as exc:
        raise FormError(name, f"不是有效的 .xlsx 工作簿（{exc}）") from None
    if len(members) > MAX_MEMBERS:
        raise FormError(name, f"压缩包内文件超过 {MAX_MEMBERS} 个，拒绝读取")
    total = 0
    for info in members:
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if total > MAX_UNCOMPRESSED or (info.file_size > 2**20 and ratio > MAX_RATIO):
            raise FormError(
                name, f"解压后过大（压缩炸弹？）：{info.filename} 解压后 {info.file_size} 字节"
            )
        lowered = info.filename.lower()
        if lowered.endswith("vbaproject.bin") or lowered.startswith("xl/macrosheets/"):
            raise FormError(name, "工作簿包含宏（vbaProject），不予读取：请另存为 .xlsx 后再发送")
    names = {i.filename for i in members}
    if "xl/workbook.xml" not in names and not any(n.endswith("workbook.xml") for n in names):
        raise FormError(name, "不是 Excel 工作簿（缺少 workbook.xml）")
    try:
        types = archive.read("[Content_Types].xml") if "[Content_Types].xml" in names else None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error, RuntimeError) as exc:
        raise FormError(name, f"工作簿已损坏（{exc}）") from None
    if types is not None and b"macroEnabled" in types:
        raise FormError(name, "工作簿是启用宏的格式，不予读取：请另存为 .xlsx 后再发送")
    return archive, types


def _read_xlsx(name: str, data: bytes) -> list[Grid]:
    archive, types = _check_zip(name, data)
    try:
        book = Book(archive, types)
    except DoctypeError:
        raise FormError(name, "工作簿含有 DTD 声明（DOCTYPE），不予读取") from None
    except Exception as exc:  # any malformed part: KeyError, XML errors, bad numbers
        raise FormError(name, f"无法作为 .xlsx 工作簿读取（{type(exc).__name__}）") from None
    if book.sheet_count > MAX_SHEETS:
        raise FormError(name, f"工作表超过 {MAX_SHEETS} 个，拒绝读取")
    grids, cells = [], 0
    for title, member in book.worksheets:
        grid = Grid(name, title)
        for row_no, values, formulas in _sheet_rows(name, title, book.rows(member)):
            cells += sum(v is not None for v in values)
            if cells > MAX_CELLS:
                raise FormError(name, f"非空单元格超过 {MAX_CELLS} 个，表格过大", title)
            for col in sorted(formulas):
                # Nothing is evaluated: a formula counts by the value Excel/WPS saved.
                if col >= len(values) or values[col] is None:
                    raise FormError(
                        name,
                        "这是公式但文件里没有保存计算结果：请在 Excel/WPS 中打开后保存，"
                        "或把公式改为数值",
                        title,
                        f"{column_letter(col)}{row_no}",
                    )
            if any(v is not None for v in values):
                grid.rows.append((row_no, values))
        grids.append(grid)
    return grids


def _sheet_rows(
    name: str, title: str, rows: Iterator[SheetRow]
) -> Iterator[tuple[int, list[Value], list[int]]]:
    # Rows are counted as they come, whatever the sheet's stored dimension claims.
    try:
        for row_no, values, formulas in rows:
            if row_no > MAX_ROWS:
                raise FormError(name, f"行数超过 {MAX_ROWS}，表格过大", title)
            while values and values[-1] is None:
                values.pop()
            if len(values) > MAX_COLUMNS:
                raise FormError(
                    name, f"列数超过 {MAX_COLUMNS}，表格过大", title, column_letter(MAX_COLUMNS)
                )
            yield row_no, values, [c for c in formulas if c < MAX_COLUMNS]
    except FormError:
        raise
    except DoctypeError:
        raise FormError(name, "工作表含有 DTD 声明（DOCTYPE），不予读取", title) from None
    except Exception as exc:
        raise FormError(name, f"工作表无法读取（{type(exc).__name__}）", title) from None


# -- csv ---------------------------------------------------------------------------------


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), else GB18030 (a superset of GB2312/GBK): what WPS saves."""
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", errors="strict")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("gb18030", errors="replace")


def _read_csv(name: str, data: bytes) -> Grid:
    if b"\x00" in data[:4096]:
        raise FormError(name, "不是文本表格（含二进制内容）：请发送 .xlsx 或 .csv 文件")
    try:
        text = decode_text(data)
    except UnicodeDecodeError as exc:
        raise FormError(name, f"文本编码无法识别（{exc.reason}）") from None
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",\t;，")
    except csv.Error:
        dialect = csv.excel
    grid, cells = Grid(name, "CSV"), 0
    try:
        for row_no, row in enumerate(csv.reader(io.StringIO(text), dialect), start=1):
            if row_no > MAX_ROWS:
                raise FormError(name, f"行数超过 {MAX_ROWS}，表格过大", "CSV")
            if len(row) > MAX_COLUMNS:
                raise FormError(name, f"列数超过 {MAX_COLUMNS}，表格过大", "CSV", f"第{row_no}行")
            values: list[Value] = [c if c.strip() else None for c in row]
            while values and values[-1] is None:
                values.pop()
            cells += len(values)
            if cells > MAX_CELLS:
                raise FormError(name, f"单元格超过 {MAX_CELLS} 个，表格过大", "CSV")
            if values:
                grid.rows.append((row_no, values))
    except csv.Error as exc:
        raise FormError(name, f"CSV 格式错误（{exc}）", "CSV") from None
    return grid
