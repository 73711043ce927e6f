"""Batched writes of the outbox: SMS slot reservations and transitions that share one
transaction (on PostgreSQL one statement) decide exactly as one at a time would."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import service.store.outbox as outbox_module
from service.clock import VirtualClock
from service.runtime import Runtime
from service.store.outbox import Outbox
from service.store.tables import delivery_attempts, messages
from tests.conftest import local

CAMPAIGN = "jilin-2023"
DAY = "2023-06-29"
PHONE = "+8613800000001"


async def one_due_message(outbox: Outbox, runtime: Runtime, clock: VirtualClock) -> datetime:
    """Insert one planned message due at 2023-06-01 09:00 and move the clock there."""
    moment = local("2023-06-01T09:00")
    planned = runtime.planner.plan({}, moment - timedelta(minutes=1), moment).messages[:1]
    await outbox.insert(planned, moment)
    clock.set(moment)
    return moment


async def test_reservations_made_at_once_grant_a_number_exactly_its_limit(
    migrated_engine: AsyncEngine,
) -> None:
    """Five senders reserving one number at the same instant get two slots (limit 2), in order."""
    outbox = Outbox(migrated_engine, CAMPAIGN)
    others = [f"+86138000000{10 + i}" for i in range(3)]
    got = await asyncio.gather(
        *(outbox.reserve_sms(PHONE, DAY, 2) for _ in range(5)),
        *(outbox.reserve_sms(p, DAY, 2) for p in others),
    )
    assert got == [True, True, False, False, False, True, True, True]


async def test_a_reminder_and_an_urgent_sms_at_once_keep_their_own_limits(
    migrated_engine: AsyncEngine,
) -> None:
    """One slot used: a reminder (limit 1) is refused while an urgent SMS (limit 2) gets one."""
    outbox = Outbox(migrated_engine, CAMPAIGN)
    assert await outbox.reserve_sms(PHONE, DAY, 2)
    reminder, urgent = await asyncio.gather(
        outbox.reserve_sms(PHONE, DAY, 1), outbox.reserve_sms(PHONE, DAY, 2)
    )
    assert (reminder, urgent) == (False, True)
    assert not await outbox.reserve_sms(PHONE, DAY, 2)


async def test_a_second_transition_of_one_claim_in_the_same_commit_does_not_apply(
    migrated_engine: AsyncEngine, runtime: Runtime, clock: VirtualClock
) -> None:
    """Two results queued together for one claimed message: the first is recorded, once."""
    outbox = Outbox(migrated_engine, CAMPAIGN, lease_clock=clock)
    moment = await one_due_message(outbox, runtime, clock)
    [msg] = await outbox.claim("w1", moment, 10, timedelta(minutes=5))
    first = outbox.finish(msg, "w1", moment, "sent", "", "sent", subject="s", body="b")
    second = outbox.retry_later(msg, "w1", moment, moment + timedelta(hours=1), "later")
    assert await asyncio.gather(first, second) == [True, False]
    [row] = await outbox.rows()
    assert (row["status"], row["attempts"], row["body"]) == ("sent", 1, "b")
    async with migrated_engine.connect() as conn:
        outcomes = (await conn.execute(sa.select(delivery_attempts.c.outcome))).scalars().all()
    assert outcomes == ["sent"]


async def test_a_transition_of_a_claim_another_worker_took_does_not_apply(
    migrated_engine: AsyncEngine, runtime: Runtime, clock: VirtualClock
) -> None:
    """A result from a worker whose lease was taken over is refused; the new holder's applies."""
    outbox = Outbox(migrated_engine, CAMPAIGN, lease_clock=clock)
    moment = await one_due_message(outbox, runtime, clock)
    [old] = await outbox.claim("w-old", moment, 10, timedelta(seconds=-1))
    [new] = await outbox.claim("w-new", moment, 10, timedelta(minutes=5))
    stale = outbox.finish(old, "w-old", moment, "sent", "", "sent", subject="s", body="old")
    fresh = outbox.retry_later(new, "w-new", moment, moment + timedelta(hours=1), "busy")
    assert await asyncio.gather(stale, fresh) == [False, True]
    [row] = await outbox.rows()
    assert (row["status"], row["claimed_by"], row["reason"]) == ("pending", None, "busy")


async def test_planned_rows_are_stored_alike_by_the_fast_and_the_portable_insert(
    migrated_engine: AsyncEngine, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL's one-statement insert stores what the portable insert stores, in order."""
    if migrated_engine.dialect.name != "postgresql":
        pytest.skip("the one-statement insert is PostgreSQL's; SQLite has only the portable one")
    moment = local("2023-06-29T09:00")
    planned = runtime.planner.plan({}, moment - timedelta(days=40), moment).messages
    # A message without items (none planned today) is stored as JSON null by both.
    planned.append(dataclasses.replace(planned[0], key=planned[0].key + "/bare", items=[]))
    outbox = Outbox(migrated_engine, CAMPAIGN)
    stored = []
    for fast in (True, False):
        if not fast:  # the fast path declining (as for a naive moment): portable statement

            async def declined(*args: object) -> None:
                return None

            monkeypatch.setattr(outbox_module, "pg_insert_planned", declined)
        assert await outbox.insert(planned, moment) == len(planned)
        async with migrated_engine.begin() as conn:
            sql_null = messages.c["items"].is_(None).label("sql_null")  # JSON null is not NULL
            query = sa.select(messages, sql_null).order_by(messages.c.id)
            rows = (await conn.execute(query)).all()
            await conn.execute(sa.delete(messages))
        stored.append([row._asdict() | {"id": None} for row in rows])
    assert stored[0] == stored[1]
    assert [row["idem_key"] for row in stored[0]] == [m.key for m in planned]
