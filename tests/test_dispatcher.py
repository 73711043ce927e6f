"""The dispatcher and the outbox on SQLite and PostgreSQL (DESIGN §4, invariants 2, 3, 4, 7, 9).

Each test builds the real pipeline — Runtime, Outbox, Ledger, Dispatcher, Reconciler on a
VirtualClock — around an in-memory recording channel that can be told to fail.
"""

from __future__ import annotations

import asyncio
import gc
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
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
    assert not [e for e in world.email.calls + world.sms.calls if "/changchun-liaison/" in e.key]
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


def moved(bundle: PlannedMessage, at: str, kind: str | None = None) -> PlannedMessage:
    """The bundle planned for another moment (optionally with every item of another kind)."""
    moment = local(at)
    items = [dict(it, kind=kind) if kind else it for it in bundle.items]
    return replace(
        bundle,
        key=f"{bundle.key}@{at}",
        kind=items[0]["kind"],  # type: ignore[arg-type]
        due_at=moment,
        next_attempt_at=moment,
        items=items,
    )


def sms_bundle(world: World) -> PlannedMessage:
    """changchun's liaison's SMS bundle of 06-29 09:00 (four reminders)."""
    (bundle,) = world.plan(
        "2023-06-29T08:00",
        "2023-06-29T09:00",
        lambda m: (m.recipient_id, m.channel) == ("changchun-liaison", "sms"),
    )
    assert len(bundle.items) == 4 and bundle.kind == "reminder"
    return bundle


async def test_a_reminder_sms_never_takes_the_slot_kept_for_urgent_ones(world: World) -> None:
    """Cap 2: the second reminder SMS of a day is cancelled, keeping the last slot for urgency."""
    assert world.runtime.model.schedule.campaign.sms_daily_cap == 2
    bundle = sms_bundle(world)
    await world.insert([moved(bundle, "2023-06-29T09:00"), moved(bundle, "2023-06-29T10:00")])
    await world.at("2023-06-29T10:00")
    await world.dispatcher.run()
    rows = sorted((await world.rows()).values(), key=lambda r: r["due_at"])
    assert [r["status"] for r in rows] == ["sent", "cancelled"]
    assert rows[1]["reason"].startswith("daily SMS cap reached (kept for urgent messages)")
    assert len(world.sms.to("+8613800000001")) == 1


async def test_an_overdue_sms_goes_out_after_a_reminder_sms_the_same_day(world: World) -> None:
    """Cap 2: a reminder SMS at 09:00 leaves a slot for the overdue SMS at 11:00."""
    bundle = sms_bundle(world)
    await world.insert(
        [moved(bundle, "2023-06-29T09:00"), moved(bundle, "2023-06-29T11:00", "overdue")]
    )
    await world.at("2023-06-29T09:00")
    await world.dispatcher.run()
    await world.at("2023-06-29T11:00")
    await world.dispatcher.run()
    rows = sorted((await world.rows()).values(), key=lambda r: r["due_at"])
    assert [(r["kind"], r["status"]) for r in rows] == [("reminder", "sent"), ("overdue", "sent")]


async def test_an_urgent_sms_over_the_cap_is_deferred_to_the_next_window_not_dropped(
    world: World,
) -> None:
    """A third urgent SMS the same day waits for the next working morning instead."""
    bundle = sms_bundle(world)
    urgent = [moved(bundle, f"2023-06-29T{h:02d}:00", "overdue") for h in (9, 10, 11)]
    await world.insert(urgent)
    await world.at("2023-06-29T11:00")
    await world.dispatcher.run()
    rows = list((await world.rows()).values())
    assert Counter(r["status"] for r in rows) == {"sent": 2, "pending": 1}
    (waiting,) = [r for r in rows if r["status"] == "pending"]
    assert waiting["next_attempt_at"] == local("2023-06-30T08:00")
    assert waiting["reason"].startswith("daily SMS cap reached (2 per number): deferred")
    await world.at("2023-06-30T08:00")
    await world.dispatcher.run()
    assert (await world.rows())[waiting["idem_key"]]["status"] == "sent"


async def test_the_cap_counts_per_phone_number_not_per_person(world: World) -> None:
    """Two people sharing one mobile share its cap: the second reminder SMS is cancelled."""
    bundle = sms_bundle(world)
    other = replace(
        moved(bundle, "2023-06-29T10:00"), recipient_id="changchun-head"
    )  # the head's record; the number is the liaison's
    await world.insert([moved(bundle, "2023-06-29T09:00"), other])
    head = world.runtime.person("changchun-head")
    assert head is not None
    object.__setattr__(head, "mobile", "+8613800000001")
    try:
        await world.at("2023-06-29T10:00")
        await world.dispatcher.run()
    finally:
        object.__setattr__(head, "mobile", "+8613800000002")
    statuses = Counter(r["status"] for r in (await world.rows()).values())
    assert statuses == {"sent": 1, "cancelled": 1}
    assert len(world.sms.to("+8613800000001")) == 1


async def test_the_daily_sms_cap_holds_across_dispatchers(world: World) -> None:
    """Two dispatchers (two engines on one database) share the cap through the reservation."""
    bundle = sms_bundle(world)
    urgent = [moved(bundle, f"2023-06-29T09:0{i}", "escalation") for i in range(4)]
    await world.insert(urgent)
    await world.at("2023-06-29T09:05")
    other = await _second_engine(world.engine)
    try:
        second = Dispatcher(
            world.runtime,
            Outbox(other, CAMPAIGN),
            Ledger(other, CAMPAIGN, world.clock),
            {"email": world.email, "sms": world.sms},
            world.clock,
            "w2",
            replace(world.policy, batch=1),
        )
        first = world.new_dispatcher()
        first.policy = replace(world.policy, batch=1)
        await asyncio.gather(first.run(), second.run())
    finally:
        await other.dispose()
    statuses = Counter(r["status"] for r in (await world.rows()).values())
    assert statuses == {"sent": 2, "pending": 2}  # two deferred to the next morning
    assert len(world.sms.to("+8613800000001")) == 2


async def test_a_first_start_at_night_waits_for_the_next_working_morning(
    world: World,
) -> None:
    """First run Friday 21:00: nothing goes out until Monday 08:00, then one bundle each."""
    await world.at("2023-05-19T21:00")
    await world.reconciler.run_cycle()
    rows = list((await world.rows()).values())
    assert rows and world.sms.calls == [] and world.email.calls == []
    assert {(r["status"], r["attempts"]) for r in rows} == {("pending", 0)}
    assert {r["next_attempt_at"] for r in rows} == {local("2023-05-22T08:00")}
    assert len({(r["recipient_id"], r["channel"]) for r in rows}) == len(rows)
    await world.at("2023-05-22T08:00")
    await world.dispatcher.run()
    assert {r["status"] for r in (await world.rows()).values()} == {"sent"}
    assert len(world.sms.sent) + len(world.email.sent) == len(rows)


async def test_a_message_claimed_outside_its_window_waits_without_an_attempt(
    world: World,
) -> None:
    """A bundle due before the window (planned earlier) is deferred to 08:00, not counted."""
    bundle = sms_bundle(world)
    await world.insert([moved(bundle, "2023-06-29T07:00")])
    await world.at("2023-06-29T07:00")
    await world.dispatcher.run()
    (row,) = (await world.rows()).values()
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert row["next_attempt_at"] == local("2023-06-29T08:00")
    assert row["reason"] == "waiting for the sending window"


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
    assert {r["status"] for r in rows.values()} >= {"sent", "failed"}  # the scenario did fail
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
    liaoyuan = [
        r
        for r in rows.values()
        if (r["step"], r["recipient_id"], r["channel"])
        == ("reminder1-2wd", "liaoyuan-liaison", "email")
    ]
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


async def test_an_item_submitted_meanwhile_is_dropped_and_the_rest_is_sent(world: World) -> None:
    """Of a four-item bundle, the one submitted after planning is left out of what is sent."""
    bundle = sms_bundle(world)
    (email,) = world.plan(
        "2023-06-29T08:00",
        "2023-06-29T09:00",
        lambda m: (m.recipient_id, m.channel) == ("changchun-liaison", "email"),
    )
    await world.at("2023-06-29T09:00")
    await world.insert([bundle, email])
    await world.submit("changchun", "monthly-leads", "2023-06", "2023-06-29T08:30")
    await world.dispatcher.run()
    rows = await world.rows()
    assert {rows[m.key]["status"] for m in (bundle, email)} == {"sent"}
    (mail,) = world.email.sent
    assert "线索" not in mail.text and "周进展" not in mail.subject
    assert "3项" in mail.subject and "活动总结" in mail.text
    (sms,) = world.sms.sent
    assert sms.sms_params["item"] == "3项报送"


async def test_a_bundle_whose_items_were_all_submitted_is_cancelled(world: World) -> None:
    """Every item submitted meanwhile: the bundle ends cancelled, nothing is sent."""
    bundle = sms_bundle(world)
    await world.at("2023-06-29T09:00")
    await world.insert([bundle])
    for it in bundle.items:
        await world.submit(it["unit"], it["obligation"], it["period"], "2023-06-29T08:30")
    await world.dispatcher.run()
    (row,) = (await world.rows()).values()
    assert (row["status"], row["reason"]) == (
        "cancelled",
        "reason disappeared: submitted meanwhile",
    )
    assert world.sms.calls == []


async def test_an_sms_resent_after_its_worker_died_takes_no_second_slot(world: World) -> None:
    """A reminder SMS whose worker died after taking the day's last reminder slot is sent
    again on re-claim (the accepted crash window), not cancelled by its own first slot."""
    await world.insert([moved(sms_bundle(world), "2023-06-29T09:00")])
    await world.at("2023-06-29T09:00")
    # the first worker claims it with a lease already dead, takes the slot, then dies
    [claimed] = await world.outbox.claim("w-dead", world.clock.now(), 10, timedelta(seconds=-1))
    assert not claimed.in_doubt
    assert await world.outbox.reserve_sms("+8613800000001", "2023-06-29", 1)
    await world.dispatcher.run()
    [row] = (await world.rows()).values()
    assert row["status"] == "sent", row["reason"]
    assert len(world.sms.to("+8613800000001")) == 1


def email_wave(world: World) -> list[PlannedMessage]:
    """Every e-mail the planner makes due at 2023-05-18 09:00 (first reminders)."""
    planned = world.plan(None, "2023-05-18T09:00", lambda m: m.channel == "email")
    assert len(planned) >= 6
    return planned


async def test_a_stop_mid_run_hands_back_the_next_batch_it_already_claimed(world: World) -> None:
    """Stopped during a batch's last send: nothing more is sent, and the next batch (claimed
    ahead) and everything else return to pending, none left ``sending``."""
    world.policy = RetryPolicy(max_attempts=3, batch=2, concurrency=1)
    dispatcher = world.new_dispatcher()
    planned = email_wave(world)
    await world.insert(planned)
    stop_after = 2  # the first batch

    async def send(envelope: Envelope) -> SendResult:
        result = await RecordingChannel.send(world.email, envelope)
        if len(world.email.sent) == stop_after:
            dispatcher.stopping.set()
        return result

    world.email.send = send  # type: ignore[method-assign]
    stats = await dispatcher.run()
    rows = (await world.rows()).values()
    assert stats.sent == stop_after == len(world.email.sent)
    assert Counter(r["status"] for r in rows) == {"sent": 2, "pending": len(planned) - 2}


async def test_a_run_collects_garbage_less_often_and_restores_the_setting(world: World) -> None:
    """While dispatching, young collections wait for 20,000 objects; afterwards as before."""
    dispatcher = world.new_dispatcher()
    await world.insert(email_wave(world))
    seen: list[tuple[int, int, int]] = []
    send = RecordingChannel.send

    async def watching(envelope: Envelope) -> SendResult:
        seen.append(gc.get_threshold())
        return await send(world.email, envelope)

    world.email.send = watching  # type: ignore[method-assign]
    before = gc.get_threshold()
    await dispatcher.run()
    assert seen and set(seen) == {(20_000, 20, 20)}
    assert gc.get_threshold() == before


async def test_the_next_batch_is_claimed_when_a_quarter_of_the_batch_is_left(
    world: World,
) -> None:
    """With batches of 8, the second claim starts before the batch's last two sends."""
    world.policy = RetryPolicy(max_attempts=3, batch=8, concurrency=1)
    dispatcher = world.new_dispatcher()
    planned = email_wave(world)
    assert len(planned) > 8
    await world.insert(planned)
    claim = world.outbox.claim
    sends_before_claim: list[int] = []

    async def counting_claim(*args: Any, **kwargs: Any) -> list[Any]:
        sends_before_claim.append(len(world.email.calls))
        return await claim(*args, **kwargs)

    world.outbox.claim = counting_claim  # type: ignore[method-assign]
    await dispatcher.run()
    assert sends_before_claim[1] <= 6
    assert {r["status"] for r in (await world.rows()).values()} == {"sent"}


async def test_the_next_batch_is_claimed_while_the_last_message_is_still_being_sent(
    world: World,
) -> None:
    """While the first batch's last message is with the channel, the next batch is claimed."""
    world.policy = RetryPolicy(max_attempts=3, batch=2, concurrency=1)
    dispatcher = world.new_dispatcher()
    planned = email_wave(world)
    await world.insert(planned)
    waited: list[bool] = []
    second_claim = asyncio.Event()
    claim = world.outbox.claim
    claims = 0

    async def counting_claim(*args: Any, **kwargs: Any) -> list[Any]:
        nonlocal claims
        got = await claim(*args, **kwargs)
        claims += 1
        if claims == 2:
            second_claim.set()
        return got

    async def send(envelope: Envelope) -> SendResult:
        if len(world.email.calls) == 1:  # the first batch's last message: wait for the claim
            await asyncio.wait_for(second_claim.wait(), 5)
            waited.append(True)
        return await RecordingChannel.send(world.email, envelope)

    world.outbox.claim = counting_claim  # type: ignore[method-assign]
    world.email.send = send  # type: ignore[method-assign]
    await dispatcher.run()
    assert waited == [True]
    assert {r["status"] for r in (await world.rows()).values()} == {"sent"}
