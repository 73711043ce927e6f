"""Retries until the reason expires, re-queueing failed messages, loud channel outages."""

from __future__ import annotations

from dataclasses import replace

import structlog

from service.dispatcher import RetryPolicy
from tests.test_dispatcher import World, local, one, transient


async def test_transient_failures_retry_until_the_message_expires_at_most_an_hour_apart(
    world: World,
) -> None:
    """SMTP down for hours: retried ≤ 1 h apart until the deadline, then failed with why."""
    world.dispatcher.policy = RetryPolicy()  # the defaults: no attempt bound
    world.email.fail_always("changchun-liaison@example.org", transient("421 unavailable"))
    await world.insert(
        one(world, "changchun-liaison", "email", None, "2023-05-18T09:00", "reminder1-2wd")
    )
    (key,) = (await world.rows()).keys()
    gaps = []
    while True:
        await world.dispatcher.run()
        row = (await world.rows())[key]
        if row["status"] != "pending":
            break
        if "TransientDeliveryError" in row["reason"]:  # not a wait for the sending window
            gaps.append((row["next_attempt_at"] - world.clock.now()).total_seconds())
        await world.at(row["next_attempt_at"])
    assert row["status"] == "failed"
    assert row["attempts"] > 6
    assert max(gaps) <= 3600
    assert "it stops making sense at 2023-05-22T17:00:00+08:00" in row["reason"]
    assert world.clock.now() > local("2023-05-22T15:00")


async def test_a_channel_failing_past_the_threshold_is_logged_once_as_an_error(
    world: World,
) -> None:
    """After 15 minutes of failures the channel outage is logged as an error, once."""
    world.dispatcher.policy = replace(RetryPolicy(), base_delay=300.0)
    world.email.fail_always("changchun-liaison@example.org", transient())
    await world.insert(
        one(world, "changchun-liaison", "email", None, "2023-05-18T09:00", "reminder1-2wd")
    )
    (key,) = (await world.rows()).keys()
    with structlog.testing.capture_logs() as logs:
        for _ in range(6):
            await world.dispatcher.run()
            row = (await world.rows())[key]
            await world.at(row["next_attempt_at"])
    alarms = [e for e in logs if e["event"] == "channel failing"]
    assert len(alarms) == 1
    assert alarms[0]["log_level"] == "error" and alarms[0]["channel"] == "email"
    assert alarms[0]["minutes"] >= 15


async def test_requeue_puts_failed_messages_back_and_they_are_sent(world: World) -> None:
    """Outbox.requeue turns failed messages pending, due at once; only failed ones."""
    world.email.fail("changchun-liaison@example.org", transient(), transient(), transient())
    planned = one(world, "changchun-liaison", "email", None, "2023-05-18T09:00", "reminder1-2wd")
    await world.insert(planned)
    (key,) = (await world.rows()).keys()
    for _ in range(3):  # the world's policy gives up after 3 attempts
        await world.dispatcher.run()
        row = (await world.rows())[key]
        if row["status"] == "pending":
            await world.at(row["next_attempt_at"])
    assert (await world.rows())[key]["status"] == "failed"
    assert await world.outbox.requeue([key, "no/such/key"]) == 1
    row = (await world.rows())[key]
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert row["reason"].startswith("requeued by the operator; before: gave up after 3")
    await world.dispatcher.run()
    assert (await world.rows())[key]["status"] == "sent"
    assert await world.outbox.requeue([key]) == 0  # a sent message is never re-queued
