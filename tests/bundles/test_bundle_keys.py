"""Restarts and replicas never split or duplicate a bundle (issue 9.1)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace

import pytest

from service.clock import VirtualClock
from service.cycle import Reconciler
from service.dispatcher import Dispatcher
from service.model import CampaignModel
from service.planner import Planner
from service.steps import Timeline
from service.store.ledger import Ledger
from service.store.outbox import Outbox
from tests.test_dispatcher import CAMPAIGN, World, _second_engine, local


def test_two_planners_in_one_window_period_name_the_catch_up_bundle_alike(
    model: CampaignModel,
) -> None:
    """A catch-up planned at 03:00 or at 07:59 (before the 08:00 opening) gets the same keys
    and items: the bundle is named by the window opening, not by the planner's clock."""
    planner = Planner(Timeline(model))
    since = local("2023-06-14T10:00")
    early = planner.plan({}, since, local("2023-06-24T03:00")).messages
    late = planner.plan({}, since, local("2023-06-24T23:00")).messages
    assert early
    key = lambda ms: {(m.key, tuple(sorted(i["step"] for i in m.items))) for m in ms}  # noqa: E731
    assert key(early) == key(late)
    assert {m.due_at for m in early if m.kind != "digest" and m.status == "pending"} == {
        local("2023-06-25T08:00")
    }


async def test_items_a_second_planner_saw_join_the_stored_bundle(world: World) -> None:
    """The same key inserted with an extra item (a retraction landed between two planners)
    keeps the union while pending; the bundle's kind follows its most urgent item."""
    (bundle,) = world.plan(
        "2023-06-29T08:00",
        "2023-06-29T09:00",
        lambda m: (m.recipient_id, m.channel) == ("changchun-liaison", "email"),
    )
    first = replace(bundle, items=bundle.items[:2])
    extra = dict(bundle.items[2], kind="overdue")
    second = replace(bundle, items=[*bundle.items[:2], extra])
    assert await world.insert([first]) == 1
    assert await world.insert([second]) == 0
    row = (await world.rows())[bundle.key]
    assert len(row["items"]) == 3
    assert row["kind"] == "overdue" and row["items"][0]["kind"] == "overdue"


async def test_items_for_a_bundle_already_sent_become_a_follow_up_not_lost(world: World) -> None:
    """Extra items arriving after the bundle was sent are queued as ``…/more``, not dropped."""
    (bundle,) = world.plan(
        "2023-06-29T08:00",
        "2023-06-29T09:00",
        lambda m: (m.recipient_id, m.channel) == ("changchun-liaison", "email"),
    )
    await world.at("2023-06-29T09:00")
    await world.insert([replace(bundle, items=bundle.items[:1])])
    await world.dispatcher.run()
    assert await world.insert([bundle]) == 1
    rows = await world.rows()
    assert rows[bundle.key]["status"] == "sent"
    follow_up = rows[bundle.key + "/more"]
    assert follow_up["status"] == "pending" and len(follow_up["items"]) == len(bundle.items) - 1


async def test_replicas_planning_across_a_window_opening_never_duplicate_an_item(
    world: World,
) -> None:
    """Two replicas catch up the same downtime at 19:59 and 20:01 (either side of the
    window's close): planning is serialised, so no item lands in two bundles."""
    if world.engine.dialect.name != "postgresql":
        pytest.skip("replicas share PostgreSQL; SQLite has one writer and no replicas")
    await world.outbox.set_planned_through(local("2023-06-14T10:00"), local("2023-06-14T10:00"))
    other = await _second_engine(world.engine)
    try:
        late_clock = VirtualClock(local("2023-06-26T20:01"))
        outbox = Outbox(other, CAMPAIGN)
        ledger = Ledger(other, CAMPAIGN, late_clock)
        second = Reconciler(
            world.runtime,
            outbox,
            ledger,
            Dispatcher(world.runtime, outbox, ledger, {}, late_clock, "w2"),
            late_clock,
        )
        await world.at("2023-06-26T19:59")
        await asyncio.gather(world.reconciler.plan(), second.plan())
    finally:
        await other.dispose()
    seen: Counter[tuple[str, ...]] = Counter()
    for row in (await world.rows()).values():
        if row["status"] == "stale" or row["kind"] == "digest":
            continue
        for it in row["items"]:
            seen[
                (row["recipient_id"], row["channel"], it["obligation"], it["period"], it["step"])
            ] += 1
    assert seen and max(seen.values()) == 1
