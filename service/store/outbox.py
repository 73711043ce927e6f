"""The outbox: planned messages, atomic claiming, final states, delivery attempts.

Claiming is the only way a message leaves ``pending``. PostgreSQL claims with a
MATERIALIZED CTE of ``SELECT … FOR UPDATE SKIP LOCKED`` (never ``IN (subquery)``, which
was seen to over-claim); SQLite has one writer at a time under ``BEGIN IMMEDIATE`` and
claims with a conditional ``UPDATE … RETURNING``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..planner import PlannedMessage
from .tables import delivery_attempts, messages, planner_state

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
)


def _claimed(row: Sequence[Any]) -> Claimed:
    r = list(row)
    r[5], r[6] = tuple(r[5]), tuple(r[6])
    return Claimed(*r)


_Transition = tuple[int, str, dict[str, Any], dict[str, Any]]


def _split(values: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """(columns set from plain values, columns set by SQL expressions) of a transition."""
    plain = sorted(k for k, v in values.items() if not isinstance(v, sa.ColumnElement))
    sql = {k: v for k, v in values.items() if isinstance(v, sa.ColumnElement)}
    return plain, sql


def _shape(values: dict[str, Any]) -> tuple[Any, ...]:
    """Transitions of one shape share one UPDATE statement (executemany).

    SQL expressions are told apart by identity: the transitions below reuse the two
    module-level ones, anything else gets a statement of its own.
    """
    plain, sql = _split(values)
    return tuple(plain), tuple((k, id(v)) for k, v in sorted(sql.items()))


# Shared (immutable) SQL expressions, so that transitions have comparable shapes.
_ATTEMPTS_PLUS_ONE = messages.c.attempts + 1
_ATTEMPTS_SAME = messages.c.attempts


_RECONNECT_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0)


async def _with_reconnect(
    apply: Callable[[list[_Transition]], Awaitable[list[bool]]], items: list[_Transition]
) -> list[bool]:
    """Re-run a transition batch after a dropped connection or a busy database.

    The updates are conditional (``status = 'sending' AND claimed_by = me``), so running
    them again is harmless: if the first commit did land, they match nothing and report
    the lease as lost instead of recording twice. Losing the record of a sent message,
    by contrast, would mean sending it again once the lease expires.
    """
    for delay in (*_RECONNECT_DELAYS, None):
        try:
            return await apply(items)
        except (DBAPIError, OSError) as exc:
            retryable = (
                isinstance(exc, OSError)
                or exc.connection_invalidated
                or isinstance(exc, OperationalError | InterfaceError)
            )
            if delay is None or not retryable:
                raise
            log.warning("recording delivery results failed; retrying", error=str(exc)[:200])
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


class _GroupCommit:
    """Queue state transitions and write whatever has queued up in one transaction.

    A commit waits ``linger`` seconds for more transitions to share it (the dispatcher
    does not wait for its results before sending on, so this delays no send); those
    arriving while it runs share the next one. Each caller still learns whether *its*
    transition applied.
    """

    def __init__(
        self,
        apply: Callable[[list[_Transition]], Awaitable[list[bool]]],
        linger: float = 0.005,
    ) -> None:
        self._apply = apply
        self._linger = linger
        self._queue: list[tuple[_Transition, asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: _Transition) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            if len(self._queue) < _CHUNK and self._linger:
                # Measured: without it, commits at 1,000 messages/s held ~3 transitions each.
                await asyncio.sleep(self._linger)
            batch, self._queue = self._queue[:_CHUNK], self._queue[_CHUNK:]
            try:
                results = await _with_reconnect(self._apply, [item for item, _ in batch])
            except BaseException as exc:  # hand the failure to every waiting caller
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), ok in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(ok)


class Outbox:
    def __init__(self, engine: AsyncEngine, campaign: str) -> None:
        self.engine = engine
        self.campaign = campaign
        self._pg = engine.dialect.name == "postgresql"
        self._commits = _GroupCommit(self._apply)

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
            .returning(messages.c.id)
        )
        campaign = self.campaign
        new = 0
        async with self.engine.begin() as conn:
            for i in range(0, len(planned), _CHUNK):
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
                    }
                    for m in planned[i : i + _CHUNK]
                ]
                new += len((await conn.execute(stmt, rows)).all())
        return new

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
        """Atomically take up to ``limit`` due messages (pending, or sending with a dead lease)."""
        m = messages.c
        due = sa.or_(
            sa.and_(m.status == "pending", m.next_attempt_at <= now),
            sa.and_(m.status == "sending", m.lease_until < now),
        )
        values: dict[str, Any] = {
            "status": "sending",
            "claimed_by": worker,
            "lease_until": now + lease,
            "updated_at": now,
            # A dead lease means a worker died mid-send: that was an attempt whose outcome
            # is unknown. Counting it makes the dispatcher ask providers that can answer.
            "attempts": messages.c.attempts + sa.case((messages.c.status == "sending", 1), else_=0),
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

    async def finish(
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
    ) -> bool:
        """Record a final state; False if another worker took the message over meanwhile."""
        assert status in FINAL
        values: dict[str, Any] = {
            "status": status,
            "reason": reason,
            "updated_at": now,
            "lease_until": None,
            "attempts": _ATTEMPTS_PLUS_ONE
            if outcome in ("sent", "permanent", "transient")
            else _ATTEMPTS_SAME,
        }
        if status == "sent":
            values.update(sent_at=now, provider_id=provider_id, subject=subject, body=body)
        return await self._transition(
            msg, worker, now, values, outcome, error, provider_id, duration_ms
        )

    async def retry_later(
        self,
        msg: Claimed,
        worker: str,
        now: datetime,
        at: datetime,
        error: str,
        duration_ms: int = 0,
        count_attempt: bool = True,
        outcome: str = "transient",
    ) -> bool:
        values: dict[str, Any] = {
            "status": "pending",
            "next_attempt_at": at,
            "reason": error,
            "updated_at": now,
            "lease_until": None,
            "claimed_by": None,
        }
        if count_attempt:
            values["attempts"] = _ATTEMPTS_PLUS_ONE
        return await self._transition(msg, worker, now, values, outcome, error, None, duration_ms)

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

    async def _transition(
        self,
        msg: Claimed,
        worker: str,
        now: datetime,
        values: dict[str, Any],
        outcome: str,
        error: str,
        provider_id: str | None,
        duration_ms: int,
    ) -> bool:
        attempt = {
            "message_id": msg.id,
            "at": now,
            "worker": worker,
            "outcome": outcome,
            "error": error[:2000],
            "provider_id": provider_id,
            "duration_ms": duration_ms,
        }
        return await self._commits.submit((msg.id, worker, values, attempt))

    async def _apply(self, items: list[_Transition]) -> list[bool]:
        """Apply queued transitions in one transaction (group commit).

        A transition applies only while its worker still holds the claim (``sending``,
        ``claimed_by``). The rows still held are read and locked first (PostgreSQL: ``FOR
        UPDATE``; SQLite: the transaction's write lock), so the updates that follow apply
        exactly to them; the updates go out as one executemany per shape of values instead
        of one statement per message. A later transition of the same claim in one batch
        finds it no longer ``sending``, as it would have one statement at a time.
        """
        m = messages.c
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                sa.select(m.id, m.claimed_by)
                .where(m.id.in_(sorted({item[0] for item in items})), m.status == "sending")
                .with_for_update()
            )
            held = {(mid, worker) for mid, worker in rows}
            results = []
            groups: dict[tuple[Any, ...], list[_Transition]] = {}
            for item in items:
                mid, worker, values, _ = item
                ok = (mid, worker) in held
                results.append(ok)
                if ok:
                    held.discard((mid, worker))  # it leaves ``sending`` with this transition
                    groups.setdefault(_shape(values), []).append(item)
            for group in groups.values():
                plain, sql = _split(group[0][2])
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

    async def sms_sent_since(self, recipients: Sequence[str], since: datetime) -> dict[str, int]:
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

    async def requeue(self, keys: list[str]) -> int:
        """Put failed messages back to ``pending`` (an operator's retry); returns how many.

        Only ``failed`` ones: a sent, cancelled or stale message stays final. The next
        attempt time is left as it was (in the past), so the next cycle claims it; its
        expiry still holds, so a message whose reason passed meanwhile becomes stale.
        """
        if not keys:
            return 0
        m = messages.c
        async with self.engine.begin() as conn:
            result = await conn.execute(
                messages.update()
                .where(m.campaign == self.campaign, m.idem_key.in_(keys), m.status == "failed")
                .values(
                    status="pending",
                    reason="re-queued by the office",
                    attempts=0,
                    claimed_by=None,
                    lease_until=None,
                )
            )
            return int(result.rowcount)
