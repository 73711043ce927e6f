"""Reading YAML and CSV inputs while remembering where every value came from.

Validation errors must name the file, the line and the field, so loaders keep the
ruamel.yaml node positions (YAML) or the row numbers (CSV) next to the plain data.
"""

from __future__ import annotations

import csv
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, ReusedAnchorWarning

from .errors import ConfigError, Problem

MAX_YAML_BYTES = 5 * 1024 * 1024  # schedules and templates are hand-written
MAX_CSV_BYTES = 512 * 1024 * 1024  # a national directory is ~30 MB


# Characters no input text may hold (issue 8.3): C0 controls, DEL and C1 controls break
# headers, spreadsheets (XML) and PostgreSQL (NUL); U+2028/2029 are line breaks to
# JavaScript and some mail clients; bidi overrides/isolates make text display other than
# it reads. Multi-line fields may keep LF and tab.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_MULTILINE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def refuse_control(value: Any, multiline: bool = False) -> Any:
    """``value`` unchanged, or ValueError naming the first control character in it (also
    inside lists/tuples of strings)."""
    if isinstance(value, list | tuple):
        for item in value:
            refuse_control(item, multiline)
    elif isinstance(value, str) and (
        m := (_CONTROL_MULTILINE if multiline else _CONTROL).search(value)
    ):
        raise ValueError(
            f"control character U+{ord(m.group()):04X} at position {m.start() + 1}: "
            "not allowed in text (含有不可见的控制字符)"
        )
    return value


def read_text(path: Path, limit: int = MAX_YAML_BYTES) -> str:
    try:
        if path.stat().st_size > limit:
            raise ConfigError(
                [Problem(str(path), None, "", f"file is larger than {limit // 2**20} MB")]
            )
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), None, "", "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Problem(str(path), None, "", f"not UTF-8 text ({exc.reason})")]
        ) from None
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", exc.strerror or str(exc))]) from None


class _Constructor(RoundTripConstructor):
    """Leaves dates as text so that validation (not the parser) reports a bad date,
    with its line and field, instead of an unlocated ValueError."""


_Constructor.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda self, node: self.construct_scalar(node)
)
MAX_NODES = 100_000  # an alias "bomb" expands exponentially; real inputs are far smaller


def load_yaml(path: Path, text: str | None = None) -> Any:
    """Parse YAML keeping positions; syntax errors become located problems."""
    text = read_text(path) if text is None else text
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ReusedAnchorWarning)
            doc = yaml.load(text)
        _check_size(doc, path)
        return doc
    except ConfigError:
        raise
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        msg = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ConfigError([Problem(str(path), line, "", f"YAML syntax: {msg}")]) from None
    except Exception as exc:  # ruamel raises a few unmarked errors (duplicate keys…)
        raise ConfigError([Problem(str(path), None, "", f"YAML: {exc}")]) from None


def _check_size(doc: Any, path: Path) -> None:
    seen = 0
    stack = [doc]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ConfigError(
                [Problem(str(path), None, "", f"more than {MAX_NODES} values (alias expansion?)")]
            )
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def clean_loc(doc: Any, loc: Sequence[int | str]) -> list[int | str]:
    """Drop the parts pydantic adds that are not in the document (union tags)."""
    out: list[int | str] = []
    node = doc
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part not in node and i + 1 < len(loc) and loc[i + 1] in node:
            continue
        out.append(part)
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return out


def line_of(doc: Any, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the deepest node of ``loc`` that exists in ``doc``."""
    line: int | None = None
    node = doc
    if isinstance(node, CommentedMap | CommentedSeq):
        line = node.lc.line + 1
    for part in loc:
        # Positions can be missing (e.g. items of a tagged flow sequence): keep the last.
        if isinstance(node, CommentedMap) and part in node:
            pos = node.lc.key(part)
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            pos = node.lc.item(part)
            node = node[part]
        else:
            break
        if not pos:
            break
        line = pos[0] + 1
    return line


def field_name(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def problems_from_validation(
    path: Path | str, doc: Any, exc: ValidationError, prefix: Sequence[int | str] = ()
) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        # pydantic adds the tag of a discriminated union or a function name to the path
        loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]
        full = clean_loc(doc, [*prefix, *loc])
        msg = err["msg"]
        problems.append(Problem(str(path), line_of(doc, full), field_name(full), msg))
    return problems


def to_plain(node: Any) -> Any:
    """Turn ruamel containers into dicts and lists (pydantic wants plain data)."""
    if isinstance(node, dict):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    return node


_SHARED_COLUMNS = frozenset({"kind", "parent", "unit", "role", "scope", "tags"})


def iter_csv(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV file with their 1-based line numbers (header is line 1), streamed
    from disk: a national directory is never held as one string."""
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise ConfigError([Problem(str(path), None, "", "file is larger than 512 MB")])
        fh = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), None, "", "file not found")]) from None
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", exc.strerror or str(exc))]) from None
    with fh:
        reader = csv.DictReader(fh)
        try:
            for row in reader:
                if None in row:
                    raise ConfigError(
                        [Problem(str(path), reader.line_num, "", "more cells than header columns")]
                    )
                if not any((v or "").strip() for v in row.values()):
                    continue
                # Ids repeated across rows (parent, unit, scope…) share one string object.
                yield (
                    reader.line_num,
                    {
                        k.strip(): sys.intern(v.strip())
                        if k in _SHARED_COLUMNS and v
                        else (v or "").strip()
                        for k, v in row.items()
                    },
                )
        except csv.Error as exc:
            raise ConfigError([Problem(str(path), reader.line_num, "", f"CSV: {exc}")]) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                [Problem(str(path), reader.line_num + 1, "", f"not UTF-8 text ({exc.reason})")]
            ) from None


def read_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    return list(iter_csv(path))


# ---------------------------------------------------------------------------------------
# Tables an office sends us (submissions): CSV in UTF-8 (with or without BOM) or in
# GB18030/GBK, as Excel and WPS save it on Chinese Windows, and XLSX.

_DECODE_CHUNK = 1 << 20
UTF8, GB18030 = "UTF-8", "GB18030"


def _line_of_offset(piece: bytes, offset: int, lines_before: int) -> int:
    return lines_before + piece.count(b"\n", 0, offset) + 1


def detect_encoding(path: Path) -> str:
    """``UTF-8`` or ``GB18030`` (a superset of GBK and GB2312), decided exactly, not guessed.

    One streamed pass decodes whole lines as strict UTF-8. A BOM, or any valid non-ASCII
    UTF-8 before the first invalid byte, makes the file UTF-8 and that byte an error on its
    own line; a file whose first non-ASCII bytes are not UTF-8 is read as GB18030 and must
    decode as such, or the error names the line. No statistical detector (charset-normalizer,
    chardet): offices produce exactly these two families, and a guess that picks Big5 or
    Latin-1 for a short file would import garbage names without a word.
    """
    seen_utf8 = False
    lines_before = 0
    rest = b""
    with path.open("rb") as fh:
        head = fh.read(3)
        if head == b"\xef\xbb\xbf":
            seen_utf8 = True
        else:
            rest = head
        while True:
            chunk = fh.read(_DECODE_CHUNK)
            data = rest + chunk
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            piece, rest = data[:cut], data[cut:]
            try:
                piece.decode("utf-8")
            except UnicodeDecodeError as exc:
                if seen_utf8 or not piece[: exc.start].isascii():
                    line = _line_of_offset(piece, exc.start, lines_before)
                    raise ConfigError(
                        [Problem(str(path), line, "", _bad_bytes(piece, exc, UTF8))]
                    ) from None
                _check_gb18030(path, fh, piece, lines_before)
                return GB18030
            seen_utf8 = seen_utf8 or not piece.isascii()
            lines_before += piece.count(b"\n")
            if not chunk:
                return UTF8


def _bad_bytes(piece: bytes, exc: UnicodeDecodeError, encoding: str) -> str:
    bad = piece[exc.start : exc.start + 4].hex(" ")
    return f"不是有效的 {encoding} 文本（字节 {bad}）"


def _check_gb18030(path: Path, fh: Any, first: bytes, lines_before: int) -> None:
    """Decode the rest as GB18030 from ``first`` on; a bad byte is reported on its line."""
    rest = first
    while True:
        chunk = fh.read(_DECODE_CHUNK)
        data = rest + chunk
        cut = data.rfind(b"\n") + 1 if chunk else len(data)
        piece, rest = data[:cut], data[cut:]
        try:
            piece.decode("gb18030")
        except UnicodeDecodeError as exc:
            line = _line_of_offset(piece, exc.start, lines_before)
            raise ConfigError(
                [Problem(str(path), line, "", _bad_bytes(piece, exc, "UTF-8 或 GB18030"))]
            ) from None
        lines_before += piece.count(b"\n")
        if not chunk:
            return


class TableFile:
    """Rows of a CSV or XLSX file as (row number, {header: value}), streamed.

    ``encoding`` names what was read (``UTF-8``, ``GB18030`` or ``XLSX``); ``column(h)``
    names a column for error messages (the header as written, with its letter in XLSX).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ConfigError([Problem(str(path), None, "", "找不到文件")]) from None
        except OSError as exc:
            raise ConfigError([Problem(str(path), None, "", exc.strerror or str(exc))]) from None
        if size > MAX_CSV_BYTES:
            raise ConfigError([Problem(str(path), None, "", "文件超过 512 MB")])
        self.is_xlsx = path.suffix.lower() in (".xlsx", ".xlsm")
        self.encoding = "XLSX" if self.is_xlsx else detect_encoding(path)
        self.headers: list[str] = []

    def column(self, header: str) -> str:
        if not self.is_xlsx or header not in self.headers:
            return header
        from openpyxl.utils import get_column_letter

        return f"{header}（{get_column_letter(self.headers.index(header) + 1)} 列）"

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return self._xlsx_rows() if self.is_xlsx else self._csv_rows()

    def _csv_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        codec = "utf-8-sig" if self.encoding == UTF8 else "gb18030"
        where = str(self.path)
        with self.path.open(encoding=codec, newline="") as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader, None)
                if header is None:
                    return
                self.headers = [h.strip() for h in header]
                width = len(self.headers)
                for cells in reader:
                    if len(cells) > width and any(c.strip() for c in cells[width:]):
                        raise ConfigError(
                            [Problem(where, reader.line_num, "", "单元格数多于表头列数")]
                        )
                    if not any(c.strip() for c in cells):
                        continue
                    yield reader.line_num, dict(zip(self.headers, cells, strict=False))
            except csv.Error as exc:
                raise ConfigError([Problem(where, reader.line_num, "", f"CSV: {exc}")]) from None

    def _xlsx_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Values as stored: formulas are never evaluated (a formula cell is an error)."""
        from openpyxl import load_workbook

        where = str(self.path)
        try:
            book = load_workbook(self.path, read_only=True, data_only=False)
        except Exception as exc:  # zipfile/XML errors of a damaged or mislabelled file
            raise ConfigError([Problem(where, None, "", f"无法读取 XLSX：{exc}")]) from None
        try:
            sheet = book.worksheets[0]
            header_done = False
            for row in sheet.iter_rows():
                cells = [c for c in row if getattr(c, "value", None) is not None]
                if not header_done:
                    if not cells:
                        continue
                    self.headers = [
                        str(c.value).strip() if c.value is not None else "" for c in row
                    ]
                    header_done = True
                    continue
                if not cells:
                    continue
                values: dict[str, Any] = {}
                for i, c in enumerate(row):
                    if i >= len(self.headers) or c.value is None:
                        continue
                    if getattr(c, "data_type", "") == "f":
                        raise ConfigError(
                            [
                                Problem(
                                    where,
                                    c.row,
                                    self.column(self.headers[i]),
                                    "公式单元格不计算，请粘贴为数值",
                                )
                            ]
                        )
                    values[self.headers[i]] = c.value
                yield cells[0].row, values
        finally:
            book.close()
