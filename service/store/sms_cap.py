"""The daily SMS cap: slots per phone number and day, shared by every replica.

A slot is one conditional upsert on ``sms_quota`` (taken while fewer than the limit are
used); concurrent senders' reservations share a transaction (a group commit without
linger), and PostgreSQL takes a whole round in one statement (:mod:`.pg_fast`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from .group_commit import GroupCommit
from .pg_fast import reserve_slots
from .tables import messages, sms_quota

_CHUNK = 500


class SmsCap:
    """SMS slots of one campaign."""

    def __init__(self, engine: AsyncEngine, campaign: str) -> None:
        self.engine = engine
        self.campaign = campaign
        self._pg = engine.dialect.name == "postgresql"
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # Reservations of concurrent senders share one transaction (no linger: the
        # sender waits for its answer); each stays one conditional upsert, in order.
        self._reservations: GroupCommit[tuple[str, str, int]] = GroupCommit(
            self._reserve_many, linger=0, reconnect=False
        )
        # Built once (bound parameters): building it per SMS cost more than running it.
        q = sms_quota.c
        self._reserve_stmt = (
            (pg_insert if self._pg else sqlite_insert)(sms_quota)
            .values(
                campaign=self.campaign,
                phone=sa.bindparam("r_phone"),
                day=sa.bindparam("r_day"),
                used=1,
            )
            .on_conflict_do_update(
                index_elements=[q.campaign, q.phone, q.day],
                set_={"used": q.used + 1},
                where=q.used < sa.bindparam("r_limit"),
            )
            .returning(q.used)
        )

    async def reserve(self, phone: str, day: str, limit: int) -> bool:
        """Take one of the phone number's SMS slots for ``day`` while fewer than ``limit``
        are used (one conditional upsert: every replica shares the count). Reservations
        made at the same time share a transaction; each is still its own upsert."""
        if limit <= 0:
            return False
        return await self._reservations.submit((phone, day, limit))

    async def _reserve_many(self, items: list[tuple[str, str, int]]) -> list[bool]:
        stmt = self._reserve_stmt
        out = [False] * len(items)
        # Rows are locked in one order (day, phone) in every replica: no deadlock between
        # two replicas' batches; two reservations of one number keep their own order.
        order = sorted(range(len(items)), key=lambda i: items[i][:2][::-1])
        if self._pg and len({item[:2] for item in items}) == len(items):
            # Every number once: one statement, a transaction by itself (autocommit saves
            # the BEGIN and COMMIT round trips). Several slots of one number take several
            # statements, which must share one transaction (below).
            async with self._autocommit.connect() as conn:
                return await reserve_slots(conn, self.campaign, items)
        async with self.engine.begin() as conn:
            if self._pg:
                return await reserve_slots(conn, self.campaign, items)
            for i in order:
                phone, day, limit = items[i]
                params = {"r_phone": phone, "r_day": day, "r_limit": limit}
                out[i] = (await conn.execute(stmt, params)).first() is not None
        return out

    async def release(self, phone: str, day: str) -> None:
        """Give a slot back: the provider did not accept the message."""
        q = sms_quota.c
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(sms_quota)
                .where(q.campaign == self.campaign, q.phone == phone, q.day == day, q.used > 0)
                .values(used=q.used - 1)
            )

    async def sent_since(self, recipients: Sequence[str], since: datetime) -> dict[str, int]:
        """SMS already sent to each recipient since ``since`` (for the daily cap)."""
        m = messages.c
        out: dict[str, int] = {}
        async with self.engine.connect() as conn:
            for i in range(0, len(recipients), _CHUNK):
                rows = await conn.execute(
                    sa.select(m.recipient_id, sa.func.count())
                    .where(
                        m.campaign == self.campaign,
                        m.recipient_id.in_(list(recipients[i : i + _CHUNK])),
                        m.channel == "sms",
                        m.status == "sent",
                        m.sent_at >= since,
                    )
                    .group_by(m.recipient_id)
                )
                out.update({r[0]: int(r[1]) for r in rows})
        return out
