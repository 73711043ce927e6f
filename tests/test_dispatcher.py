"""The dispatcher and the outbox on SQLite and PostgreSQL (DESIGN §4, invariants 2, 3, 4, 7, 9).

Each test builds the real pipeline — Runtime, Outbox, Ledger, Dispatcher, Reconciler on a
VirtualClock — around an in-memory recording channel that can be told to fail.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.channels.base import (
    Channel,
    ChannelName,
    DeliveryError,
    Envelope,
    PermanentDeliveryError,
    SendResult,
    TransientDeliveryError,
)
from service.clock import VirtualClock
from service.cycle import Reconciler
from service.dispatcher import Dispatcher, RetryPolicy
from service.planner import PlannedMessage
from service.runtime import Runtime
from service.store.db import create_engine
from service.store.ledger import Ledger
from service.store.outbox import FINAL, Outbox
from service.store.tables import delivery_attempts
from service.submissions import NewSubmission

SHANGHAI = ZoneInfo("Asia/Shanghai")
CAMPAIGN = "jilin-2023"
COUNTED = ("sent", "transient", "permanent")  # outcomes that count as a delivery attempt
LAST_OUTCOME = {
    "sent": {"sent"},
    "failed": {"permanent", "transient"},
    "cancelled": {"cancelled"},
    "stale": {"stale"},
}


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


class RecordingChannel:
    """An in-memory Channel: records every call; fails on demand per address."""

    def __init__(self, name: ChannelName) -> None:
        self.name: ChannelName = name
        self.calls: list[Envelope] = []
        self.sent: list[Envelope] = []
        self._queued: dict[str, list[Callable[[], DeliveryError]]] = {}
        self._always: dict[str, Callable[[], DeliveryError]] = {}

    def fail(self, address: str, *errors: Callable[[], DeliveryError]) -> None:
        """The next sends to ``address`` raise these errors, in order."""
        self._queued.setdefault(address, []).extend(errors)

    def fail_always(self, address: str, error: Callable[[], DeliveryError]) -> None:
        self._always[address] = error

    async def send(self, envelope: Envelope) -> SendResult:
        self.calls.append(envelope)
        await asyncio.sleep(0)
        if envelope.address in self._always:
            raise self._always[envelope.address]()
        if queue := self._queued.get(envelope.address):
            raise queue.pop(0)()
        self.sent.append(envelope)
        return SendResult(provider_id=f"{self.name}-{len(self.sent)}")

    async def aclose(self) -> None:
        return None

    def to(self, address: str) -> list[Envelope]:
        return [e for e in self.sent if e.address == address]


def transient(text: str = "451 try again later") -> Callable[[], DeliveryError]:
    return lambda: TransientDeliveryError(text, code="451")


def permanent(text: str = "550 no such mailbox") -> Callable[[], DeliveryError]:
    return lambda: PermanentDeliveryError(text, code="550")


@dataclass
class World:
    runtime: Runtime
    engine: AsyncEngine
    clock: VirtualClock
    outbox: Outbox
    ledger: Ledger
    email: RecordingChannel
    sms: RecordingChannel
    policy: RetryPolicy
    dispatcher: Dispatcher = field(init=False)
    reconciler: Reconciler = field(init=False)

    def __post_init__(self) -> None:
        self.dispatcher = self.new_dispatcher()
        self.reconciler = Reconciler(
            self.runtime, self.outbox, self.ledger, self.dispatcher, self.clock
        )

    def new_dispatcher(self, worker: str = "w1") -> Dispatcher:
        channels: dict[str, Channel] = {"email": self.email, "sms": self.sms}
        return Dispatcher(
            self.runtime,
            self.outbox,
            self.ledger,
            channels,
            self.clock,
            worker,
            self.policy,
            rng=random.Random(7),
        )

    def plan(
        self, since: str | None, now: str, pick: Callable[[PlannedMessage], bool] = lambda m: True
    ) -> list[PlannedMessage]:
        """What the planner (no submissions) makes due in (since, now], filtered."""
        planned = self.runtime.planner.plan(
            {}, local(since) if since else None, local(now)
        ).messages
        return [m for m in planned if pick(m)]

    async def insert(self, planned: list[PlannedMessage]) -> int:
        assert planned, "nothing to insert"
        return await self.outbox.insert(planned, self.clock.now())

    async def at(self, moment: str | datetime) -> None:
        self.clock.set(local(moment) if isinstance(moment, str) else moment)

    async def rows(self) -> dict[str, dict[str, Any]]:
        return {r["idem_key"]: r for r in await self.outbox.rows()}

    async def attempts(self) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        async with self.engine.connect() as conn:
            result = await conn.execute(
                sa.select(delivery_attempts).order_by(delivery_attempts.c.id)
            )
            for r in result:
                out.setdefault(r.message_id, []).append(dict(r._mapping))
        return out

    async def submit(self, unit: str, obligation: str, period: str, at: str) -> None:
        await self.ledger.record([NewSubmission(unit, obligation, period, 1, local(at))], "test")

    async def replay(self, until: str) -> None:
        """Step the reconciler from due moment to due moment, like ``run_virtual``."""
        end = local(until)
        while True:
            await self.reconciler.run_cycle("test")
            wake = await self.reconciler.next_wake()
            if wake is None or wake > end or wake <= self.clock.now():
                break
            self.clock.set(wake)


@pytest.fixture
async def world(
    migrated_engine: AsyncEngine, runtime: Runtime, clock: VirtualClock
) -> AsyncIterator[World]:
    """The shipped campaign on a fresh database, clock at 2023-05-18 09:00, recording channels."""
    yield World(
        runtime=runtime,
        engine=migrated_engine,
        clock=clock,
        outbox=Outbox(migrated_engine, CAMPAIGN),
        ledger=Ledger(migrated_engine, CAMPAIGN, clock),
        email=RecordingChannel("email"),
        sms=RecordingChannel("sms"),
        policy=RetryPolicy(max_attempts=3, base_delay=60.0, max_delay=600.0),
    )


def one(
    world: World, person: str, channel: str, since: str | None, now: str, step: str
) -> list[PlannedMessage]:
    planned = world.plan(
        since, now, lambda m: (m.recipient_id, m.channel, m.step) == (person, channel, step)
    )
    assert len(planned) == 1
    return planned


async def test_inserting_the_same_plan_twice_adds_nothing(world: World) -> None:
    """Re-planning inserts nothing new: the idempotency key is unique in the outbox."""
    planned = world.plan(None, "2023-05-23T10:00")
    assert await world.insert(planned) == len(planned)
    assert await world.insert(world.plan(None, "2023-05-23T10:00")) == 0
    assert len(await world.rows()) == len(planned)


async def test_a_submission_between_planning_and_dispatch_cancels_the_reminder(
    world: World,
) -> None:
    """A unit that submitted after planning gets nothing: cancelled "submitted meanwhile"."""
    await world.reconciler.plan()
    await world.submit("changchun", "liaison-registration", "2023-05-22", "2023-05-18T09:00")
    stats = await world.dispatcher.run()
    rows = await world.rows()
    mine = [r for r in rows.values() if r["units"] == ["changchun"]]
    assert {r["channel"] for r in mine} == {"email", "sms"}
    assert {(r["status"], r["reason"]) for r in mine} == {
        ("cancelled", "reason disappeared: submitted meanwhile")
    }
    assert not [e for e in world.email.calls + world.sms.calls if "/changchun/" in e.key]
    others = [r for r in rows.values() if r["units"] != ["changchun"]]
    assert others and {r["status"] for r in others} == {"sent"}
    assert (stats.cancelled, stats.sent) == (len(mine), len(others))


async def test_transient_errors_are_retried_with_backoff_then_sent(world: World) -> None:
    """Two transient failures: pending with a future next_attempt_at each time, then sent."""
    world.email.fail("changchun-liaison@example.org", transient(), transient())
    await world.insert(
        one(world, "changchun-liaison", "email", None, "2023-05-18T09:00", "reminder1-2wd")
    )
    (key,) = (await world.rows()).keys()
    start = world.clock.now()
    windows = [(30, 60), (60, 120)]  # full jitter in [cap/2, cap], cap doubling from 60 s
    for attempt, (lo, hi) in enumerate(windows, start=1):
        await world.dispatcher.run()
        row = (await world.rows())[key]
        assert (row["status"], row["attempts"]) == ("pending", attempt)
        assert "TransientDeliveryError: 451 try again later" in row["reason"]
        delay = (row["next_attempt_at"] - world.clock.now()).total_seconds()
        assert lo <= delay <= hi
        assert (await world.dispatcher.run()).claimed == 0  # not before its time
        await world.at(row["next_attempt_at"])
    await world.dispatcher.run()
    row = (await world.rows())[key]
    assert (row["status"], row["reason"], row["attempts"]) == ("sent", "", 3)
    assert world.clock.now() > start
    assert [e.key for e in world.email.calls] == [key] * 3
    assert len(world.email.sent) == 1


async def test_exhausting_max_attempts_fails_with_the_last_error(world: World) -> None:
    """A message that keeps failing transiently ends failed after max_attempts, naming the error."""
    world.email.fail_always("changchun-liaison@example.org", transient("421 service not available"))
    await world.insert(
        one(world, "changchun-liaison", "email", None, "2023-05-18T09:00", "reminder1-2wd")
    )
    (key,) = (await world.rows()).keys()
    for _ in range(world.policy.max_attempts):
        await world.dispatcher.run()
        row = (await world.rows())[key]
        if row["status"] == "pending":
            await world.at(row["next_attempt_at"])
    row = (await world.rows())[key]
    assert row["status"] == "failed"
    assert row["attempts"] == world.policy.max_attempts == 3
    assert row["reason"].startswith("gave up after 3 attempts; last error: TransientDeliveryError")
    assert "421 service not available" in row["reason"]
    assert len(world.email.calls) == 3 and world.email.sent == []


async def test_a_permanent_error_fails_at_once(world: World) -> None:
    """A permanent error ends the message failed on the first attempt, never retried."""
    world.email.fail("changchun-liaison@example.org", permanent())
    await world.insert(
        one(world, "changchun-liaison", "email", None, "2023-05-18T09:00", "reminder1-2wd")
    )
    (key,) = (await world.rows()).keys()
    await world.dispatcher.run()
    row = (await world.rows())[key]
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "PermanentDeliveryError: 550 no such mailbox" in row["reason"]
    await world.at("2023-05-19T09:00")
    assert (await world.dispatcher.run()).claimed == 0
    assert len(world.email.calls) == 1


async def test_an_expired_message_is_stale_and_not_sent(world: World) -> None:
    """A reminder claimed after its deadline ends stale with a reason; nothing is sent."""
    await world.insert(
        one(world, "changchun-liaison", "email", None, "2023-05-18T09:00", "reminder1-2wd")
    )
    (key,) = (await world.rows()).keys()
    await world.at("2023-05-22T17:01")
    stats = await world.dispatcher.run()
    row = (await world.rows())[key]
    assert row["status"] == "stale"
    deadline = local("2023-05-22T17:00")
    assert row["expires_at"] == deadline
    assert row["reason"] == f"expired at {row['expires_at'].isoformat()}"
    assert stats.stale == 1 and world.email.calls == []


async def test_the_daily_sms_cap_cancels_the_third_sms(world: World) -> None:
    """With a cap of 2, the third SMS to one person on one day is cancelled with a reason."""
    assert world.runtime.model.schedule.campaign.sms_daily_cap == 2
    planned = world.plan(
        "2023-06-29T08:00",
        "2023-06-29T09:00",
        lambda m: (m.recipient_id, m.channel) == ("changchun-liaison", "sms"),
    )
    assert len(planned) >= 3  # weekly, summary, leads, exposure are all reminded that morning
    await world.at("2023-06-29T09:00")
    await world.insert(planned[:3])
    await world.dispatcher.run()
    rows = list((await world.rows()).values())
    assert Counter(r["status"] for r in rows) == {"sent": 2, "cancelled": 1}
    (cancelled,) = [r for r in rows if r["status"] == "cancelled"]
    assert cancelled["reason"].startswith("daily SMS cap reached (2 per recipient)")
    assert len(world.sms.to("+8613800000001")) == 2


async def test_the_daily_sms_cap_holds_across_dispatcher_restarts(world: World) -> None:
    """SMS sent earlier the same day by another dispatcher count towards the cap."""
    planned = world.plan(
        "2023-06-29T08:00",
        "2023-06-29T09:00",
        lambda m: (m.recipient_id, m.channel) == ("changchun-liaison", "sms"),
    )
    await world.at("2023-06-29T09:00")
    await world.insert(planned[:2])
    await world.dispatcher.run()
    await world.at("2023-06-29T15:00")
    await world.insert(planned[2:3])
    await world.new_dispatcher("w2").run()
    rows = list((await world.rows()).values())
    assert Counter(r["status"] for r in rows) == {"sent": 2, "cancelled": 1}
    assert len(world.sms.sent) == 2


async def test_an_sms_due_outside_the_window_waits_for_the_next_working_morning(
    world: World,
) -> None:
    """First run Friday 21:00: emails go out, SMS wait (no attempt counted) until Monday 08:00."""
    await world.at("2023-05-19T21:00")
    await world.reconciler.run_cycle()
    rows = list((await world.rows()).values())
    sms = [r for r in rows if r["channel"] == "sms"]
    assert sms and world.sms.calls == []
    assert {(r["status"], r["attempts"]) for r in sms} == {("pending", 0)}
    assert {r["next_attempt_at"] for r in sms} == {local("2023-05-22T08:00")}
    assert {r["reason"] for r in sms} == {"waiting for the SMS sending window"}
    assert {r["status"] for r in rows if r["channel"] == "email"} == {"sent"}
    await world.at("2023-05-22T08:00")
    await world.dispatcher.run()
    assert {r["status"] for r in (await world.rows()).values()} == {"sent"}
    assert len(world.sms.sent) == len(sms)


async def test_after_downtime_stale_reminders_skip_while_overdue_and_digests_go_out(
    world: World,
) -> None:
    """Down from 05-18 to 05-23 10:00: the day-of reminder is stale; overdue and digest are sent."""
    await world.reconciler.run_cycle()
    first = len(world.email.sent) + len(world.sms.sent)
    await world.at("2023-05-23T10:00")
    await world.reconciler.run_cycle()
    rows = list((await world.rows()).values())
    day_of = [r for r in rows if r["step"] == "reminder2-0wd"]
    assert day_of and {r["status"] for r in day_of} == {"stale"}
    assert all("after it stopped making sense" in r["reason"] for r in day_of)
    overdue = [r for r in rows if r["kind"] == "overdue"]
    digests = [r for r in rows if r["kind"] == "digest"]
    assert overdue and {r["status"] for r in overdue} == {"sent"}
    assert digests and {r["status"] for r in digests} == {"sent"}
    assert {r["due_at"] for r in digests} == {local("2023-05-23T09:30")}
    early = [r for r in rows if r["step"] == "reminder1-2wd"]
    assert len(early) == first and {r["status"] for r in early} == {"sent"}
    assert len(world.email.sent) + len(world.sms.sent) == first + len(overdue) + len(digests)


async def _mixed_week(world: World) -> dict[str, dict[str, Any]]:
    """Replay 05-18..05-27 with submissions, a dead mailbox, a flaky mailbox and a bad number."""
    world.email.fail_always("siping-liaison@example.org", permanent())
    world.email.fail("liaoyuan-liaison@example.org", transient(), transient())
    world.sms.fail_always("+8613800000003", permanent("isv.MOBILE_NUMBER_ILLEGAL"))
    await world.submit("changchun", "liaison-registration", "2023-05-22", "2023-05-18T10:00")
    await world.submit("yanbian", "liaison-registration", "2023-05-22", "2023-05-22T08:00")
    await world.submit("siping", "weekly-progress", "2023-W21", "2023-05-26T08:00")
    await world.replay("2023-05-27T00:00")
    rows = await world.rows()
    assert {r["status"] for r in rows.values()} == {"sent", "failed"}  # the scenario did fail
    return rows


async def test_every_message_ends_in_a_final_state_with_a_reason_unless_sent(world: World) -> None:
    """After a mixed week every row is final; only sent rows lack a reason."""
    rows = await _mixed_week(world)
    for key, r in rows.items():
        assert r["status"] in FINAL, key
        if r["status"] == "sent":
            assert r["reason"] == "" and r["sent_at"] is not None, key
        else:
            assert r["reason"].strip(), key
    failed = {k for k, r in rows.items() if r["status"] == "failed"}
    assert any("/siping-liaison/email" in k for k in failed)
    assert any("/jilin-city-liaison/sms" in k for k in failed)
    assert not any("/liaoyuan-liaison/" in k for k in failed)


async def test_every_attempt_is_recorded(world: World) -> None:
    """One delivery_attempts row per counted attempt; the last row matches the final state."""
    rows = await _mixed_week(world)
    attempts = await world.attempts()
    for key, r in rows.items():
        mine = attempts.get(r["id"], [])
        assert mine, key
        assert sum(a["outcome"] in COUNTED for a in mine) == r["attempts"], key
        assert mine[-1]["outcome"] in LAST_OUTCOME[r["status"]], key
        assert all(a["worker"] == "w1" for a in mine)
    liaoyuan = [r for k, r in rows.items() if k.endswith("/reminder1-2wd/liaoyuan-liaison/email")]
    assert [a["outcome"] for a in attempts[liaoyuan[0]["id"]]] == ["transient", "transient", "sent"]
    assert all(a["error"] for a in attempts[liaoyuan[0]["id"]][:2])


async def _second_engine(engine: AsyncEngine) -> AsyncEngine:
    """Another engine (another "replica") on the same database and schema."""
    if engine.dialect.name == "sqlite":
        return create_engine(engine.url.render_as_string(hide_password=False))
    async with engine.connect() as conn:
        search_path = (await conn.execute(sa.text("SHOW search_path"))).scalar_one()
    return create_engine(
        engine.url.render_as_string(hide_password=False),
        connect_args={"server_settings": {"search_path": search_path}},
    )


async def test_concurrent_claims_never_return_the_same_message_twice(world: World) -> None:
    """Two workers on two engines claiming 600 due messages at once never share an id."""
    now = world.clock.now()
    base = world.plan(None, "2023-05-18T09:00", lambda m: m.channel == "email")[0]
    planned = [
        PlannedMessage(
            key=f"{base.key}#{i}",
            kind=base.kind,
            step=base.step,
            obligation=base.obligation,
            periods=base.periods,
            units=base.units,
            recipient_id=base.recipient_id,
            channel=base.channel,
            address=base.address,
            due_at=now,
            next_attempt_at=now,
            expires_at=now + timedelta(days=1),
        )
        for i in range(600)
    ]
    await world.insert(planned)
    other = await _second_engine(world.engine)
    try:
        outboxes = [world.outbox, Outbox(other, CAMPAIGN)]

        async def drain(outbox: Outbox, worker: str) -> list[int]:
            got: list[int] = []
            while batch := await outbox.claim(worker, now, 25, timedelta(minutes=5)):
                got += [c.id for c in batch]
            return got

        claims = await asyncio.gather(*(drain(o, f"w{i}") for i, o in enumerate(outboxes)))
    finally:
        await other.dispose()
    everything = claims[0] + claims[1]
    assert len(everything) == len(set(everything)) == 600
    owner = {mid: f"w{i}" for i, ids in enumerate(claims) for mid in ids}
    rows = (await world.rows()).values()
    assert {(r["status"], r["claimed_by"]) for r in rows} == {
        ("sending", owner[r["id"]]) for r in rows
    }


async def test_failed_sms_attempts_do_not_use_up_the_daily_cap(world: World) -> None:
    """An SMS that fails transiently twice is sent on its third attempt the same day."""
    world.sms.fail("+8613800000001", transient("throttled"), transient("throttled"))
    await world.insert(
        one(world, "changchun-liaison", "sms", None, "2023-05-18T09:00", "reminder1-2wd")
    )
    (key,) = (await world.rows()).keys()
    for _ in range(world.policy.max_attempts):
        await world.dispatcher.run()
        row = (await world.rows())[key]
        if row["status"] == "pending":
            await world.at(row["next_attempt_at"])
    row = (await world.rows())[key]
    assert world.clock.now() < local("2023-05-18T10:00")
    assert (row["status"], row["reason"]) == ("sent", "")
    assert len(world.sms.sent) == 1


async def test_an_sms_cancelled_as_submitted_does_not_use_up_the_daily_cap(world: World) -> None:
    """Of three SMS due one morning, one cancelled as submitted: the other two are both sent."""
    planned = world.plan(
        "2023-06-29T08:00",
        "2023-06-29T09:00",
        lambda m: (m.recipient_id, m.channel) == ("changchun-liaison", "sms"),
    )[:3]
    await world.at("2023-06-29T09:00")
    await world.insert(planned)
    for occurrence in planned[0].periods:
        obligation, _, period = occurrence.partition("@")
        await world.submit("changchun", obligation, period, "2023-06-29T08:30")
    await world.dispatcher.run()
    rows = await world.rows()
    assert rows[planned[0].key]["status"] == "cancelled"
    assert [rows[m.key]["status"] for m in planned[1:]] == ["sent", "sent"]
