"""The outbox: planned messages, atomic claiming, final states, delivery attempts.

Claiming is the only way a message leaves ``pending``. PostgreSQL claims with a
MATERIALIZED CTE of ``SELECT … FOR UPDATE SKIP LOCKED`` (never ``IN (subquery)``, which
was seen to over-claim); SQLite has one writer at a time under ``BEGIN IMMEDIATE`` and
claims with a conditional ``UPDATE … RETURNING``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ..clock import Clock, RealClock
from ..planner import PlannedMessage
from .group_commit import GroupCommit
from .limits import check_row, fit_column
from .merge import merge_items
from .outbox_reads import OutboxReads
from .pg_fast import insert_planned as pg_insert_planned
from .recording import (
    INT32_MAX,
    WORKER_CHARS,
    Transition,
    bound_provider_id,
    bounded,
    reason_text,
    salvage,
)
from .sms_cap import SmsCap
from .tables import messages, planner_state
from .transitions import ATTEMPTS_PLUS_ONE, ATTEMPTS_SAME, apply_transitions

log = structlog.get_logger("service.outbox")
FINAL = ("sent", "cancelled", "stale", "failed")
_CHUNK = 500


@dataclass(frozen=True)
class Claimed:
    id: int
    key: str
    kind: str
    step: str
    obligation: str | None
    periods: tuple[str, ...]
    units: tuple[str, ...]
    recipient_id: str
    channel: str
    address: str
    due_at: datetime
    expires_at: datetime | None
    attempts: int
    # The bundle's items ({obligation, period, unit, step, kind, expires}); empty for
    # messages planned before bundles existed.
    items: tuple[dict[str, Any], ...] = ()
    # Re-claimed from a worker that stopped mid-send (its lease died): outcome unknown.
    in_doubt: bool = False


_CLAIM_COLS = (
    messages.c.id,
    messages.c.idem_key,
    messages.c.kind,
    messages.c.step,
    messages.c.obligation,
    messages.c.periods,
    messages.c.units,
    messages.c.recipient_id,
    messages.c.channel,
    messages.c.address,
    messages.c.due_at,
    messages.c.expires_at,
    messages.c.attempts,
    messages.c["items"],  # not ``.items``: that is the collection's own method
    messages.c.reason,
)

# The reason a message re-claimed from a dead lease carries while it is being sent again:
# its worker stopped mid-send, so whether it went out is unknown (and any SMS slot it had
# taken for the day is still taken: see Dispatcher._send_capped).
IN_DOUBT = "in doubt: the worker sending it stopped; sending again with the same id"


def _claimed(row: Sequence[Any]) -> Claimed:
    r = list(row)
    r[5], r[6], r[13] = tuple(r[5]), tuple(r[6]), tuple(r[13] or ())
    r[14] = r[14] == IN_DOUBT
    return Claimed(*r)


_PG_PLANNING_LOCK = 0x5EC0_0002  # advisory lock class (db.py's migration lock is 0x5EC0_0001)


_Transition = Transition


class Outbox(OutboxReads):
    """The messages of one campaign.

    Leases are judged by ``lease_clock``, the real wall clock unless a test injects one,
    never by the campaign clock: two processes replaying on virtual clocks that disagree
    by days would otherwise each see the other's live claims as long expired.
    """

    def __init__(
        self, engine: AsyncEngine, campaign: str, lease_clock: Clock | None = None
    ) -> None:
        check_row(messages, {"campaign": campaign}, {"campaign": "campaign.key（活动标识）"})
        self.engine = engine
        self.campaign = campaign
        self.lease_clock = lease_clock or RealClock()
        self._pg = engine.dialect.name == "postgresql"
        # PostgreSQL's one-statement group commits need no BEGIN/COMMIT (transitions.py).
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._commits: GroupCommit[_Transition] = GroupCommit(self._apply, salvage=salvage)
        self.sms_cap = SmsCap(engine, campaign)

    async def insert(self, planned: Sequence[PlannedMessage], now: datetime) -> int:
        """Insert planned messages; existing keys are left alone. Returns how many were new.

        One executemany of a single cached statement: SQLAlchemy's "insertmanyvalues"
        turns it into multi-row INSERTs itself, instead of compiling a new multi-row
        statement (17 columns × N rows of bind parameters) for every chunk.
        """
        if not planned:
            return 0
        insert = pg_insert if self._pg else sqlite_insert
        stmt = (
            insert(messages)
            .on_conflict_do_nothing(index_elements=[messages.c.idem_key])
            .returning(messages.c.idem_key)
        )
        campaign = self.campaign
        new = 0
        async with self.engine.begin() as conn:
            for i in range(0, len(planned), _CHUNK):
                chunk = planned[i : i + _CHUNK]
                rows = [
                    {
                        "idem_key": m.key,
                        "campaign": campaign,
                        "kind": m.kind,
                        "step": m.step,
                        "obligation": m.obligation,
                        "periods": list(m.periods),
                        "units": list(m.units),
                        "recipient_id": m.recipient_id,
                        "channel": m.channel,
                        "address": m.address,
                        "due_at": m.due_at,
                        "next_attempt_at": m.next_attempt_at,
                        "expires_at": m.expires_at,
                        "status": m.status,
                        "reason": m.reason,
                        "created_at": now,
                        "updated_at": now,
                        "items": m.items or None,
                    }
                    for m in chunk
                ]
                fitted = bounded(rows)
                fast = await pg_insert_planned(conn, campaign, now, fitted) if self._pg else None
                if fast is not None:
                    inserted = fast
                else:
                    inserted = {r[0] for r in (await conn.execute(stmt, fitted)).all()}
                new += len(inserted)
                if len(inserted) < len(chunk):
                    clashes = [
                        m for m in chunk if m.key not in inserted and m.items and m.kind != "digest"
                    ]
                    new += await merge_items(conn, self.campaign, self._pg, clashes, now)
        return new

    @asynccontextmanager
    async def planning_lock(self) -> AsyncIterator[None]:
        """One planner of this campaign at a time across replicas (PostgreSQL).

        Two replicas that read the same ``planned_through`` on either side of a window
        opening would name the catch-up bundle differently (its moment is the opening of the
        planner's window period) and send the backlog twice. Serialised, the second one
        reads the first one's end and plans only what is left. A session lock on a
        connection of its own: a crash ends the session and frees it. SQLite has a single
        writer and no replicas: nothing to do.
        """
        if not self._pg:
            yield
            return
        args = {"k": _PG_PLANNING_LOCK, "c": self.campaign}
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_advisory_lock(:k, hashtext(:c))"), args)
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(sa.text("SELECT pg_advisory_unlock(:k, hashtext(:c))"), args)
                await conn.commit()

    async def planned_through(self) -> datetime | None:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(
                    sa.select(planner_state.c.planned_through).where(
                        planner_state.c.campaign == self.campaign
                    )
                )
            ).scalar_one_or_none()

    async def set_planned_through(self, moment: datetime, now: datetime) -> None:
        """Advance (never move back) the end of the planned window."""
        insert = pg_insert if self._pg else sqlite_insert
        stmt = insert(planner_state).values(
            campaign=self.campaign, planned_through=moment, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[planner_state.c.campaign],
            set_={"planned_through": moment, "updated_at": now},
            where=planner_state.c.planned_through < moment,
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt)

    async def claim(
        self, worker: str, now: datetime, limit: int, lease: timedelta
    ) -> list[Claimed]:
        """Atomically take up to ``limit`` due messages (pending, or sending with a dead lease).

        ``now`` (the campaign clock) says what is due; the lease clock says which leases
        are dead.
        """
        if len(worker) > WORKER_CHARS:
            raise ValueError(f"worker id longer than {WORKER_CHARS} characters: {worker!r}")
        m = messages.c
        wall = self.lease_clock.now()
        due = sa.or_(
            sa.and_(m.status == "pending", m.next_attempt_at <= now),
            sa.and_(m.status == "sending", m.lease_until < wall),
        )
        values: dict[str, Any] = {
            "status": "sending",
            "claimed_by": worker,
            "lease_until": wall + lease,
            "updated_at": now,
            # A dead lease means a worker died mid-send: that was an attempt whose outcome
            # is unknown. Counting it makes the dispatcher ask providers that can answer.
            "attempts": messages.c.attempts + sa.case((messages.c.status == "sending", 1), else_=0),
            "reason": sa.case((messages.c.status == "sending", IN_DOUBT), else_=messages.c.reason),
        }
        async with self.engine.begin() as conn:
            if self._pg:
                picked = (
                    sa.select(m.id)
                    .where(m.campaign == self.campaign, due)
                    .order_by(m.next_attempt_at, m.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                    .cte("picked")
                    .prefix_with("MATERIALIZED")
                )
                stmt = sa.update(messages).where(m.id == picked.c.id).values(**values)
            else:
                ids = (
                    sa.select(m.id)
                    .where(m.campaign == self.campaign, due)
                    .order_by(m.next_attempt_at, m.id)
                    .limit(limit)
                    .scalar_subquery()
                )
                stmt = sa.update(messages).where(m.id.in_(ids), due).values(**values)
            rows = (await conn.execute(stmt.returning(*_CLAIM_COLS))).all()
        return sorted((_claimed(r) for r in rows), key=lambda c: c.id)

    def finish(
        self,
        msg: Claimed,
        worker: str,
        now: datetime,
        status: str,
        reason: str,
        outcome: str,
        error: str = "",
        provider_id: str | None = None,
        subject: str | None = None,
        body: str | None = None,
        duration_ms: int = 0,
    ) -> asyncio.Future[bool]:
        """Record a final state; False if another worker took the message over meanwhile.

        Queued for the group commit at once: the returned future is awaited (or handed
        on) by the caller, without a task of its own per message."""
        assert status in FINAL
        values: dict[str, Any] = {
            "status": status,
            "reason": reason,
            "updated_at": now,
            "lease_until": None,
            "attempts": ATTEMPTS_PLUS_ONE
            if outcome in ("sent", "permanent", "transient")
            else ATTEMPTS_SAME,
        }
        if status == "sent":
            values.update(
                sent_at=now,
                provider_id=bound_provider_id(provider_id),
                subject=fit_column(messages, "subject", subject),
                body=fit_column(messages, "body", body),
            )
        return self._transition(msg, worker, now, values, outcome, error, provider_id, duration_ms)

    def retry_later(
        self,
        msg: Claimed,
        worker: str,
        now: datetime,
        at: datetime,
        error: str,
        duration_ms: int = 0,
        count_attempt: bool = True,
        outcome: str = "transient",
    ) -> asyncio.Future[bool]:
        values: dict[str, Any] = {
            "status": "pending",
            "next_attempt_at": at,
            "reason": error,
            "updated_at": now,
            "lease_until": None,
            "claimed_by": None,
        }
        if count_attempt:
            values["attempts"] = ATTEMPTS_PLUS_ONE
        return self._transition(msg, worker, now, values, outcome, error, None, duration_ms)

    async def release(self, claimed: Sequence[Claimed], worker: str, now: datetime) -> None:
        """Give back claims that were never started (graceful stop)."""
        if not claimed:
            return
        m = messages.c
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(messages)
                .where(
                    m.id.in_([c.id for c in claimed]), m.claimed_by == worker, m.status == "sending"
                )
                .values(status="pending", claimed_by=None, lease_until=None, updated_at=now)
            )

    def _transition(
        self,
        msg: Claimed,
        worker: str,
        now: datetime,
        values: dict[str, Any],
        outcome: str,
        error: str,
        provider_id: str | None,
        duration_ms: int,
    ) -> asyncio.Future[bool]:
        # Recorded text is made storable and masked here, once for every caller: a peer's
        # error may quote an address or a number, or carry characters no column can hold.
        if "reason" in values:
            values["reason"] = reason_text(values["reason"])
        attempt = {
            "message_id": msg.id,
            "at": now,
            "worker": worker,
            "outcome": outcome,
            "error": reason_text(error),
            "provider_id": bound_provider_id(provider_id),
            "duration_ms": max(0, min(duration_ms, INT32_MAX)),
        }
        return self._commits.enqueue((msg.id, worker, values, attempt))

    async def _apply(self, items: list[_Transition]) -> list[bool]:
        return await apply_transitions(self.engine, self._pg, items, self._autocommit)

    async def requeue(self, keys: list[str]) -> int:
        """Put failed messages back to pending (the operator fixed the cause); returns how
        many. They are due at once and still expire as planned: one that stopped making
        sense meanwhile ends ``stale`` instead of being sent."""
        if not keys:
            return 0
        m = messages.c
        done = 0
        async with self.engine.begin() as conn:
            for i in range(0, len(keys), _CHUNK):
                result = await conn.execute(
                    sa.update(messages)
                    .where(
                        m.campaign == self.campaign,
                        m.idem_key.in_(keys[i : i + _CHUNK]),
                        m.status == "failed",
                    )
                    .values(
                        status="pending",
                        next_attempt_at=m.due_at,
                        attempts=0,
                        claimed_by=None,
                        lease_until=None,
                        reason=sa.literal("requeued by the operator; before: ") + m.reason,
                        updated_at=sa.func.now(),
                    )
                )
                done += result.rowcount
        return done

    # The SMS cap's own module; these names are what the dispatcher and tests call.
    async def reserve_sms(self, phone: str, day: str, limit: int) -> bool:
        return await self.sms_cap.reserve(phone, day, limit)

    async def release_sms(self, phone: str, day: str) -> None:
        await self.sms_cap.release(phone, day)

    async def sms_sent_since(self, recipients: Sequence[str], since: datetime) -> dict[str, int]:
        return await self.sms_cap.sent_since(recipients, since)
