"""Read-only views of the outbox and the ledger for operators (CLI and web): filtered
message lists, one message with its attempts, and when each occurrence was completed."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .tables import delivery_attempts, messages, submissions

MESSAGE_STATES = ("pending", "sending", "sent", "cancelled", "stale", "failed")
FINAL_STATES = ("sent", "cancelled", "stale", "failed")
_CHUNK = 2_000


@dataclass(frozen=True)
class MessageFilter:
    unit: str | None = None
    person: str | None = None
    obligation: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def message_rows(
    engine: AsyncEngine, campaign: str, where: MessageFilter, limit: int
) -> list[dict[str, Any]]:
    """The latest ``limit`` messages (by planned moment) matching every given filter."""
    m = messages.c
    query = sa.select(messages).where(m.campaign == campaign)
    if where.person:
        query = query.where(m.recipient_id == where.person)
    if where.obligation:
        # a bundle over several obligations has none of its own: its periods name them
        query = query.where(sa.or_(m.obligation == where.obligation, m.obligation.is_(None)))
    if where.status:
        query = query.where(m.status == where.status)
    if where.since:
        query = query.where(m.due_at >= where.since)
    if where.until:
        query = query.where(m.due_at < where.until)
    query = query.order_by(m.due_at, m.id)
    # Units are a JSON list: filtered here, while only the last ``limit`` rows are kept.
    kept: deque[dict[str, Any]] = deque(maxlen=limit)
    async with engine.connect() as conn:
        result = await conn.stream(query)
        async for partition in result.partitions(_CHUNK):
            for row in partition:
                item = dict(row._mapping)
                if where.unit is not None and where.unit not in (item["units"] or ()):
                    continue
                if where.obligation and where.obligation not in obligations_of(item):
                    continue
                kept.append(item)
    return list(kept)


def obligations_of(row: dict[str, Any]) -> list[str]:
    """The obligations a message speaks of: its own, or those of its periods (a bundle)."""
    keys = {p.partition("@")[0] for p in row.get("periods") or () if "@" in p}
    if row.get("obligation"):
        keys.add(row["obligation"])
    return sorted(keys)


async def message_detail(
    engine: AsyncEngine, campaign: str, key: str
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """One message by its key (or its numeric id) and its delivery attempts in order."""
    m, a = messages.c, delivery_attempts.c
    cond = m.idem_key == key
    if key.isdigit():
        cond = sa.or_(cond, m.id == int(key))
    async with engine.connect() as conn:
        row = (
            await conn.execute(sa.select(messages).where(m.campaign == campaign, cond).limit(1))
        ).first()
        if row is None:
            return None
        attempts = await conn.execute(
            sa.select(delivery_attempts).where(a.message_id == row.id).order_by(a.at, a.id)
        )
        return dict(row._mapping), [dict(r._mapping) for r in attempts]


async def final_keys(engine: AsyncEngine, keys: Sequence[str]) -> dict[str, str]:
    """Of ``keys``, those already in a final state, with that state."""
    m = messages.c
    out: dict[str, str] = {}
    async with engine.connect() as conn:
        for i in range(0, len(keys), 500):
            rows = await conn.execute(
                sa.select(m.idem_key, m.status).where(
                    m.idem_key.in_(list(keys[i : i + 500])), m.status.in_(FINAL_STATES)
                )
            )
            out.update({r[0]: r[1] for r in rows})
    return out


async def submission_moments(
    engine: AsyncEngine, campaign: str, as_of: datetime, units: Sequence[str] | None = None
) -> list[tuple[str, str, str, int, datetime]]:
    """Active submissions made by ``as_of``, oldest first: (unit, obligation, period, n, at)."""
    c = submissions.c
    query = (
        sa.select(c.unit_id, c.obligation, c.period, c.count, c.submitted_at)
        .where(c.campaign == campaign, c.retracted_at.is_(None), c.submitted_at <= as_of)
        .order_by(c.submitted_at, c.id)
    )
    if units is not None:
        query = query.where(c.unit_id.in_(list(units)))
    async with engine.connect() as conn:
        return [(r[0], r[1], r[2], int(r[3]), r[4]) for r in await conn.execute(query)]
