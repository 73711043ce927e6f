"""Multi-row INSERT … RETURNING whose ids come back matched to the rows given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_ids(
    conn: AsyncConnection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    key: Sequence[str] | None,
) -> list[int]:
    """Insert ``rows``; their ``id``s in the order given.

    ``sort_by_parameter_order`` would give that order too, but on SQLite SQLAlchemy then
    sends one INSERT per row. When ``key`` (column names) is unique among ``rows``, one
    multi-row INSERT returns the ids with the key and they are matched back; otherwise
    (or with no ``key``) the ordered form is used.
    """
    if not rows:
        return []
    keys = [tuple(row[k] for k in key) for row in rows] if key else []
    if not key or len(set(keys)) < len(keys):
        ordered = await conn.execute(
            table.insert().returning(table.c.id, sort_by_parameter_order=True), list(rows)
        )
        return [int(i) for i in ordered.scalars()]
    result = await conn.execute(
        table.insert().returning(table.c.id, *(table.c[k] for k in key)), list(rows)
    )
    id_of = {tuple(found[1:]): int(found[0]) for found in result.all()}
    return [id_of[k] for k in keys]
