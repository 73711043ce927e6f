"""``service run`` polls the office mailbox before each cycle (issue 11 item 5), against the
real Dovecot: a mail recorded in a cycle cancels that cycle's reminder, a resend changes
nothing, and a mailbox that is down or refuses the login never stops the cycles."""

from __future__ import annotations

import json
import socket
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner, Result

from service.app import open_app
from service.cli import app as cli_app
from service.cli.daemon import mailbox_hook
from service.clock import VirtualClock
from service.config import Settings
from service.daemon import run_virtual
from service.errors import ConfigError
from service.intake.mailbox import MailboxConfig
from tests.conftest import ROOT, local
from tests.intake.conftest import Deliver, make_mail, progress_form

NUMBERS = [3, 120, 500, 4, 1, 60, 1, 2, 1, 5]
FAILED = "mailbox pass failed; cycles go on, the next one retries"


def _mail() -> bytes:
    return make_mail(
        "baishan-liaison@example.org",
        [("附件2-白山市.xlsx", progress_form("白山市安委会办公室", NUMBERS))],
        message_id="<w22-baishan-daemon@example.org>",
        date="2023-06-02T08:55",
    )


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        schedule=ROOT / "schedules" / "jilin-2023.yaml",
        contacts=ROOT / "contacts",
        templates=ROOT / "templates",
        state_dir=tmp_path,
    )


def _w22(rows: list[dict[str, Any]], recipient: str) -> list[str]:
    """Channel:status of ``recipient``'s due-day W22 reminder bundles."""
    return sorted(
        f"{r['channel']}:{r['status']}"
        for r in rows
        if r["recipient_id"] == recipient
        and "weekly-progress@2023-W22" in r["periods"]
        and r["step"].endswith("-0wd")
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


async def test_one_replayed_cycle_records_the_mail_and_cancels_the_pending_reminder(
    tmp_path: Path, deliver: Deliver, mailbox_env: dict[str, str]
) -> None:
    """With the CLI's hook, the cycle that polls the mail cancels baishan's pending bundle."""
    clock = VirtualClock(local("2023-06-01T09:30"))
    async with open_app(_settings(tmp_path), clock, durable_outbox=False) as app:
        await app.reconciler.run_cycle("before")  # the day before: first reminders
        clock.set(local("2023-06-02T09:00"))
        await app.reconciler.plan()  # the due-day bundles are pending
        assert _w22(await app.outbox.rows(), "baishan-liaison") == ["email:pending", "sms:pending"]
        hook = mailbox_hook(MailboxConfig.from_env(mailbox_env), app, clock)
        deliver(_mail())
        cycles = await run_virtual(app, clock, local("2023-06-02T09:00"), before_cycle=hook)
        rows = await app.outbox.rows()
        [sub] = await app.ledger.history("baishan")
    assert cycles == 1
    assert (sub.period, sub.source) == ("2023-W22", "inbound-mail")
    assert _w22(rows, "baishan-liaison") == ["email:cancelled", "sms:cancelled"]
    assert _w22(rows, "changchun-liaison") == ["email:sent", "sms:sent"]  # still owed


async def test_the_same_mail_delivered_again_changes_nothing(
    tmp_path: Path, deliver: Deliver, mailbox_env: dict[str, str]
) -> None:
    """A resent e-mail polled in a later cycle records nothing and changes no message."""
    clock = VirtualClock(local("2023-06-02T08:58"))
    async with open_app(_settings(tmp_path), clock, durable_outbox=False) as app:
        hook = mailbox_hook(MailboxConfig.from_env(mailbox_env), app, clock)
        deliver(_mail())
        await run_virtual(app, clock, local("2023-06-02T09:30"), before_cycle=hook)
        rows, history = await app.outbox.rows(), await app.ledger.history()
        deliver(_mail())
        await run_virtual(app, clock, local("2023-06-02T09:31"), before_cycle=hook)
        assert await app.outbox.rows() == rows
        assert await app.ledger.history() == history
        assert await app.ledger.count_of("baishan", "weekly-progress", "2023-W22") == 1


async def test_unreachable_mailbox_logs_once_and_cycles_go_on(
    tmp_path: Path, mailbox_env: dict[str, str]
) -> None:
    """IMAP down for a whole replay: every cycle runs, one warning line in all."""
    env = {**mailbox_env, "SERVICE_IMAP_PORT": str(_closed_port())}
    clock = VirtualClock(local("2023-06-01T08:00"))
    async with open_app(_settings(tmp_path), clock, durable_outbox=False) as app:
        hook = mailbox_hook(MailboxConfig.from_env(env), app, clock)
        with capture_logs() as logs:
            cycles = await run_virtual(app, clock, local("2023-06-02T12:00"), before_cycle=hook)
        sent = await app.outbox.rows("sent")
    assert cycles >= 3 and sent
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [FAILED]


async def test_refused_login_is_logged_without_secrets(
    tmp_path: Path, mailbox_env: dict[str, str]
) -> None:
    """A wrong password: the cycles run; the log line names the host, not user or password."""
    env = {**mailbox_env, "SERVICE_IMAP_PASSWORD": "wrong-secret-xyz"}
    clock = VirtualClock(local("2023-06-01T08:00"))
    async with open_app(_settings(tmp_path), clock, durable_outbox=False) as app:
        hook = mailbox_hook(MailboxConfig.from_env(env), app, clock)
        with capture_logs() as logs:
            await run_virtual(app, clock, local("2023-06-01T10:00"), before_cycle=hook)
        assert await app.outbox.rows("sent")
    [line] = [e for e in logs if e["event"] == FAILED]
    text = json.dumps(line, ensure_ascii=False)
    assert "wrong-secret-xyz" not in text and env["SERVICE_IMAP_USER"] not in text
    assert env["SERVICE_IMAP_HOST"] in text


def test_plaintext_imap_to_a_remote_host_is_refused() -> None:
    """SERVICE_IMAP_TLS=0 to a non-loopback host is a Chinese configuration error."""
    env = {
        "SERVICE_IMAP_HOST": "imap.example.org",
        "SERVICE_IMAP_USER": "office",
        "SERVICE_IMAP_PASSWORD": "p",
        "SERVICE_IMAP_TLS": "0",
    }
    with pytest.raises(ConfigError) as exc:
        MailboxConfig.from_env(env)
    [problem] = exc.value.problems
    assert problem.field == "SERVICE_IMAP_TLS" and "回环地址" in problem.message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_plaintext_imap_to_loopback_is_allowed(host: str) -> None:
    """Loopback test servers may be reached without TLS."""
    env = {
        "SERVICE_IMAP_HOST": host,
        "SERVICE_IMAP_USER": "office",
        "SERVICE_IMAP_PASSWORD": "p",
        "SERVICE_IMAP_TLS": "0",
    }
    assert MailboxConfig.from_env(env).tls is False


# --- through the command line ------------------------------------------------------------


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """``service --state-dir tmp/state ARGS`` in process, Chinese, clean environment."""
    for name in ("SCHEDULE", "CONTACTS", "STATE_DIR", "DATABASE_URL", "CHANNELS_FILE"):
        monkeypatch.delenv(f"SERVICE_{name}", raising=False)
    for name in ("HOST", "USER", "PASSWORD", "PORT", "TLS", "FOLDER", "MOVE_TO"):
        monkeypatch.delenv(f"SERVICE_IMAP_{name}", raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    monkeypatch.setenv("SERVICE_TEMPLATES", str(ROOT / "templates"))
    base = [
        "--schedule",
        str(ROOT / "schedules" / "jilin-2023.yaml"),
        "--contacts",
        str(ROOT / "contacts"),
        "--state-dir",
        str(tmp_path / "state"),
    ]

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        return CliRunner().invoke(cli_app, [*base, *args])

    return invoke


def _db(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(tmp_path / "state" / "service.db")) as conn:
        return conn.execute(sql).fetchall()


def test_service_run_replay_records_mail_and_resend_changes_nothing(
    run_cli: Any, tmp_path: Path, deliver: Deliver, mailbox_env: dict[str, str]
) -> None:
    """`service run --virtual-from --until` with SERVICE_IMAP_* set takes the mail in."""
    deliver(_mail())
    args = ("run", "--virtual-from", "2023-06-02T08:58", "--until", "2023-06-02T09:30")
    first = run_cli(*args, env=mailbox_env)
    assert first.exit_code == 0, first.output
    subs = "SELECT unit_id, obligation, period, source FROM submissions"
    assert _db(tmp_path, subs) == [("baishan", "weekly-progress", "2023-W22", "inbound-mail")]
    msgs = "SELECT idem_key, status, items FROM messages ORDER BY idem_key"
    before = _db(tmp_path, msgs)
    baishan_w22 = [
        key
        for key, _status, items in before
        for item in json.loads(items)
        if (item.get("unit"), item.get("period")) == ("baishan", "2023-W22")
    ]
    assert baishan_w22 == []  # recorded before the cycle planned: never a reminder
    assert any("changchun-liaison" in key for key, _s, _i in before)  # others still reminded
    deliver(_mail())
    again = run_cli(*args[:2], "2023-06-02T09:30", "--until", "2023-06-02T09:31", env=mailbox_env)
    assert again.exit_code == 0, again.output
    assert _db(tmp_path, subs) == [("baishan", "weekly-progress", "2023-W22", "inbound-mail")]
    assert _db(tmp_path, msgs) == before


def test_service_run_refuses_plaintext_imap_to_a_remote_host(
    run_cli: Any, mailbox_env: dict[str, str]
) -> None:
    """The daemon does not start with SERVICE_IMAP_TLS=0 to a non-loopback host."""
    env = {**mailbox_env, "SERVICE_IMAP_HOST": "imap.example.org"}
    result = run_cli(
        "run", "--virtual-from", "2023-06-02T08:58", "--until", "2023-06-02T09:00", env=env
    )
    assert result.exit_code == 1 and "SERVICE_IMAP_TLS" in result.output
    assert "Traceback" not in result.output


def test_doctor_logs_into_the_mailbox(run_cli: Any, mailbox_env: dict[str, str]) -> None:
    """`service doctor --json` reports the mailbox login and folder as a check."""
    result = run_cli("doctor", "--json", env=mailbox_env)
    check = {c["check"]: c for c in json.loads(result.stdout)["checks"]}["mailbox"]
    assert check["ok"] and "INBOX" in check["detail"]


def test_doctor_reports_a_refused_login(run_cli: Any, mailbox_env: dict[str, str]) -> None:
    """A wrong IMAP password fails the mailbox check without printing the password."""
    env = {**mailbox_env, "SERVICE_IMAP_PASSWORD": "wrong-secret-xyz"}
    result = run_cli("doctor", "--json", env=env)
    check = {c["check"]: c for c in json.loads(result.stdout)["checks"]}["mailbox"]
    assert not check["ok"] and "wrong-secret-xyz" not in result.stdout
    assert result.exit_code == 1
