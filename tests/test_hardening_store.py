"""Issue 8 hardening of the store and the process (items 3, 4, 5, 6, 9), on both databases.

Every test here failed on the code before the fix: a row the database refuses no longer
fails a whole group commit, values are checked against the schema's column lengths before
the database sees them, leases do not follow a virtual clock, logs and recorded reasons
carry no full address or mobile, and state files are private.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import importlib
import logging
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from service import logs
from service.app import App, open_app, worker_id
from service.cli import app as cli_app
from service.clock import VirtualClock
from service.config import Settings
from service.errors import ConfigError, LedgerError
from service.planner import PlannedMessage
from service.simulate import MARKER, simulate
from service.statelock import hold
from service.store.ledger import Ledger
from service.store.outbox import Outbox
from service.store.recording import bound_provider_id
from service.store.tables import delivery_attempts, messages
from service.submissions import NewSubmission
from tests.channels.conftest import LoopbackServer, Reply, WebhookFake
from tests.channels.smtp_server import RecordingHandler, running_server
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


async def test_planned_value_over_its_column_is_stored_failed_with_the_reason(
    migrated_engine: AsyncEngine,
) -> None:
    """A 300-character address: that message is stored failed, the others pending."""
    now = local(AT)
    outbox = Outbox(migrated_engine, "jilin-2023")
    batch = planned(3, now)
    batch[1] = dataclasses.replace(batch[1], address="x" * 290 + "@example.org")
    assert await outbox.insert(batch, now) == 3
    assert await outbox.insert(batch, now) == 0  # re-planning it inserts nothing twice
    rows = await rows_of(migrated_engine)
    assert [r["status"] for r in rows] == ["pending", "failed", "pending"]
    assert rows[1]["reason"] == "无法保存：address 超过 256 个字符"
    assert len(rows[1]["address"]) == 256


def test_campaign_key_over_its_column_is_refused_before_any_write(
    migrated_engine: AsyncEngine, clock: VirtualClock
) -> None:
    """A 65-character campaign key: LedgerError naming campaign.key from Outbox and Ledger."""
    with pytest.raises(LedgerError, match=r"campaign\.key.*过长"):
        Outbox(migrated_engine, "c" * 65)
    with pytest.raises(LedgerError, match=r"campaign\.key.*过长"):
        Ledger(migrated_engine, "c" * 65, clock)


def test_cli_submit_with_overlong_actor_prints_one_chinese_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`service submit --actor <129 chars>`: exit 1, one error line naming --actor."""
    for name in ("DATABASE_URL", "CHANNELS_FILE", "DISPATCH_CONCURRENCY", "DISPATCH_UNRECORDED"):
        monkeypatch.delenv(f"SERVICE_{name}", raising=False)
    result = CliRunner().invoke(
        cli_app,
        [
            *("--schedule", str(ROOT / "schedules" / "jilin-2023.yaml")),
            *("--contacts", str(ROOT / "contacts"), "--templates", str(ROOT / "templates")),
            *("--state-dir", str(tmp_path / "state"), "submit", "--unit", "yanji"),
            *("--obligation", "weekly-progress", "--period", "2023-W25"),
            *("--at", "2023-06-20T10:00+08:00", "--actor", "a" * 129),
        ],
    )
    assert result.exit_code == 1, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("错误") and "--actor" in line and "128" in line, line


# -- item 6: leases do not follow a virtual clock; one daemon per SQLite state -------------


async def test_a_virtual_clock_a_day_ahead_cannot_take_live_claims(
    migrated_engine: AsyncEngine,
) -> None:
    """Two replays whose campaign clocks differ by a day: live leases hold (wall clock)."""
    now = local(AT)
    first, second = Outbox(migrated_engine, "jilin-2023"), Outbox(migrated_engine, "jilin-2023")
    await first.insert(planned(3, now), now)
    assert len(await first.claim("a:1", now, 10, timedelta(minutes=5))) == 3
    assert await second.claim("b:2", now + timedelta(days=1), 10, timedelta(minutes=5)) == []


async def test_a_dead_lease_is_taken_over_by_the_lease_clock_alone(
    migrated_engine: AsyncEngine,
) -> None:
    """Past the lease on the lease clock (campaign time unchanged), claims are taken over."""
    now = local(AT)
    wall = VirtualClock(datetime(2026, 12, 1, 12, tzinfo=now.tzinfo))
    first = Outbox(migrated_engine, "jilin-2023", lease_clock=wall)
    second = Outbox(migrated_engine, "jilin-2023", lease_clock=wall)
    await first.insert(planned(3, now), now)
    assert len(await first.claim("a:1", now, 10, timedelta(minutes=5))) == 3
    assert await second.claim("b:2", now, 10, timedelta(minutes=5)) == []
    wall.set(wall.now() + timedelta(minutes=5, seconds=1))
    assert len(await second.claim("b:2", now, 10, timedelta(minutes=5))) == 3


HOLD_LOCK = """
import sys
from pathlib import Path
from service.statelock import hold
with hold(Path(sys.argv[1])):
    print("ready", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """Another process holding the state lock of ``tmp_path/state`` until it is killed."""
    with holding(tmp_path / "state" / "service.db.lock") as holder:
        yield holder


@contextmanager
def holding(lock: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """Another process holding ``lock`` (statelock.hold) until it is killed."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
            yield holder, lock
        finally:
            holder.kill()
            holder.wait(timeout=10)


def test_second_daemon_on_one_sqlite_state_is_refused_naming_the_holder(
    tmp_path: Path,
    lock_holder: tuple[subprocess.Popen[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`service run --virtual-from` on a state another process runs: error with its pid."""
    holder, _ = lock_holder
    for name in ("DATABASE_URL", "CHANNELS_FILE", "DISPATCH_CONCURRENCY", "DISPATCH_UNRECORDED"):
        monkeypatch.delenv(f"SERVICE_{name}", raising=False)
    result = CliRunner().invoke(
        cli_app,
        [
            *("--schedule", str(ROOT / "schedules" / "jilin-2023.yaml")),
            *("--contacts", str(ROOT / "contacts"), "--templates", str(ROOT / "templates")),
            *("--state-dir", str(tmp_path / "state"), "run"),
            *("--virtual-from", "2023-05-18T09:00+08:00", "--until", "2023-05-18T09:10+08:00"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert f"pid {holder.pid}" in result.output
    assert "只能由一个" in result.output


def test_the_state_lock_dies_with_its_holder(
    lock_holder: tuple[subprocess.Popen[str], Path],
) -> None:
    """Refused while the holder lives; free once it is SIGKILLed (no stale lock file)."""
    holder, lock = lock_holder
    with pytest.raises(ConfigError, match=f"pid {holder.pid}"), hold(lock):
        pass
    holder.kill()
    holder.wait(timeout=10)
    with hold(lock), hold(lock):  # re-entrant within one process
        pass


# -- item 9: personal data belongs to the service's user ----------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_state_folder_database_and_file_outbox_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under umask 022: state folders 0700; service.db, -wal, -shm, .eml, sms.jsonl 0600."""
    old = os.umask(0o022)
    try:
        state = tmp_path / "state"
        settings = Settings(
            schedule=ROOT / "schedules" / "jilin-2023.yaml",
            contacts=ROOT / "contacts",
            templates=ROOT / "templates",
            state_dir=state,
            database_url=None,
            channels_file=None,
        )
        async with open_app(settings, VirtualClock(local(AT)), durable_outbox=False) as app:
            await app.reconciler.run_cycle("files")
            # While it runs: SQLite removes -wal and -shm when the last connection closes.
            files = {p.name: _mode(p) for p in state.rglob("*") if p.is_file()}
            folders = {str(p): _mode(p) for p in [state, *state.rglob("*")] if p.is_dir()}
    finally:
        os.umask(old)
    assert {"service.db", "service.db-wal", "service.db-shm", "sms.jsonl"} <= set(files)
    assert any(name.endswith(".eml") for name in files)
    assert {name: oct(mode) for name, mode in files.items() if mode != 0o600} == {}
    assert {name: oct(mode) for name, mode in folders.items() if mode != 0o700} == {}


def _simulation_settings(tmp_path: Path) -> Settings:
    return Settings(
        schedule=ROOT / "schedules" / "jilin-2023.yaml",
        contacts=ROOT / "contacts",
        templates=ROOT / "templates",
        state_dir=tmp_path / "unused",
        database_url=None,
        channels_file=None,
    )


async def test_simulate_refuses_a_non_empty_folder_it_did_not_write(tmp_path: Path) -> None:
    """--out on a folder with other files: a located error, and nothing in it is deleted."""
    out = tmp_path / "precious"
    (out / "outbox").mkdir(parents=True)
    (out / "outbox" / "keep.eml").write_text("mine", encoding="utf-8")
    (out / "simulation.db").write_text("not a replay", encoding="utf-8")
    start, end = local("2023-05-18T08:00"), local("2023-05-18T09:30")
    with pytest.raises(ConfigError, match=r"precious.*--out.*不是空的"):
        await simulate(_simulation_settings(tmp_path), start, end, out)
    assert (out / "outbox" / "keep.eml").read_text(encoding="utf-8") == "mine"
    assert (out / "simulation.db").read_text(encoding="utf-8") == "not a replay"


async def test_simulate_reuses_its_own_previous_output_privately(tmp_path: Path) -> None:
    """A folder a previous simulate wrote is replayed into again; its files are 0600."""
    out = tmp_path / "replay"
    out.mkdir(mode=0o755)  # an empty folder the operator made: the replay takes it over
    start, end = local("2023-05-18T08:00"), local("2023-05-18T09:30")
    first = await simulate(_simulation_settings(tmp_path), start, end, out)
    second = await simulate(_simulation_settings(tmp_path), start, end, out)
    assert first.sent == second.sent > 0
    assert (out / MARKER).is_file()
    assert _mode(out) == 0o700
    for name in ("messages.jsonl", "outbox-states.jsonl", "simulation.db"):
        assert _mode(out / name) == 0o600, name


# -- item 5: no personal data in logs or recorded reasons ---------------------------------


class QuotingRefusal(RecordingHandler):
    """Refuses every recipient with a reply that quotes the address and a mobile."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        return f"550 5.1.1 <{address}>: mailbox unavailable, call 13912345678"


def _liaison_addresses() -> set[str]:
    with (ROOT / "contacts" / "people.csv").open(encoding="utf-8") as fh:
        return {row["email"] for row in csv.DictReader(fh) if row["email"]}


async def test_smtp_errors_quoting_the_recipient_are_masked_in_logs_and_reasons(
    app_on: OpenApp,
    engine: AsyncEngine,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 550 quoting the address and a mobile: neither appears in full anywhere recorded."""
    caplog.set_level(logging.INFO)
    async with running_server(QuotingRefusal()) as smtp:
        yaml = (
            f"email:\n  backend: smtp\n  host: {smtp.host}\n  port: {smtp.port}\n"
            "  security: none\n  from_addr: noreply@example.org\n  timeout: 10\n"
        )
        async with app_on(yaml) as (app, _):
            await app.reconciler.run_cycle("refused")
    rows = [r for r in await rows_of(engine) if r["channel"] == "email"]
    async with engine.connect() as conn:
        errors = list((await conn.execute(sa.select(delivery_attempts.c.error))).scalars())
    recorded = "\n".join([r["reason"] for r in rows] + errors)
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.")]
    seen = "\n".join([capsys.readouterr().out, *ours, recorded])  # not the test server's log
    assert rows and {r["status"] for r in rows} == {"failed"}
    assert "***@" in recorded and "139****5678" in recorded  # the reason is kept, masked
    assert [a for a in _liaison_addresses() if a in seen] == []
    assert "13912345678" not in seen


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)


def _log_failure_with_a_mobile_in_scope() -> None:
    mobile = "+8613912345678"  # a local the traceback must not show
    try:
        raise RuntimeError(f"boom for {len(mobile)} digits")
    except RuntimeError:
        structlog.get_logger("test").exception("operation failed")


def test_configured_exception_logs_show_no_local_variables(
    restore_structlog: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """After logs.configure("INFO"), log.exception prints the traceback without locals."""
    logs.configure("INFO")
    _log_failure_with_a_mobile_in_scope()
    out = capsys.readouterr().out
    assert "RuntimeError: boom for 14 digits" in out
    assert "13912345678" not in out


def test_unconfigured_exception_logs_show_no_local_variables(
    restore_structlog: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without configure() (structlog defaults), tracebacks still carry no locals."""
    structlog.reset_defaults()
    importlib.reload(logs)
    _log_failure_with_a_mobile_in_scope()
    out = capsys.readouterr().out
    assert "RuntimeError: boom for 14 digits" in out
    assert "13912345678" not in out


async def test_simulate_is_refused_while_another_process_replays_into_its_folder(
    tmp_path: Path,
) -> None:
    """A second simulate into a folder being replayed: refused naming the pid, not wiped."""
    out = tmp_path / "replay"
    out.mkdir()
    (out / MARKER).touch()
    (out / "messages.jsonl").write_text("in progress\n", encoding="utf-8")
    start, end = local("2023-05-18T08:00"), local("2023-05-18T09:30")
    with holding(out / "simulation.db.lock") as (holder, _):
        with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
            await simulate(_simulation_settings(tmp_path), start, end, out)
    assert (out / "messages.jsonl").read_text(encoding="utf-8") == "in progress\n"
