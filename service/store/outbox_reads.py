"""What the outbox answers without changing anything: counts, rows, the next due time,
the last digest a person received. Mixed into :class:`~service.store.outbox.Outbox`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .tables import messages

_CHUNK = 500


class OutboxReads:
    """Read-only queries of one campaign's messages."""

    engine: AsyncEngine
    campaign: str

    async def next_attempt_at(self) -> datetime | None:
        m = messages.c
        async with self.engine.connect() as conn:
            moment: datetime | None = (
                await conn.execute(
                    sa.select(sa.func.min(m.next_attempt_at)).where(
                        m.campaign == self.campaign, m.status == "pending"
                    )
                )
            ).scalar_one_or_none()
        return moment

    async def status_counts(self) -> dict[str, int]:
        m = messages.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(m.status, sa.func.count())
                .where(m.campaign == self.campaign)
                .group_by(m.status)
            )
            return {r[0]: int(r[1]) for r in rows}

    async def rows(self, status: str | None = None) -> list[dict[str, Any]]:
        return [row async for row in self.iter_rows(status)]

    async def iter_rows(
        self, status: str | None = None, by_key: bool = False
    ) -> AsyncIterator[dict[str, Any]]:
        """Every message of the campaign, streamed in ``sent_at`` order (then id, or key).

        A national replay ends with ~10^6 rows: exports read them in partitions instead
        of holding them all.
        """
        m = messages.c
        query = sa.select(messages).where(m.campaign == self.campaign)
        query = query.order_by(m.sent_at, m.idem_key if by_key else m.id)
        if status:
            query = query.where(m.status == status)
        async with self.engine.connect() as conn:
            result = await conn.stream(query)
            async for partition in result.partitions(_CHUNK):
                for row in partition:
                    yield dict(row._mapping)

    async def last_sent_items(
        self, recipient_id: str, channel: str, kind: str, before: datetime
    ) -> list[dict[str, Any]] | None:
        """The items of the last message of ``kind`` sent to the recipient on the channel
        before ``before`` (None: there was none) — what a digest compares itself with."""
        m = messages.c
        query = (
            sa.select(m["items"])
            .where(
                m.campaign == self.campaign,
                m.recipient_id == recipient_id,
                m.channel == channel,
                m.kind == kind,
                m.status == "sent",
                m.sent_at < before,
            )
            .order_by(m.sent_at.desc())
            .limit(1)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else list(row[0] or [])
