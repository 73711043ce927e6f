"""Operations endpoints, messages page and re-queue, dashboard drill-down, calendar feeds."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from icalendar import Calendar
from sqlalchemy.ext.asyncio import AsyncEngine

from service.store.db import MIGRATIONS
from service.store.outbox import Outbox
from service.store.tables import messages
from service.web.state import WebState
from tests.conftest import SHANGHAI

from .conftest import Login, csrf_of


async def test_healthz(client: httpx.AsyncClient) -> None:
    """The process answers."""
    assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_readyz_reports_current_migrations(client: httpx.AsyncClient) -> None:
    """Ready: the database answers and sits at the migrations' head (alembic's, one)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    [head] = ScriptDirectory.from_config(cfg).get_heads()
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "revision": head}


async def test_readyz_not_ready_on_old_schema(
    client: httpx.AsyncClient, migrated_engine: AsyncEngine
) -> None:
    """A database behind the code's migrations is reported 503."""
    async with migrated_engine.begin() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = '0002'"))
    r = await client.get("/readyz")
    assert r.status_code == 503 and r.json()["revision"] == "0002"


async def test_metrics_count_messages_by_state_and_channel(
    client: httpx.AsyncClient, failed_message: tuple[int, str]
) -> None:
    """Prometheus text with messages by state/channel and the pending outbox."""
    text = (await client.get("/metrics")).text
    assert 'service_messages{channel="email",state="failed"} 1.0' in text
    assert "service_outbox_pending 0.0" in text
    assert 'service_channel_failed_messages{channel="email"} 1.0' in text
    assert "service_last_cycle_timestamp_seconds" in text


async def test_metrics_after_a_cycle(client: httpx.AsyncClient, reconciler, web_clock) -> None:  # type: ignore[no-untyped-def]
    """After a real cycle: sent attempts with their time, no planner lag, a last-cycle time."""
    await reconciler.run_cycle("test")
    text = (await client.get("/metrics")).text
    sent = re.search(r'service_delivery_attempts\{outcome="sent"\} (\S+)', text)
    assert sent and float(sent.group(1)) > 0
    assert "service_planner_lag_seconds 0.0" in text
    stamp = re.search(r"^service_last_cycle_timestamp_seconds (\S+)", text, re.M)
    assert stamp and float(stamp.group(1)) == web_clock.now().timestamp()


async def test_messages_search_and_body(login: Login, failed_message: tuple[int, str]) -> None:
    """The operator finds the failed message by unit and state and reads its body."""
    c = await login("operator")
    r = await c.get("/messages?unit=changchun&status=failed")
    assert "550 mailbox unavailable" in r.text and "李海燕" in r.text
    r = await c.get(f"/messages/{failed_message[0]}")
    assert "请于 6 月 21 日 17:00 前报送" in r.text


async def test_messages_list_names_the_obligation_by_its_title(
    login: Login, failed_message: tuple[int, str]
) -> None:
    """The messages list reads the obligation's title, not its schedule key."""
    c = await login("operator")
    row = (await c.get("/messages?unit=changchun&status=failed")).text.split("<tbody>", 1)[1]
    assert "活动进展情况统计表" in row and ">weekly-progress<" not in row


async def test_messages_search_bad_state_names_the_field(login: Login) -> None:
    """An unknown state is refused with a field message."""
    c = await login("operator")
    r = await c.get("/messages?status=lost")
    assert r.status_code == 400 and "状态：没有这种状态" in r.text


async def test_requeue_failed_message(
    login: Login, failed_message: tuple[int, str], migrated_engine: AsyncEngine
) -> None:
    """Re-queue puts a failed bundle back to pending, due at once, keeping the old reason."""
    c = await login("operator")
    page = await c.get("/messages")
    r = await c.post(
        "/messages/requeue", data={"csrf": csrf_of(page.text), "key": failed_message[1]}
    )
    assert r.status_code == 303 and "requeued=1" in r.headers["location"]
    m = messages.c
    async with migrated_engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(m.status, m.reason, m.attempts, m.next_attempt_at, m.due_at).where(
                    m.idem_key == failed_message[1]
                )
            )
        ).one()
    assert (row.status, row.reason, row.attempts) == (
        "pending",
        "requeued by the operator; before: permanent: 550 mailbox unavailable",
        0,
    )
    assert row.next_attempt_at == row.due_at  # due at once (it still expires as planned)


async def test_requeue_leaves_final_states_alone(
    migrated_engine: AsyncEngine, failed_message: tuple[int, str]
) -> None:
    """Outbox.requeue touches failed messages only."""
    outbox = Outbox(migrated_engine, "jilin-2023")
    async with migrated_engine.begin() as conn:
        await conn.execute(messages.update().values(status="sent"))
    assert await outbox.requeue([failed_message[1]]) == 0


async def test_dashboard_drill_down_lists_overdue_units(login: Login) -> None:
    """A dashboard number leads to the units behind it."""
    c = await login("operator")
    r = await c.get(
        "/dashboard/units?obligation=weekly-progress&period=2023-W25&state=overdue&region=changchun"
    )
    assert r.status_code == 200
    assert "农安县安委会办公室" in r.text and "吉林市安委会办公室" not in r.text


async def test_dashboard_bad_filter_is_400(login: Login) -> None:
    """An unknown unit kind is refused with a message naming the field."""
    c = await login("operator")
    r = await c.get("/dashboard?kind=planet")
    assert r.status_code == 400 and "kind" in r.text


async def test_unit_feed_parses_back_with_alarms(
    client: httpx.AsyncClient, web_state: WebState
) -> None:
    """The unit feed: Shanghai times with a VTIMEZONE, reminders as VALARM."""
    token = web_state.signer.issue("changchun-liaison", 1, web_state.clock.now())
    r = await client.get(f"/feeds/unit/{token}.ics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/calendar")
    cal = Calendar.from_ical(r.content)
    tzids = [tz["TZID"] for tz in cal.walk("VTIMEZONE")]
    assert tzids == ["Asia/Shanghai"]
    events = {str(e["UID"]): e for e in cal.walk("VEVENT")}
    w25 = events["jilin-2023/changchun/weekly-progress@2023-W25"]
    start = w25.decoded("DTSTART")
    assert start.tzinfo is not None and start.utcoffset() == timedelta(hours=8)
    assert (start.hour, start.minute) == (17, 0)
    assert "节假日调整" in str(w25["DESCRIPTION"])  # 2023-W25 moved before Dragon Boat
    triggers = [a.decoded("TRIGGER") for a in w25.walk("VALARM")]
    assert triggers and all(t <= timedelta(0) for t in triggers)


async def test_campaign_feed_for_office(login: Login) -> None:
    """The office's campaign feed lists every submittable occurrence."""
    c = await login("operator")
    cal = Calendar.from_ical((await c.get("/feeds/campaign.ics")).content)
    uids = {str(e["UID"]) for e in cal.walk("VEVENT")}
    assert "jilin-2023/monthly-leads@2023-12" in uids and len(uids) == 22
    assert all(
        e.decoded("DTSTART").tzinfo.key == SHANGHAI.key  # type: ignore[union-attr]
        for e in cal.walk("VEVENT")
    )
