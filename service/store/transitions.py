"""Writing delivery results: the transitions a group commit applies in one transaction."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .pg_fast import apply_transitions as pg_apply
from .recording import Transition
from .tables import delivery_attempts, messages


def split(values: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """(columns set from plain values, columns set by SQL expressions) of a transition."""
    plain = sorted(k for k, v in values.items() if not isinstance(v, sa.ColumnElement))
    sql = {k: v for k, v in values.items() if isinstance(v, sa.ColumnElement)}
    return plain, sql


def shape(values: dict[str, Any]) -> tuple[Any, ...]:
    """Transitions of one shape share one UPDATE statement (executemany).

    SQL expressions are told apart by identity: the transitions below reuse the two
    module-level ones, anything else gets a statement of its own.
    """
    plain, sql = split(values)
    return tuple(plain), tuple((k, id(v)) for k, v in sorted(sql.items()))


# Shared (immutable) SQL expressions, so that transitions have comparable shapes.
ATTEMPTS_PLUS_ONE = messages.c.attempts + 1
ATTEMPTS_SAME = messages.c.attempts


async def apply_transitions(
    engine: AsyncEngine, pg: bool, items: list[Transition], autocommit: AsyncEngine
) -> list[bool]:
    """Apply queued transitions in one transaction (group commit).

    A transition applies only while its worker still holds the claim (``sending``,
    ``claimed_by``). The rows still held are read and locked first (PostgreSQL: ``FOR
    UPDATE``; SQLite: the transaction's write lock), so the updates that follow apply
    exactly to them; the updates go out as one executemany per shape of values instead
    of one statement per message. A later transition of the same claim in one batch
    finds it no longer ``sending``, as it would have one statement at a time.
    """
    m = messages.c
    if pg:
        # PostgreSQL's path is one statement, a transaction by itself: ``autocommit`` (the
        # engine so configured, kept by the caller: making one registers events) saves the
        # BEGIN and COMMIT round trips, two of the three per group commit.
        async with autocommit.connect() as conn:
            fast = await pg_apply(conn, items, ATTEMPTS_PLUS_ONE, ATTEMPTS_SAME)
        if fast is not None:
            return fast
    async with engine.begin() as conn:
        rows = await conn.execute(
            sa.select(m.id, m.claimed_by)
            .where(m.id.in_(sorted({item[0] for item in items})), m.status == "sending")
            .with_for_update()
        )
        held = {(mid, worker) for mid, worker in rows}
        results = []
        groups: dict[tuple[Any, ...], list[Transition]] = {}
        for item in items:
            mid, worker, values, _ = item
            ok = (mid, worker) in held
            results.append(ok)
            if ok:
                held.discard((mid, worker))  # it leaves ``sending`` with this transition
                groups.setdefault(shape(values), []).append(item)
        for group in groups.values():
            plain, sql = split(group[0][2])
            stmt = (
                sa.update(messages)
                .where(
                    m.id == sa.bindparam("_id"),
                    m.claimed_by == sa.bindparam("_worker"),
                    m.status == "sending",
                )
                .values({k: sa.bindparam(f"_v_{k}") for k in plain} | sql)
            )
            await conn.execute(
                stmt,
                [
                    {"_id": mid, "_worker": worker} | {f"_v_{k}": values[k] for k in plain}
                    for mid, worker, values, _ in group
                ],
            )
        attempts = [item[3] for item, ok in zip(items, results, strict=True) if ok]
        if attempts:
            await conn.execute(delivery_attempts.insert(), attempts)
    return results
