"""The parts of an xlsx package a filled form needs, parsed with the standard library.

openpyxl's read-only mode builds a workbook object model per file (styles, theme, named
styles, properties) to hand over a few dozen values: 3-4 ms of the 5-7 ms a mailbox pass
spent per mail (bench.intake_mailbox, 2026-12-07). This reads only the content types, the
workbook and its relationships, the shared strings, the number formats of the cell styles
and the worksheets, and gives every cell the value openpyxl (``read_only=True,
data_only=True``) gave, by the same rules (its ``WorkSheetParser`` and
``ReadOnlyWorksheet``) and with its own helpers for number formats and serial dates.
tests/intake/test_xlsx_parity.py holds both readers side by side.

Refusals and bounds stay in read.py, which checks the container before this module reads
a byte of it. XML: ElementTree never fetches external entities and expat (>= 2.4) stops
entity amplification; a DOCTYPE, which no spreadsheet part carries, is refused outright.
"""

from __future__ import annotations

import functools
import posixpath
import zipfile
from collections.abc import Iterator
from datetime import date, time
from typing import Any, cast
from xml.etree.ElementTree import Element, XMLPullParser, fromstring

from openpyxl.styles.numbers import BUILTIN_FORMATS, is_date_format, is_timedelta_format
from openpyxl.utils.cell import coordinate_to_tuple
from openpyxl.utils.datetime import CALENDAR_MAC_1904, WINDOWS_EPOCH, from_excel, from_ISO8601

_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL_ID = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
_ROW, _V, _F, _IS, _SI = (_MAIN + tag for tag in ("row", "v", "f", "is", "si"))
_WORKBOOK_TYPES = [  # openpyxl's order of preference
    "application/vnd.ms-excel.template.macroEnabled.main+xml",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml",
    "application/vnd.ms-excel.sheet.macroEnabled.main+xml",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
]
_SHARED_STRINGS = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
_DTD = tuple("<!DOCTYPE".encode(enc) for enc in ("utf-8", "utf-16-le", "utf-16-be"))
_CHUNK = 64 * 1024
_WHOLE = 1 << 20  # parts up to this size (inflated) are parsed whole
_CACHED_STYLES = 64 * 1024  # stylesheets up to this size are remembered (a few KB in practice)

# (1-based row number, cell values from column A, 0-based columns holding a formula)
SheetRow = tuple[int, list[Any], list[int]]
DateStyles = tuple[frozenset[int], frozenset[int]]
_NO_DATES: DateStyles = (frozenset(), frozenset())


class DoctypeError(ValueError):
    """A part declares a DTD: never in a real spreadsheet, the door to entity tricks."""


class Book:
    """An opened package: worksheets in workbook order, shared strings, date styles."""

    def __init__(self, archive: zipfile.ZipFile, content_types: bytes | None = None) -> None:
        """``content_types``: the [Content_Types].xml the caller already read, if any."""
        self.archive = archive
        names = set(archive.namelist())
        overrides: dict[str, str] = {}
        defaults: set[str] = set()
        if content_types is None:
            content_types = archive.read("[Content_Types].xml")
        _refuse_dtd(content_types)
        for node in fromstring(content_types):
            kind = _local(node.tag)
            if kind == "Override":
                overrides.setdefault(node.get("ContentType", ""), node.get("PartName", "")[1:])
            elif kind == "Default":
                defaults.add(node.get("ContentType", ""))
        part = next((overrides[t] for t in _WORKBOOK_TYPES if t in overrides), None)
        if part is None:
            if not defaults.intersection(_WORKBOOK_TYPES):
                raise ValueError("no workbook part")
            part = "xl/workbook.xml"
        self.epoch = WINDOWS_EPOCH
        sheets: list[tuple[str, str | None]] = []
        for node in self._xml(part):
            kind = _local(node.tag)
            if kind == "workbookPr" and _true(node.get("date1904")):
                self.epoch = CALENDAR_MAC_1904
            elif kind == "sheets":
                sheets += [(s.get("name", ""), s.get(_REL_ID)) for s in node]
        rels = _relationships(self._xml(_rels_path(part)), _rels_path(part))
        self.worksheets: list[tuple[str, str]] = []  # (title, member)
        self.sheet_count = 0  # worksheets and chartsheets, as openpyxl's sheetnames
        for title, rel_id in sheets:
            if not rel_id:
                continue
            rel_type, target = rels[rel_id]
            if target not in names:
                continue
            self.sheet_count += 1
            if "chartsheet" not in rel_type:
                self.worksheets.append((title, target))
        strings = overrides.get(_SHARED_STRINGS)
        self.strings = self._shared_strings(strings) if strings is not None else []
        self.has_styles = "xl/styles.xml" in names
        self._styles: DateStyles | None = None  # read at the first need

    def _xml(self, member: str) -> Element:
        data = self.archive.read(member)
        _refuse_dtd(data)
        return fromstring(data)

    def _elements(self, member: str, tag: str) -> Iterator[Element]:
        """Every ``tag`` element of a part, in document order. A part of a form (a few KB)
        is parsed whole, in C; a large one in chunks, each element dropped once used, so
        memory stays bounded by an element rather than by the part."""
        if self.archive.getinfo(member).file_size <= _WHOLE:
            yield from self._xml(member).iter(tag)
            return
        parser: XMLPullParser[Element] = XMLPullParser(("end",))
        with self.archive.open(member) as src:
            first = True
            while chunk := src.read(_CHUNK):
                if first:
                    _refuse_dtd(chunk)
                    first = False
                parser.feed(chunk)
                yield from _ends(parser, tag)
        parser.close()
        yield from _ends(parser, tag)

    def _shared_strings(self, member: str) -> list[str]:
        # "x005F_" is dropped as openpyxl does.
        return [_text(node).replace("x005F_", "") for node in self._elements(member, _SI)]

    def date_styles(self) -> DateStyles:
        """Cell style indices with a date format, and those with a duration format.

        Read at the first number cell: a sheet of text needs no stylesheet.
        """
        if self._styles is None:
            self._styles = _NO_DATES
            if self.has_styles:
                data = self.archive.read("xl/styles.xml")
                # Most forms come from a few blanks (ours, a unit's WPS template): their
                # stylesheets repeat byte for byte, so a small one is read once per process.
                reader = _date_styles if len(data) <= _CACHED_STYLES else _date_styles.__wrapped__
                self._styles = reader(data)
        return self._styles

    def rows(self, member: str) -> Iterator[SheetRow]:
        """The sheet's rows from row 1 on, missing ones as empty rows (as openpyxl yields)."""
        counter, row_no = 1, 0
        for node in self._elements(member, _ROW):
            if (r := node.get("r")) is not None:
                try:
                    row_no = int(r)
                except ValueError:
                    number = float(r)
                    if not number.is_integer():
                        raise
                    row_no = int(number)
            else:
                row_no += 1
            cells = self._cells(node)
            while counter < row_no:
                yield counter, [], []
                counter += 1
            if counter <= row_no:
                yield counter, *_place(cells)
                counter += 1

    def _cells(self, row: Element) -> list[tuple[int, Any, bool]]:
        """(1-based column, value, holds a formula) of every cell of a row element."""
        out = []
        column = 0
        for cell in row:
            kind = cell.get("t", "n")
            style: Any = cell.get("s", 0)
            if style:
                style = int(style)
            value: Any = None if kind == "inlineStr" else (cell.findtext(_V) or None)
            coordinate = cell.get("r")
            column = _column(coordinate) if coordinate else column + 1
            if value is not None:
                if kind == "n":
                    value = _number(value)
                    dates, durations = self.date_styles()  # style 0 too: it may be a date
                    if style in dates:
                        try:
                            value = from_excel(value, self.epoch, timedelta=style in durations)
                        except (OverflowError, ValueError):
                            value = "#VALUE!"
                elif kind == "s":
                    value = self.strings[int(value)]
                elif kind == "b":
                    value = bool(int(value))
                elif kind == "d":
                    value = from_ISO8601(value)
            elif kind == "inlineStr" and (inline := cell.find(_IS)) is not None:
                value = _text(inline)
            out.append((column, _plain(value), cell.find(_F) is not None))
        return out


@functools.lru_cache(maxsize=64)
def _date_styles(data: bytes) -> DateStyles:
    _refuse_dtd(data)
    custom: dict[int, str] = {}
    styles: list[int] = []
    for node in fromstring(data):
        kind = _local(node.tag)
        if kind == "numFmts":
            for code in node:
                if _local(code.tag) == "numFmt":
                    custom[int(code.get("numFmtId", ""))] = code.get("formatCode", "")
        elif kind == "cellXfs":
            styles += [int(xf.get("numFmtId") or 0) for xf in node if _local(xf.tag) == "xf"]
    dates, durations = set(), set()
    for index, fmt_id in enumerate(styles):
        fmt = custom[fmt_id] if fmt_id in custom else BUILTIN_FORMATS.get(fmt_id)
        if is_date_format(fmt):
            dates.add(index)
        if is_timedelta_format(fmt):
            durations.add(index)
    return frozenset(dates), frozenset(durations)


def _ends(parser: XMLPullParser[Element], tag: str) -> Iterator[Element]:
    # Asked for "end" events only: each carries its element, complete.
    for _event, node in cast("Iterator[tuple[str, Element]]", parser.read_events()):
        if node.tag == tag:
            yield node
            node.clear()


def _place(cells: list[tuple[int, Any, bool]]) -> tuple[list[Any], list[int]]:
    """Values by column up to the row's last cell (openpyxl's ``_get_row``)."""
    if not cells:
        return [], []
    width = cells[-1][0]
    values: list[Any] = [None] * width
    formulas = []
    for column, value, formula in cells:
        if 1 <= column <= width:
            values[column - 1] = value
            if formula:
                formulas.append(column - 1)
    return values, formulas


@functools.lru_cache(maxsize=8192)  # forms repeat the same few hundred cell references
def _column(coordinate: str) -> int:
    return int(coordinate_to_tuple(coordinate)[1])


def _number(text: str) -> int | float:
    return float(text) if "." in text or "E" in text or "e" in text else int(text)


def _plain(value: Any) -> Any:
    """What a form cell may hold: str, int, float, date, datetime or None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, time):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | date):
        return value
    return str(value)  # a duration ([h]:mm format)


def _text(node: Element) -> str:
    """A string item: its text and its runs' text, without phonetic guides (rPh)."""
    plain: str | None = None
    runs = []
    for child in node:
        kind = _local(child.tag)
        if kind == "t":
            plain = child.text
        elif kind == "r":
            run = None
            for part in child:
                if _local(part.tag) == "t":
                    run = part.text
            if run is not None:
                runs.append(run)
    return (plain or "") + "".join(runs)


def _relationships(root: Element, path: str) -> dict[str, tuple[str, str]]:
    """Id -> (type, member path), targets resolved against the source part's folder."""
    parent = posixpath.split(posixpath.dirname(path))[0]
    out = {}
    for rel in root:
        if _local(rel.tag) != "Relationship":
            continue
        target = rel.get("Target", "")
        if rel.get("TargetMode") != "External":
            target = (
                target[1:]
                if target.startswith("/")
                else posixpath.normpath(posixpath.join(parent, target))
            )
        out[rel.get("Id", "")] = (rel.get("Type", ""), target)
    return out


def _rels_path(part: str) -> str:
    folder, name = posixpath.split(part)
    return posixpath.join(folder, "_rels", f"{name}.rels")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _true(flag: str | None) -> bool:
    """An OOXML boolean attribute as openpyxl reads it."""
    return bool(flag) and flag not in ("false", "f", "0")


def _refuse_dtd(head: bytes) -> None:
    if any(marker in head for marker in _DTD):
        raise DoctypeError("DOCTYPE")
