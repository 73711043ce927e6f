"""Catch-up that respects people (invariant 11): inside the window, one bundle per person."""

from __future__ import annotations

from collections import Counter
from datetime import time

from tests.test_dispatcher import World, local


def in_window(world: World, row: dict) -> bool:  # type: ignore[type-arg]
    moment = row["sent_at"].astimezone(world.runtime.model.schedule.campaign.tz)
    return time(8, 0) <= moment.time() < time(20, 0) and world.runtime.model.calendar.is_workday(
        moment.date()
    )


async def test_a_restart_after_downtime_across_a_holiday_catches_up_inside_the_window(
    world: World,
) -> None:
    """Down 06-14 10:00 → Sat 06-24 03:00 (Dragon Boat holiday): catch-up waits for Sun 06-25
    08:00 (an adjusted working day), one bundle per person and channel; digests on working
    days only."""
    await world.replay("2023-06-14T10:00")
    before = {k for k, r in (await world.rows()).items() if r["status"] == "sent"}
    await world.at("2023-06-24T03:00")
    await world.replay("2023-06-27T00:00")
    rows = {k: r for k, r in (await world.rows()).items() if k not in before}
    sent = [r for r in rows.values() if r["status"] == "sent"]
    assert sent
    assert min(r["sent_at"] for r in sent) == local("2023-06-25T08:00")
    assert all(in_window(world, r) for r in sent)
    catch_up = [r for r in sent if r["due_at"] == local("2023-06-25T08:00")]
    per_person = Counter((r["recipient_id"], r["channel"]) for r in catch_up)
    assert per_person and set(per_person.values()) == {1}
    # the W24 overdue notice (due 06-19 09:00 while down) is in the liaisons' catch-up bundle
    baicheng = [r for r in catch_up if r["recipient_id"] == "baicheng-liaison"]
    assert baicheng and all(
        {"weekly-progress", "2023-W24"}
        <= {it["obligation"] for it in r["items"]} | {it["period"] for it in r["items"]}
        for r in baicheng
    )
    digests = [r for r in sent if r["kind"] == "digest"]
    assert digests
    assert all(world.runtime.model.calendar.is_workday(r["sent_at"].date()) for r in digests)
    assert {r["due_at"].astimezone(local("2023-06-25T00:00").tzinfo).date() for r in digests} >= {
        local("2023-06-25T09:30").date()
    }


async def test_a_first_start_mid_campaign_at_night_sends_one_backlog_bundle_each_morning(
    world: World,
) -> None:
    """First start Sat 06-24 03:00: nothing before Sun 06-25 08:00, then one bundle per person
    and channel carrying the whole backlog."""
    await world.at("2023-06-24T03:00")
    await world.reconciler.run_cycle()
    assert world.email.calls == [] and world.sms.calls == []
    rows = [r for r in (await world.rows()).values() if r["status"] == "pending"]
    bundles = [r for r in rows if r["kind"] != "digest"]
    assert {r["next_attempt_at"] for r in bundles} == {local("2023-06-25T08:00")}
    assert set(Counter((r["recipient_id"], r["channel"]) for r in bundles).values()) == {1}
    baicheng = next(
        r for r in bundles if (r["recipient_id"], r["channel"]) == ("baicheng-liaison", "email")
    )
    assert len(baicheng["items"]) >= 5  # registration and every late week so far
    assert baicheng["kind"] == "overdue"
    await world.at("2023-06-25T08:00")
    await world.dispatcher.run()
    (mail,) = world.email.to("baicheng-liaison@example.org")
    assert mail.subject.startswith("【逾期提醒】")
    assert "已逾期" in mail.text
