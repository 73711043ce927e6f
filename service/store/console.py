"""Read-only queries the console needs beyond the ledger's and the outbox's own."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .tables import audit_log, delivery_attempts, messages, planner_state, submissions

_MESSAGE_COLS = (
    messages.c.id,
    messages.c.idem_key,
    messages.c.kind,
    messages.c.step,
    messages.c.obligation,
    messages.c.periods,
    messages.c.units,
    messages.c.recipient_id,
    messages.c.channel,
    messages.c.due_at,
    messages.c.status,
    messages.c.reason,
    messages.c.attempts,
    messages.c.sent_at,
    messages.c.updated_at,
)


class ConsoleQueries:
    def __init__(self, engine: AsyncEngine, campaign: str) -> None:
        self.engine = engine
        self.campaign = campaign

    async def dated_counts(
        self, units: Sequence[str] | None = None
    ) -> list[tuple[str, str, str, int, datetime]]:
        """Active submissions ``(unit, obligation, period, count, submitted_at)`` in time order."""
        c = submissions.c
        query = (
            sa.select(c.unit_id, c.obligation, c.period, c.count, c.submitted_at)
            .where(c.campaign == self.campaign, c.retracted_at.is_(None))
            .order_by(c.submitted_at, c.id)
        )
        if units is not None:
            query = query.where(c.unit_id.in_(list(units)))
        async with self.engine.connect() as conn:
            return [(r[0], r[1], r[2], int(r[3]), r[4]) for r in await conn.execute(query)]

    async def occurrence_tallies(
        self, occurrences: Sequence[tuple[str, str, datetime, int]], at: datetime
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """Per (obligation, period): how many units' active submissions made by ``at`` reach
        the quota minimum — (in all, by the due moment). ``occurrences`` are
        (obligation, period, due_at, quota_min).

        Aggregated in SQL (one pass, one row per occurrence back) so that the dashboard
        costs about one GROUP BY of the ledger, not a Python loop over every row. Reaching
        the minimum with what was submitted by the due moment is exactly "completed on
        time"; the rest of the completed are late (补报).
        """
        if not occurrences:
            return {}
        c = submissions.c
        # One statement, one branch per occurrence with its due moment and minimum as
        # constants (a CASE over every row cost ~2× more); each branch reads its
        # occurrence's rows through ix_submissions_tally (index-only, in unit order).
        branches = []
        for obligation, period, due, qmin in occurrences:
            per_unit = (
                sa.select(
                    sa.func.sum(c.count).label("total"),
                    sa.func.sum(sa.case((c.submitted_at <= due, c.count), else_=0)).label("early"),
                )
                .where(
                    c.campaign == self.campaign,
                    c.obligation == obligation,
                    c.period == period,
                    c.retracted_at.is_(None),
                    c.submitted_at <= at,
                )
                .group_by(c.unit_id)
                .subquery()
            )
            branches.append(
                sa.select(
                    sa.literal(obligation).label("obligation"),
                    sa.literal(period).label("period"),
                    sa.func.coalesce(
                        sa.func.sum(sa.case((per_unit.c.total >= qmin, 1), else_=0)), 0
                    ),
                    sa.func.coalesce(
                        sa.func.sum(sa.case((per_unit.c.early >= qmin, 1), else_=0)), 0
                    ),
                ).select_from(per_unit)
            )
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.union_all(*branches))
            return {(r[0], r[1]): (int(r[2]), int(r[3])) for r in rows}

    async def submissions_per_day(self, at: datetime, tz: ZoneInfo) -> dict[date, int]:
        """Active submissions made by ``at`` per local calendar day (for the chart)."""
        c = submissions.c
        if self.engine.dialect.name == "postgresql":
            day = sa.func.date(sa.func.timezone(tz.key, c.submitted_at))
        else:  # stored as naive UTC text; the campaign zone's offset (no DST in China)
            hours = int((at.astimezone(tz).utcoffset() or timedelta()).total_seconds() // 3600)
            day = sa.func.date(c.submitted_at, f"{hours:+d} hours")
        query = (
            sa.select(day, sa.func.count())
            .where(c.campaign == self.campaign, c.retracted_at.is_(None), c.submitted_at <= at)
            .group_by(day)
        )
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
            return {
                (r[0] if isinstance(r[0], date) else date.fromisoformat(str(r[0]))): int(r[1])
                for r in rows
            }

    def _unit_submissions_query(self, unit: str) -> sa.Select[Any]:
        c = submissions.c
        return (
            sa.select(submissions)
            .where(c.campaign == self.campaign, c.unit_id == unit)
            .order_by(c.submitted_at.desc(), c.id.desc())
        )

    async def unit_submissions(self, unit: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(self._unit_submissions_query(unit))
            return [dict(r._mapping) for r in rows]

    async def liaison_view(
        self, unit: str, person: str, until: datetime, limit: int = 10
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A liaison's page in one pool checkout: (their unit's submissions newest first,
        their latest ``limit`` messages planned before ``until``).

        Each checkout costs a pre-ping and a BEGIN/ROLLBACK on top of the statement: with
        200 liaisons loading at once, two checkouts per page were most of its time.
        """
        async with self.engine.connect() as conn:
            rows = await conn.execute(self._unit_submissions_query(unit))
            subs = [dict(r._mapping) for r in rows]
            query = self._messages_query(recipients=[person], until=until, limit=limit)
            return subs, [dict(r._mapping) for r in await conn.execute(query)]

    def _audit_query(self, submission_ids: Sequence[int]) -> sa.Select[Any]:
        a = audit_log.c
        subjects = [f"submission:{sid}" for sid in submission_ids]
        return (
            sa.select(a.at, a.actor, a.action, a.subject, a.detail)
            .where(a.campaign == self.campaign, a.subject.in_(subjects))
            .order_by(a.id.desc())
        )

    async def audit_for(self, submission_ids: Sequence[int]) -> list[dict[str, Any]]:
        if not submission_ids:
            return []
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(self._audit_query(submission_ids))]

    async def unit_view(
        self, unit: str, recipients: Sequence[str], limit: int = 100
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """A unit's page in one pool checkout: (its submissions newest first, their audit
        entries, the latest ``limit`` messages to ``recipients``)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(self._unit_submissions_query(unit))
            subs = [dict(r._mapping) for r in rows]
            audit = []
            if subs:
                query = self._audit_query([s["id"] for s in subs])
                audit = [dict(r._mapping) for r in await conn.execute(query)]
            query = self._messages_query(recipients=list(recipients), limit=limit)
            return subs, audit, [dict(r._mapping) for r in await conn.execute(query)]

    async def search_messages(
        self,
        *,
        recipients: Sequence[str] | None = None,
        obligation: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """Newest first by planned moment; ``recipients`` narrows to people (a unit's)."""
        query = self._messages_query(
            recipients=recipients,
            obligation=obligation,
            status=status,
            since=since,
            until=until,
            limit=limit,
        )
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]

    def _messages_query(
        self,
        *,
        recipients: Sequence[str] | None = None,
        obligation: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 200,
    ) -> sa.Select[Any]:
        m = messages.c
        query = sa.select(*_MESSAGE_COLS).where(m.campaign == self.campaign)
        if recipients is not None:
            query = query.where(m.recipient_id.in_(list(recipients)))
        if obligation:
            # a bundle over several obligations names them in its periods ("key@period")
            escaped = obligation.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(
                sa.or_(
                    m.obligation == obligation,
                    sa.cast(m.periods, sa.Text).like(f'%"{escaped}@%', escape="\\"),
                )
            )
        if status:
            query = query.where(m.status == status)
        if since is not None:
            query = query.where(m.due_at >= since)
        if until is not None:
            query = query.where(m.due_at < until)
        return query.order_by(m.due_at.desc(), m.id.desc()).limit(limit)

    async def message(self, message_id: int) -> dict[str, Any] | None:
        m = messages.c
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(messages).where(m.campaign == self.campaign, m.id == message_id)
                )
            ).first()
        return None if row is None else dict(row._mapping)

    async def messages_by_state_channel(self) -> dict[tuple[str, str], int]:
        m = messages.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(m.status, m.channel, sa.func.count())
                .where(m.campaign == self.campaign)
                .group_by(m.status, m.channel)
            )
            return {(r[0], r[1]): int(r[2]) for r in rows}

    async def attempts_by_outcome(self) -> dict[str, tuple[int, float]]:
        """Delivery attempts of the campaign per outcome: (count, total seconds)."""
        d, m = delivery_attempts.c, messages.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(
                    d.outcome, sa.func.count(), sa.func.coalesce(sa.func.sum(d.duration_ms), 0)
                )
                .select_from(delivery_attempts.join(messages, m.id == d.message_id))
                .where(m.campaign == self.campaign)
                .group_by(d.outcome)
            )
            return {r[0]: (int(r[1]), int(r[2]) / 1000) for r in rows}

    async def planned_through(self) -> datetime | None:
        p = planner_state.c
        async with self.engine.connect() as conn:
            moment: datetime | None = (
                await conn.execute(sa.select(p.planned_through).where(p.campaign == self.campaign))
            ).scalar_one_or_none()
        return moment

    async def last_cycle(self) -> datetime | None:
        """When a cycle last finished planning (planner_state is written at its end)."""
        p = planner_state.c
        async with self.engine.connect() as conn:
            moment: datetime | None = (
                await conn.execute(sa.select(p.updated_at).where(p.campaign == self.campaign))
            ).scalar_one_or_none()
        return moment

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
