"""What the schema can hold, checked before the database sees a value.

PostgreSQL refuses a ``VARCHAR(n)`` value longer than ``n`` and any text with a NUL
character; SQLite accepts both. Either way the problem must surface here, named, and not
as a driver traceback (input) or a failed group commit (delivery results).

- :func:`over_limit` / :func:`check_row` compare a row with the column lengths declared
  in :mod:`.tables` (one source of truth: the migrations create the same lengths).
- :func:`fit` bounds a value that the service records but does not choose (a provider's
  message id, an SMTP reply): too long, it keeps a prefix and a hash of the whole value,
  so two different long ids stay different and the same id always fits the same way.
- :func:`clean_text` makes free text storable: NUL and lone surrogates are replaced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ..errors import LedgerError

# Shown instead of a character no database text column can hold.
REPLACEMENT = "\ufffd"
_HASH_CHARS = 16


def column_limit(table: sa.Table, column: str) -> int | None:
    """The declared maximum length of ``table.column`` (None: unbounded text)."""
    length = getattr(table.c[column].type, "length", None)
    return int(length) if length is not None else None


def over_limit(table: sa.Table, row: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(column, limit, actual length) of every string in ``row`` longer than its column."""
    out = []
    for name, value in row.items():
        if not isinstance(value, str) or name not in table.c:
            continue
        limit = column_limit(table, name)
        if limit is not None and len(value) > limit:
            out.append((name, limit, len(value)))
    return out


def check_row(table: sa.Table, row: Mapping[str, Any], labels: Mapping[str, str]) -> None:
    """Raise LedgerError naming the field (``labels``: column → what the user typed)."""
    problems = []
    for name, limit, length in over_limit(table, row):
        problems.append(f"{labels.get(name, name)} 过长：{length} 个字符，最多 {limit} 个")
    for name, value in row.items():
        if isinstance(value, str) and "\x00" in value:
            problems.append(f"{labels.get(name, name)} 含有 NUL 字符，无法保存")
    if problems:
        raise LedgerError("；".join(problems))


def check_rows(
    table: sa.Table, rows: Sequence[Mapping[str, Any]], labels: Mapping[str, str]
) -> None:
    """:func:`check_row` for many rows of one shape (an import); names the first bad row.

    Column by column rather than row by row: a million-row import pays ~0.1 s for it.
    """
    if not rows:
        return
    names = [n for n, v in rows[0].items() if isinstance(v, str) and n in table.c]
    for name in names:
        limit = column_limit(table, name)
        values = [r[name] for r in rows]
        bad = (limit is not None and max(map(len, values)) > limit) or any(
            "\x00" in v for v in values
        )
        if bad:
            for index, row in enumerate(rows, start=1):
                try:
                    check_row(table, {name: row[name]}, labels)
                except LedgerError as exc:
                    where = f"第 {index} 条：" if len(rows) > 1 else ""
                    raise LedgerError(where + str(exc)) from None


def clean_text(value: str) -> str:
    """``value`` with NUL and unpaired surrogates replaced: storable in any text column."""
    if "\x00" in value:
        value = value.replace("\x00", REPLACEMENT)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def fit(value: str, limit: int) -> str:
    """``value`` cleaned and, if longer than ``limit``, a prefix + ``~`` + a hash of it."""
    value = clean_text(value)
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    return f"{value[: limit - _HASH_CHARS - 1]}~{digest}"


def fit_column(table: sa.Table, column: str, value: str | None) -> str | None:
    """:func:`fit` to the declared length of ``table.column`` (text columns: clean only)."""
    if value is None:
        return None
    limit = column_limit(table, column)
    return clean_text(value) if limit is None else fit(value, limit)
